//! `ros config export`: the config as YAML-ready tree, with private material (SSH host keys,
//! TLS keys, passwords, registry credentials) removed unless asked for. Pure.

use crate::value::Value;

/// Key paths that hold private material; `*` matches any key.
const PRIVATE: &[&[&str]] = &[
    &["rancher", "password"],
    &["rancher", "ssh", "keys"],
    &["rancher", "docker", "server_key"],
    &["rancher", "docker", "ca_key"],
    &["rancher", "system_docker", "server_key"],
    &["rancher", "system_docker", "ca_key"],
    &["rancher", "defaults", "docker", "server_key"],
    &["rancher", "defaults", "docker", "ca_key"],
    &["rancher", "bootstrap_docker", "server_key"],
    &["rancher", "bootstrap_docker", "ca_key"],
    &["rancher", "registry_auths"],
    &["rancher", "network", "wifi_networks"],
];

/// `value` for export: with `private == false` the keys above are removed (and mappings
/// left empty by that removal too), so the result is still a valid cloud-config.
pub fn export(value: &Value, private: bool) -> Value {
    let mut out = value.clone();
    if !private {
        for path in PRIVATE {
            remove(&mut out, path);
        }
    }
    out
}

/// Remove `path`; true when the node it was in is now an empty mapping.
fn remove(node: &mut Value, path: &[&str]) -> bool {
    let (Some((first, rest)), Value::Mapping(map)) = (path.split_first(), &mut *node) else {
        return false;
    };
    if rest.is_empty() {
        if map.shift_remove(*first).is_none() {
            return false;
        }
    } else {
        let keys: Vec<Value> = if *first == "*" {
            map.keys().cloned().collect()
        } else {
            vec![Value::String((*first).to_string())]
        };
        let mut emptied = false;
        for k in keys {
            if let Some(child) = map.get_mut(&k) {
                if remove(child, rest) {
                    map.shift_remove(&k);
                    emptied = true;
                }
            }
        }
        if !emptied {
            return false;
        }
    }
    map.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_document;

    fn y(text: &str) -> Value {
        parse_document(text).unwrap()
    }

    #[test]
    fn export_table() {
        let cases = [
            // (input, private=false output)
            ("hostname: a", "hostname: a"),
            ("rancher: {password: x, console: alpine}", "rancher: {console: alpine}"),
            ("rancher: {ssh: {port: 22, keys: {ssh_host_rsa_key: PEM}}}", "rancher: {ssh: {port: 22}}"),
            ("rancher: {ssh: {keys: {ssh_host_rsa_key: PEM}}}", "{}"),
            ("rancher: {docker: {tls: true, server_cert: C, server_key: K, ca_key: K2, ca_cert: C2}}",
             "rancher: {docker: {tls: true, server_cert: C, ca_cert: C2}}"),
            ("rancher: {system_docker: {ca_key: K}, debug: true}", "rancher: {debug: true}"),
            ("rancher: {registry_auths: {r: {auth: x}}}", "{}"),
            ("ssh_authorized_keys: [ssh-rsa AAA]", "ssh_authorized_keys: [ssh-rsa AAA]"),
        ];
        for (input, want) in cases {
            let v = y(input);
            assert_eq!(export(&v, false), y(want), "{input}");
            assert_eq!(export(&v, true), v, "{input} (private)");
        }
    }
}
