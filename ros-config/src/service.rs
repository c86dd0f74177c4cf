//! Service definitions: the RancherOS compose-v1 subset, parsed from YAML.
//!
//! A service file is a map `name -> definition`, like RancherOS's `services/*.yml`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Errors while reading a service file.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The file could not be read.
    #[error("reading service file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not match the schema.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// A service file: service name -> definition.
pub type ServiceFile = BTreeMap<String, ServiceSpec>;

/// `net`, `pid`, `ipc`, `uts`: either share the host's namespace or not.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    /// Share the host namespace.
    Host,
    /// A private namespace (for `net`: loopback only).
    None,
}

/// `restart:` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Restart whenever it exits.
    Always,
    /// Restart when it exits non-zero.
    OnFailure,
}

/// A command: a shell string (split on whitespace, as compose does without a shell) or an argv list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// `command: sh -c "..."` style string.
    Line(String),
    /// `command: [sh, -c, "..."]`.
    Argv(Vec<String>),
}

impl Command {
    /// The argv this command stands for. Strings are split on whitespace, honouring
    /// single and double quotes, as docker-compose v1 did with `shlex`.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Argv(v) => v.clone(),
            Command::Line(s) => split_words(s),
        }
    }
}

/// Environment: a list of `NAME=value` / bare `NAME`, or a map.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Environment {
    /// `- NAME=value` or `- NAME` (passes the host's value through).
    List(Vec<String>),
    /// `NAME: value`.
    Map(BTreeMap<String, Option<String>>),
}

impl Default for Environment {
    fn default() -> Self {
        Environment::List(Vec::new())
    }
}

impl Environment {
    /// Resolve to `NAME=value` pairs; bare names take their value from `lookup`
    /// and are dropped when it has none.
    pub fn resolve(&self, lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let pairs: Vec<(String, Option<String>)> = match self {
            Environment::List(items) => items
                .iter()
                .map(|item| match item.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (item.clone(), None),
                })
                .collect(),
            Environment::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.or_else(|| lookup(&k)).map(|v| format!("{k}={v}")))
            .collect()
    }
}

/// One service definition (compose v1 subset plus RancherOS labels).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Image reference, e.g. `ros/console:0.1.0`.
    pub image: String,
    /// Arguments (or the whole argv when there is no entrypoint).
    #[serde(default)]
    pub command: Option<Command>,
    /// Overrides the image's entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Command>,
    /// Environment variables.
    #[serde(default)]
    pub environment: Environment,
    /// Labels, including `io.rancher.os.*`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// All capabilities and all devices.
    #[serde(default)]
    pub privileged: bool,
    /// Network namespace.
    #[serde(default)]
    pub net: Option<NamespaceMode>,
    /// PID namespace.
    #[serde(default)]
    pub pid: Option<NamespaceMode>,
    /// IPC namespace.
    #[serde(default)]
    pub ipc: Option<NamespaceMode>,
    /// UTS namespace.
    #[serde(default)]
    pub uts: Option<NamespaceMode>,
    /// Bind mounts `host:container[:ro]`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Device nodes `host[:container[:perms]]`.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Extra capabilities, e.g. `SYS_ADMIN`.
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Capabilities to drop from the default set.
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Mount the root filesystem read-only.
    #[serde(default)]
    pub read_only: bool,
    /// `uid[:gid]` to run as.
    #[serde(default)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Allocate a terminal.
    #[serde(default)]
    pub tty: bool,
}

impl ServiceSpec {
    /// The value of label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Parse a service file's text; `origin` names it in errors.
pub fn parse_service_file(origin: &str, text: &str) -> Result<ServiceFile, ServiceError> {
    serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        ServiceError::Parse {
            path: origin.to_string(),
            line,
            column,
            message: e.to_string(),
        }
    })
}

/// Read and parse a service file from disk.
pub fn load_service_file(path: &Path) -> Result<ServiceFile, ServiceError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServiceError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_service_file(&path.display().to_string(), &text)
}

fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_splits_like_compose() {
        let c = Command::Line(r#"sh -c "echo hi there" 'a b'"#.into());
        assert_eq!(c.argv(), vec!["sh", "-c", "echo hi there", "a b"]);
    }

    #[test]
    fn environment_list_and_passthrough() {
        let env = Environment::List(vec!["A=1".into(), "HOME".into(), "MISSING".into()]);
        let got = env.resolve(|k| (k == "HOME").then(|| "/root".to_string()));
        assert_eq!(got, vec!["A=1", "HOME=/root"]);
    }

    #[test]
    fn unknown_key_is_an_error_with_line() {
        let err = parse_service_file("x.yml", "console:\n  image: a\n  imagee: b\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("x.yml:3:"), "{msg}");
        assert!(msg.contains("imagee"), "{msg}");
    }

    #[test]
    fn shipped_service_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yml") {
                let file = load_service_file(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(!file.is_empty(), "{} defines no service", path.display());
                n += 1;
            }
        }
        assert!(n > 0, "no service files under {}", dir.display());
    }
}
