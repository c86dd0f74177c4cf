//! Diagnostics: one problem found in a config file, with where it is and how bad it is.
//! Owns the shape and display of a problem; finding problems is `resolve`'s job.

use std::fmt;

use crate::keypath::KeyPath;

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Something was ignored that the user probably meant (the rest still applies).
    Warning,
    /// The value is invalid. In boot mode the offending key (or file) was dropped.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One problem in one config source.
///
/// Displayed as `file:line:column: key.path: message`; the position is left out when
/// unknown (`line == 0`, e.g. for a value built in memory) and the key path when the problem
/// is about the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file (or `/proc/cmdline`, or the name given for in-memory text).
    pub file: String,
    /// 1-based line; 0 when unknown.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// Which key the problem is about; empty for the whole file.
    pub key_path: KeyPath,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, for a person.
    pub message: String,
}

impl Diagnostic {
    /// True for [`Severity::Error`].
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key_path.is_empty() {
            write!(f, ": {}", self.key_path)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_formats() {
        let mut d = Diagnostic {
            file: "/var/lib/rancher/conf/cloud-config.yml".into(),
            line: 3,
            column: 5,
            key_path: KeyPath::parse("rancher.ssh.port").unwrap(),
            severity: Severity::Error,
            message: "invalid type".into(),
        };
        assert_eq!(
            d.to_string(),
            "/var/lib/rancher/conf/cloud-config.yml:3:5: rancher.ssh.port: invalid type"
        );
        d.line = 0;
        d.key_path = KeyPath::root();
        assert_eq!(
            d.to_string(),
            "/var/lib/rancher/conf/cloud-config.yml: invalid type"
        );
    }
}
