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

/// What a deserialization error of a config document says, typed. serde's errors are
/// text; this is the one place that reads them, for both checkers (cloud-config layers in
/// `resolve`, service files in `service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SerdeProblem {
    /// A key the type does not have, with the known key it is closest to.
    UnknownKey {
        /// The key as written.
        key: String,
        /// A known key close enough to be meant.
        suggestion: Option<String>,
    },
    /// Anything else (a wrong type, a bad value, a missing field), in serde's words.
    Other(String),
}

impl SerdeProblem {
    /// Read serde's `message`.
    pub(crate) fn read(message: &str) -> SerdeProblem {
        let Some(rest) = message.strip_prefix("unknown field `") else {
            return SerdeProblem::Other(message.to_string());
        };
        // "unknown field `x`, expected one of `a`, `b`": the names between backquotes.
        let names: Vec<&str> = rest.split('`').step_by(2).collect();
        let key = names.first().copied().unwrap_or_default();
        SerdeProblem::UnknownKey {
            key: key.to_string(),
            suggestion: crate::suggest::suggest(key, names.get(1..).unwrap_or_default())
                .map(String::from),
        }
    }

    /// For a person: `unknown key `x` (did you mean `y`?)`, or serde's words.
    pub(crate) fn message(&self) -> String {
        match self {
            SerdeProblem::UnknownKey { key, suggestion } => match suggestion {
                Some(s) => format!("unknown key `{key}` (did you mean `{s}`?)"),
                None => format!("unknown key `{key}`"),
            },
            SerdeProblem::Other(m) => m.clone(),
        }
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

#[cfg(test)]
mod serde_problem_tests {
    use super::*;

    #[test]
    fn serdes_messages_are_read_once_into_kinds() {
        let p = SerdeProblem::read("unknown field `imagee`, expected one of `image`, `command`");
        assert_eq!(
            p,
            SerdeProblem::UnknownKey {
                key: "imagee".into(),
                suggestion: Some("image".into())
            }
        );
        assert_eq!(p.message(), "unknown key `imagee` (did you mean `image`?)");
        let far = SerdeProblem::read("unknown field `zzz`, expected `image`");
        assert_eq!(far.message(), "unknown key `zzz`");
        let other = SerdeProblem::read("invalid type: string \"x\", expected a boolean");
        assert_eq!(
            other,
            SerdeProblem::Other("invalid type: string \"x\", expected a boolean".into())
        );
    }
}
