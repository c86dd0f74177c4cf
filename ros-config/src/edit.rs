//! Edits of a config tree that keep it valid: an operation over the layers below it
//! (the tree edit itself, and the strict check of the result).

use crate::diagnostic::{Diagnostic, Severity};
use crate::keypath::KeyPath;
use crate::resolve::{validate_value, Mode};
use crate::tree::{insert, parse_value_text, InsertMode, SetError};
use crate::value::Value;

/// Set a dotted key to `value_text`, read as a YAML scalar (`true`, `60`, `8.8.8.8`) or a
/// `[a, b]` list of scalars, creating mappings on the way. The result is validated (strict
/// mode) first: if it has errors that the original did not, `value` is left unchanged and
/// [`SetError::Invalid`] lists them.
pub fn set(value: &mut Value, key: &str, value_text: &str) -> Result<(), SetError> {
    let path = KeyPath::parse(key)?;
    let new = parse_value_text(value_text);
    let mut candidate = value.clone();
    insert(&mut candidate, &path, new, InsertMode::Keep).map_err(|e| e.into_set_error(key))?;
    let introduced = introduced_errors(value, &candidate);
    if !introduced.is_empty() {
        return Err(SetError::Invalid {
            key: key.to_string(),
            diagnostics: introduced,
        });
    }
    *value = candidate;
    Ok(())
}

/// The errors `after` has that `before` did not (same key, same message): what an edit
/// from `before` to `after` would introduce. The one rule for refusing an edit: a file's
/// existing problems do not block an unrelated change.
pub(crate) fn introduced_errors(before: &Value, after: &Value) -> Vec<Diagnostic> {
    let before = errors_of(before);
    errors_of(after)
        .into_iter()
        .filter(|d| {
            !before
                .iter()
                .any(|b| b.key_path == d.key_path && b.message == d.message)
        })
        .collect()
}

fn errors_of(value: &Value) -> Vec<Diagnostic> {
    validate_value("<config>", value, Mode::Strict)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(text: &str) -> Value {
        crate::yaml::parse_document(text).unwrap()
    }

    #[test]
    fn set_table() {
        let cases = [
            // (start, key, value text, expected)
            ("{}", "hostname", "box1", "hostname: box1"),
            (
                "{}",
                "rancher.ssh.port",
                "2222",
                "rancher: {ssh: {port: 2222}}",
            ),
            (
                "{}",
                "rancher.network.interfaces.eth0.dhcp",
                "false",
                "rancher: {network: {interfaces: {eth0: {dhcp: false}}}}",
            ),
            (
                "{}",
                "rancher.network.dns.nameservers",
                "[8.8.8.8, 1.1.1.1]",
                "rancher: {network: {dns: {nameservers: [8.8.8.8, 1.1.1.1]}}}",
            ),
            ("{}", "rancher.modules", "[]", "rancher: {modules: []}"),
            (
                "rancher: {modules: [a, b]}",
                "rancher.modules[1]",
                "c",
                "rancher: {modules: [a, c]}",
            ),
            (
                "rancher: {sysctl: {net.ipv4.ip_forward: 0}}",
                "rancher.sysctl.net.ipv4.ip_forward",
                "1",
                "rancher: {sysctl: {net.ipv4.ip_forward: 1}}",
            ),
            (
                "rancher: {docker: {extra_args: [a]}}",
                "rancher.docker.extra_args",
                "['--x=a,b', -y]",
                "rancher: {docker: {extra_args: ['--x=a,b', -y]}}",
            ),
        ];
        for (start, key, text, want) in cases {
            let mut v = y(start);
            set(&mut v, key, text).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(v, y(want), "{key}={text}");
        }
    }

    #[test]
    fn set_refuses_and_leaves_value_unchanged() {
        let start = y("hostname: a\nrancher: {ssh: {port: 22}}");
        let cases = [
            ("rancher.ssh.port", "twenty-two"),
            ("rancher.sshd.port", "22"),
            ("hostname.x", "1"),
            ("rancher.modules[3]", "x"),
            ("hostname", "not a hostname!"),
            ("a..b", "1"),
        ];
        for (key, text) in cases {
            let mut v = start.clone();
            assert!(set(&mut v, key, text).is_err(), "{key}={text} accepted");
            assert_eq!(v, start, "{key}");
        }
        let mut v = start.clone();
        let err = set(&mut v, "rancher.ssh.port", "twenty-two").unwrap_err();
        match err {
            SetError::Invalid { diagnostics, .. } => {
                assert_eq!(diagnostics.len(), 1);
                assert_eq!(diagnostics[0].key_path.to_string(), "rancher.ssh.port");
            }
            other => panic!("{other}"),
        }
    }
}
