//! Service definitions: the RancherOS compose-v1 subset, parsed from YAML.
//!
//! A service file is a map `name -> definition`, like RancherOS's `services/*.yml`; the same
//! definitions appear under `rancher.services` in cloud-config. Owns the shape of a service
//! ([`ServiceSpec`]), which compose keys are implemented, which are accepted with a warning
//! because they only tune Docker itself ([`DOCKER_ONLY_KEYS`]), the RancherOS labels, and
//! the checks a single definition must pass. Must not know how services are ordered (that is
//! `graph`) or run (PID 1 and ros-runtime).
//!
//! [`ServiceSpec`] has a hand-written `Deserialize` instead of `deny_unknown_fields`: a key
//! is either implemented, Docker-only (recorded in [`ServiceSpec::docker_only_keys`] and
//! warned about), known-but-unsupported (an error with advice), or unknown (an error with a
//! suggestion). The errors keep serde's wording (`unknown field ...`, `missing field ...`)
//! so that the cloud-config resolver classifies them as it does every other key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::capability::CapEntry;
use crate::diagnostic::{Diagnostic, SerdeProblem, Severity};
use crate::fields::{Device, User, Volume};
use crate::file::MAX_FILE_BYTES;
use crate::keypath::{KeyPath, Segment};
use crate::retry;
use crate::text::Text;
use crate::value::Value;
use crate::yaml::{self, Target};

/// Label: `system` runs the service in the system containerd (otherwise the user engine).
pub const LABEL_SCOPE: &str = "io.rancher.os.scope";
/// Label: comma-separated services (or virtual names such as `network`) to start after.
pub const LABEL_AFTER: &str = "io.rancher.os.after";
/// Label: comma-separated services that must start after this one.
pub const LABEL_BEFORE: &str = "io.rancher.os.before";
/// Label: `"false"` makes a one-shot service (wait for it to exit before going on).
pub const LABEL_DETACH: &str = "io.rancher.os.detach";
/// Label: `"true"` creates the container without starting it.
pub const LABEL_CREATEONLY: &str = "io.rancher.os.createonly";
/// Label: `"true"` reloads the config after the service ran (RancherOS: `network`).
pub const LABEL_RELOADCONFIG: &str = "io.rancher.os.reloadconfig";
/// Label: marks the console service (value: the console's name).
pub const LABEL_CONSOLE: &str = "io.rancher.os.console";

/// The compose keys rOS implements (the fields of [`ServiceSpec`]).
pub const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "labels",
    "privileged",
    "net",
    "pid",
    "ipc",
    "uts",
    "volumes",
    "volumes_from",
    "devices",
    "cap_add",
    "cap_drop",
    "restart",
    "read_only",
    "user",
    "working_dir",
    "tty",
    "stdin_open",
    "healthcheck",
];

/// Compose keys that only tune Docker's own behaviour, with what rOS does instead. They are
/// accepted (so RancherOS service files load unchanged) and reported as warnings.
pub const DOCKER_ONLY_KEYS: &[(&str, &str)] = &[
    ("log_driver", "output goes to /var/log/ros/NAME.log"),
    ("log_opt", "rOS rotates service logs itself"),
    ("logging", "output goes to /var/log/ros/NAME.log"),
    ("cpu_shares", "resource limits are not applied"),
    ("cpu_quota", "resource limits are not applied"),
    ("cpuset", "resource limits are not applied"),
    ("mem_limit", "resource limits are not applied"),
    ("memswap_limit", "resource limits are not applied"),
    ("mem_reservation", "resource limits are not applied"),
    ("shm_size", "resource limits are not applied"),
    ("oom_score_adj", "resource limits are not applied"),
    ("cgroup_parent", "rOS places service cgroups itself"),
    ("ulimits", "the service keeps PID 1's limits"),
    ("dns", "bind-mount the host's /etc/resolv.conf instead"),
    (
        "dns_search",
        "bind-mount the host's /etc/resolv.conf instead",
    ),
    ("dns_opt", "bind-mount the host's /etc/resolv.conf instead"),
    ("extra_hosts", "bind-mount the host's /etc/hosts instead"),
    ("hostname", "use `uts: host` for the host's name"),
    ("domainname", "use `uts: host` for the host's name"),
    ("container_name", "the container is named after the service"),
    ("mac_address", "use `net: host`"),
    ("security_opt", "no LSM profile is applied"),
    ("expose", "documentation only"),
    ("stop_grace_period", "rOS waits `rancher.shutdown_timeout`"),
];

/// Compose keys with a meaning rOS does not provide: errors, with advice.
const UNSUPPORTED_KEYS: &[(&str, &str)] = &[
    (
        "depends_on",
        "order services with the label `io.rancher.os.after: NAME`",
    ),
    (
        "links",
        "system services share the host network: use `net: host`",
    ),
    (
        "external_links",
        "system services share the host network: use `net: host`",
    ),
    ("ports", "ports are not published: use `net: host`"),
    ("network_mode", "use `net: host` or `net: none`"),
    ("networks", "use `net: host` or `net: none`"),
    ("env_file", "list the variables under `environment`"),
    ("build", "rOS runs prebuilt images only"),
    ("extends", "write the whole definition"),
    (
        "stop_signal",
        "services are stopped with SIGTERM, then SIGKILL",
    ),
    (
        "volume_driver",
        "only bind mounts (`/host:/container`) are supported",
    ),
];

/// Most problems reported for one service before the rest of it is skipped.
const MAX_PROBLEMS_PER_SERVICE: usize = 50;

/// Errors while reading a service file.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The file could not be read.
    #[error("reading service file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is too large, not YAML, or a definition is invalid. Every error is listed,
    /// one per line, each as `file:line:column: key: message`.
    #[error("{}", list(.problems))]
    Invalid {
        /// The file (or the name given for in-memory text).
        path: String,
        /// Every error found (never empty).
        problems: Vec<Diagnostic>,
    },
}

fn list(problems: &[Diagnostic]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
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
    /// Restart whenever it exits. Compose's `unless-stopped` means the same here: a service
    /// stopped with `ros service stop` is never restarted anyway.
    #[serde(alias = "unless-stopped")]
    Always,
    /// Restart when it exits non-zero.
    OnFailure,
}

/// A command: a shell string (split on whitespace, as compose does without a shell) or an argv list.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command line or a list of arguments")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Command, E> {
                Ok(Command::Line(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Command, E> {
                Ok(Command::Line(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Command, E> {
                Ok(Command::Line(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Command, E> {
                Ok(Command::Line(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let mut argv = Vec::new();
                while let Some(Text(arg)) = seq.next_element()? {
                    argv.push(arg);
                }
                Ok(Command::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

/// Environment: a list of `NAME=value` / bare `NAME`, or a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Environment {
    /// `- NAME=value` or `- NAME` (passes the host's value through).
    List(Vec<String>),
    /// `NAME: value`; an empty value passes the host's value through.
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

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Environment;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of NAME=value or a map of names to values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Environment, A::Error> {
                let mut items = Vec::new();
                while let Some(Text(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Environment::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Environment, A::Error> {
                let mut vars = BTreeMap::new();
                while let Some((Text(k), v)) = map.next_entry::<Text, Option<Text>>()? {
                    vars.insert(k, v.map(|t| t.0));
                }
                Ok(Environment::Map(vars))
            }
        }
        d.deserialize_any(V)
    }
}

/// Labels: a map, or a compose list of `key=value` (a bare `key` has an empty value).
/// Values may be written unquoted (`io.rancher.os.detach: false`).
struct Labels(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of labels or a list of key=value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Labels, A::Error> {
                let mut labels = BTreeMap::new();
                while let Some(Text(item)) = seq.next_element()? {
                    let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                    labels.insert(k.to_string(), v.to_string());
                }
                Ok(Labels(labels))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut labels = BTreeMap::new();
                while let Some((Text(k), v)) = map.next_entry::<Text, Option<Text>>()? {
                    labels.insert(k, v.map(|t| t.0).unwrap_or_default());
                }
                Ok(Labels(labels))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `volumes_from` entry: mount every volume of another service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumesFrom {
    /// The service whose volumes are mounted (compose's `container:NAME` means the same).
    pub service: String,
    /// `:ro`: mount them read-only.
    pub read_only: bool,
}

impl VolumesFrom {
    /// Parse `NAME`, `NAME:ro`, `NAME:rw`, `container:NAME[:ro|:rw]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text.strip_prefix("container:").unwrap_or(text);
        let (service, read_only) = match rest.rsplit_once(':') {
            Some((s, "ro")) => (s, true),
            Some((s, "rw")) => (s, false),
            Some(_) => {
                return Err(format!(
                    "`{text}`: expected SERVICE, SERVICE:ro or SERVICE:rw"
                ))
            }
            None => (rest, false),
        };
        if let Err(why) = check_service_name(service) {
            return Err(format!("`{text}`: {why}"));
        }
        Ok(VolumesFrom {
            service: service.to_string(),
            read_only,
        })
    }
}

impl<'de> Deserialize<'de> for VolumesFrom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(text) = Text::deserialize(d)?;
        VolumesFrom::parse(&text).map_err(de::Error::custom)
    }
}

/// What a health check runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthTest {
    /// `test: [NONE]` or `disable: true`: no check (the image's own is not used either).
    Disabled,
    /// `test: [CMD, prog, arg...]`: run directly.
    Exec(Vec<String>),
    /// `test: "line"` or `test: [CMD-SHELL, "line"]`: run by `sh -c`.
    Shell(String),
}

impl HealthTest {
    /// The argv to run in the container, `None` when disabled.
    pub fn argv(&self) -> Option<Vec<String>> {
        match self {
            HealthTest::Disabled => None,
            HealthTest::Exec(v) => Some(v.clone()),
            HealthTest::Shell(line) => Some(vec!["sh".into(), "-c".into(), line.clone()]),
        }
    }
}

impl<'de> Deserialize<'de> for HealthTest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HealthTest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a shell line or a list [CMD, ...], [CMD-SHELL, line] or [NONE]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HealthTest, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("empty health check command"));
                }
                Ok(HealthTest::Shell(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HealthTest, A::Error> {
                let mut items = Vec::new();
                while let Some(Text(item)) = seq.next_element()? {
                    items.push(item);
                }
                let (first, rest) = items
                    .split_first()
                    .ok_or_else(|| de::Error::custom("empty health check command"))?;
                match (first.as_str(), rest) {
                    ("NONE", []) => Ok(HealthTest::Disabled),
                    ("CMD", [_, ..]) => Ok(HealthTest::Exec(rest.to_vec())),
                    ("CMD-SHELL", [line]) => Ok(HealthTest::Shell(line.clone())),
                    ("NONE" | "CMD" | "CMD-SHELL", _) => Err(de::Error::custom(format!(
                        "`{first}` takes {}",
                        match first.as_str() {
                            "NONE" => "nothing after it",
                            "CMD" => "a program and its arguments",
                            _ => "exactly one shell line",
                        }
                    ))),
                    _ => Err(de::Error::custom(format!(
                        "a health check list starts with CMD, CMD-SHELL or NONE, not `{first}`"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `healthcheck:`: how PID 1 decides that a started service is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// What to run.
    pub test: HealthTest,
    /// Time between checks (default 30 s, at most [`Healthcheck::MAX_INTERVAL`]).
    pub interval: Duration,
    /// How long one check may take (default 30 s, at most [`Healthcheck::MAX_TIMEOUT`]).
    pub timeout: Duration,
    /// Failures in a row before the service counts as unhealthy (default 3).
    pub retries: u32,
    /// Failures during this time after start do not count (default 0, at most
    /// [`Healthcheck::MAX_START_PERIOD`]).
    pub start_period: Duration,
}

impl Healthcheck {
    /// Default `interval`, as in Docker.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    /// Default `timeout`, as in Docker.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `retries`, as in Docker.
    pub const DEFAULT_RETRIES: u32 = 3;
    /// Longest `interval`: a day. Compose sets no limit, but PID 1 adds these durations to
    /// the clock, which a value such as `2562047788015215h` would overflow; a check that
    /// runs less than daily is no readiness check.
    pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);
    /// Longest `timeout`: an hour, as for every other timeout (a check that has not
    /// answered within an hour is hung).
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
    /// Longest `start_period`: a day, for services that take long to come up.
    pub const MAX_START_PERIOD: Duration = Duration::from_secs(86_400);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthcheck {
    #[serde(default)]
    test: Option<HealthTest>,
    #[serde(default)]
    interval: Option<ComposeDuration<{ Healthcheck::MAX_INTERVAL.as_secs() }>>,
    #[serde(default)]
    timeout: Option<ComposeDuration<{ Healthcheck::MAX_TIMEOUT.as_secs() }>>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    start_period: Option<ComposeDuration<{ Healthcheck::MAX_START_PERIOD.as_secs() }>>,
    #[serde(default)]
    disable: bool,
}

impl<'de> Deserialize<'de> for Healthcheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawHealthcheck::deserialize(d)?;
        let test = match (raw.disable, raw.test) {
            (true, None | Some(HealthTest::Disabled)) => HealthTest::Disabled,
            (true, Some(_)) => {
                return Err(de::Error::custom(
                    "`disable: true` and a `test` contradict each other",
                ))
            }
            (false, Some(t)) => t,
            (false, None) => return Err(de::Error::missing_field("test")),
        };
        Ok(Healthcheck {
            test,
            interval: raw.interval.map_or(Self::DEFAULT_INTERVAL, |d| d.0),
            timeout: raw.timeout.map_or(Self::DEFAULT_TIMEOUT, |d| d.0),
            retries: raw.retries.unwrap_or(Self::DEFAULT_RETRIES),
            start_period: raw.start_period.map_or(Duration::ZERO, |d| d.0),
        })
    }
}

/// A compose duration: `30s`, `1m30s`, `1.5s`, `500ms`, `2h`; at most `MAX_SECS` seconds.
struct ComposeDuration<const MAX_SECS: u64>(Duration);

impl<'de, const MAX_SECS: u64> Deserialize<'de> for ComposeDuration<MAX_SECS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(text) = Text::deserialize(d)?;
        let duration = parse_duration(&text).ok_or_else(|| {
            de::Error::custom(format!(
                "`{text}` is not a duration such as `30s`, `1m30s` or `500ms`"
            ))
        })?;
        if duration > Duration::from_secs(MAX_SECS) {
            return Err(de::Error::custom(format!(
                "`{text}` is longer than the most allowed, {MAX_SECS}s"
            )));
        }
        Ok(ComposeDuration(duration))
    }
}

/// Parse a compose (Go) duration: one or more `NUMBER UNIT` with units `h`, `m`, `s`, `ms`,
/// `us`, `ns`. A bare number is refused: compose requires the unit.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total = total.checked_add(Duration::try_from_secs_f64(value * scale).ok()?)?;
        rest = tail;
    }
    Some(total)
}

/// Whether a service runs in the system containerd or the user engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `io.rancher.os.scope: system`.
    System,
    /// Anything else (RancherOS's default: the user Docker).
    User,
}

/// One service definition (compose v1 subset plus RancherOS labels).
///
/// Deserializing rejects unknown keys (naming them, with a suggestion) and accepts the keys
/// of [`DOCKER_ONLY_KEYS`], recording them in `docker_only_keys`. An empty value (`tty:`)
/// means unset, as in RancherOS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceSpec {
    /// Image reference, e.g. `ros/console:0.1.0`.
    pub image: String,
    /// Arguments (or the whole argv when there is no entrypoint).
    pub command: Option<Command>,
    /// Overrides the image's entrypoint.
    pub entrypoint: Option<Command>,
    /// Environment variables.
    pub environment: Environment,
    /// Labels, including `io.rancher.os.*` (see the `LABEL_*` constants).
    pub labels: BTreeMap<String, String>,
    /// All capabilities and all devices.
    pub privileged: bool,
    /// Network namespace.
    pub net: Option<NamespaceMode>,
    /// PID namespace.
    pub pid: Option<NamespaceMode>,
    /// IPC namespace.
    pub ipc: Option<NamespaceMode>,
    /// UTS namespace.
    pub uts: Option<NamespaceMode>,
    /// Bind mounts `host:container[:ro]`.
    pub volumes: Vec<Volume>,
    /// Mount every volume of these services too (they are also started first).
    pub volumes_from: Vec<VolumesFrom>,
    /// Device nodes `host[:container[:perms]]`.
    pub devices: Vec<Device>,
    /// Extra capabilities, e.g. `SYS_ADMIN` (or `ALL`).
    pub cap_add: Vec<CapEntry>,
    /// Capabilities to drop from the default set (or `ALL`).
    pub cap_drop: Vec<CapEntry>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Mount the root filesystem read-only.
    pub read_only: bool,
    /// `uid[:gid]` to run as (the image's `User` when unset).
    pub user: Option<User>,
    /// Working directory inside the container.
    pub working_dir: Option<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open (compose `stdin_open`, `docker run -i`).
    pub stdin_open: bool,
    /// Readiness check run by PID 1 after start.
    pub healthcheck: Option<Healthcheck>,
    /// Keys of [`DOCKER_ONLY_KEYS`] that were given: accepted, not used, warned about.
    pub docker_only_keys: Vec<String>,
}

/// One problem in one service definition, found by [`ServiceSpec::problems`]. The path is
/// relative to the service (`volumes[1]`, `labels."io.rancher.os.after"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProblem {
    /// Where, relative to the service's definition.
    pub path: KeyPath,
    /// Error (the service cannot run as written) or warning.
    pub severity: Severity,
    /// What is wrong, for a person.
    pub message: String,
    /// The problem is about the key itself (point at the key, not at its value).
    pub on_key: bool,
}

impl ServiceSpec {
    /// The value of label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// The names in `io.rancher.os.after` (comma-separated, blanks ignored).
    pub fn after(&self) -> Vec<&str> {
        comma_list(self.label(LABEL_AFTER))
    }

    /// The names in `io.rancher.os.before` (comma-separated, blanks ignored).
    pub fn before(&self) -> Vec<&str> {
        comma_list(self.label(LABEL_BEFORE))
    }

    /// `io.rancher.os.detach: "false"`: a one-shot service, waited for before going on.
    pub fn is_oneshot(&self) -> bool {
        self.label(LABEL_DETACH)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
    }

    /// `io.rancher.os.createonly: "true"`: create the container, do not start it.
    pub fn is_createonly(&self) -> bool {
        self.label(LABEL_CREATEONLY)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// `io.rancher.os.reloadconfig: "true"`: reload the config after it ran.
    pub fn is_reloadconfig(&self) -> bool {
        self.label(LABEL_RELOADCONFIG)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// `io.rancher.os.scope`: [`Scope::System`] only when it says `system`.
    pub fn scope(&self) -> Scope {
        match self.label(LABEL_SCOPE) {
            Some(v) if v.trim().eq_ignore_ascii_case("system") => Scope::System,
            _ => Scope::User,
        }
    }

    /// Every problem the types cannot express: empty image, malformed volumes and devices,
    /// label values that would be silently misread, Docker-only keys (warnings). Names of
    /// other services (after/before/volumes_from) are checked by `graph`, which sees them all.
    pub fn problems(&self) -> Vec<ServiceProblem> {
        let mut out = Vec::new();
        let mut push = |path: KeyPath, severity, message: String, on_key| {
            out.push(ServiceProblem {
                path,
                severity,
                message,
                on_key,
            })
        };
        let root = KeyPath::root();
        if self.image.trim().is_empty() {
            push(
                root.key("image"),
                Severity::Error,
                "empty image".into(),
                false,
            );
        }
        for key in &self.docker_only_keys {
            let why = DOCKER_ONLY_KEYS
                .iter()
                .find(|(k, _)| k == key)
                .map_or("", |(_, why)| why);
            push(
                root.key(key.as_str()),
                Severity::Warning,
                format!("`{key}` only tunes Docker and is not used by rOS ({why}); ignored"),
                true,
            );
        }
        let labels = root.key("labels");
        for key in [LABEL_AFTER, LABEL_BEFORE] {
            for name in comma_list(self.label(key)) {
                if let Err(why) = check_service_name(name) {
                    push(
                        labels.key(key),
                        Severity::Error,
                        format!("`{name}`: {why}"),
                        false,
                    );
                }
            }
        }
        for key in [LABEL_DETACH, LABEL_CREATEONLY, LABEL_RELOADCONFIG] {
            if let Some(v) = self.label(key) {
                let v = v.trim();
                if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                    push(
                        labels.key(key),
                        Severity::Error,
                        format!("`{v}` is neither \"true\" nor \"false\""),
                        false,
                    );
                }
            }
        }
        if let Some(v) = self.label(LABEL_SCOPE) {
            let v = v.trim();
            if !v.eq_ignore_ascii_case("system") && !v.eq_ignore_ascii_case("user") {
                push(
                    labels.key(LABEL_SCOPE),
                    Severity::Error,
                    format!("`{v}` is neither `system` nor `user`"),
                    false,
                );
            }
        }
        if self.is_oneshot() && self.restart == RestartPolicy::Always {
            push(
                root.key("restart"),
                Severity::Warning,
                "a one-shot service (`io.rancher.os.detach: \"false\"`) with `restart: always` \
                 never finishes, so whatever starts after it waits forever"
                    .into(),
                false,
            );
        }
        out
    }
}

fn comma_list(value: Option<&str>) -> Vec<&str> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A service name: letters, digits, `-`, `_`, `.` (what containerd accepts as an id).
pub fn check_service_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 76
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err("a service name has 1 to 76 letters, digits, `-`, `_` and `.`".into())
    }
}

/// A key of a service definition, as the deserializer sorts it.
enum Key {
    Field(&'static str),
    DockerOnly(&'static str),
}

/// Reads one key of a service definition and fails on a key rOS does not accept, so that
/// the error carries the key's path (as `deny_unknown_fields` does).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a service key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        if let Some(k) = SERVICE_KEYS.iter().find(|k| **k == v) {
            return Ok(Key::Field(k));
        }
        if let Some((k, _)) = DOCKER_ONLY_KEYS.iter().find(|(k, _)| *k == v) {
            return Ok(Key::DockerOnly(k));
        }
        if let Some((_, advice)) = UNSUPPORTED_KEYS.iter().find(|(k, _)| *k == v) {
            return Err(E::custom(format!(
                "{UNSUPPORTED_PREFIX}`{v}` is not supported by rOS: {advice}"
            )));
        }
        Err(E::unknown_field(v, SERVICE_KEYS))
    }
}

const UNSUPPORTED_PREFIX: &str = "compose key ";

struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = ServiceSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a service definition (a map with at least `image`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServiceSpec, A::Error> {
        // Empty values mean unset: every field is read as an Option.
        fn opt<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
            map: &mut A,
        ) -> Result<Option<T>, A::Error> {
            map.next_value::<Option<T>>()
        }
        let mut s = ServiceSpec::default();
        let mut image: Option<String> = None;
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let k = match key {
                Key::DockerOnly(k) => {
                    map.next_value::<IgnoredAny>()?;
                    if !s.docker_only_keys.iter().any(|d| d == k) {
                        s.docker_only_keys.push(k.to_string());
                    }
                    continue;
                }
                Key::Field(k) => k,
            };
            if seen.contains(&k) {
                return Err(de::Error::duplicate_field(k));
            }
            seen.push(k);
            match k {
                "image" => image = opt::<A, Text>(&mut map)?.map(|t| t.0),
                "command" => s.command = opt(&mut map)?,
                "entrypoint" => s.entrypoint = opt(&mut map)?,
                "environment" => s.environment = opt(&mut map)?.unwrap_or_default(),
                "labels" => s.labels = opt::<A, Labels>(&mut map)?.map(|l| l.0).unwrap_or_default(),
                "privileged" => s.privileged = opt(&mut map)?.unwrap_or_default(),
                "net" => s.net = opt(&mut map)?,
                "pid" => s.pid = opt(&mut map)?,
                "ipc" => s.ipc = opt(&mut map)?,
                "uts" => s.uts = opt(&mut map)?,
                "volumes" => s.volumes = opt(&mut map)?.unwrap_or_default(),
                "volumes_from" => s.volumes_from = opt(&mut map)?.unwrap_or_default(),
                "devices" => s.devices = opt(&mut map)?.unwrap_or_default(),
                "cap_add" => s.cap_add = opt(&mut map)?.unwrap_or_default(),
                "cap_drop" => s.cap_drop = opt(&mut map)?.unwrap_or_default(),
                "restart" => s.restart = opt(&mut map)?.unwrap_or_default(),
                "read_only" => s.read_only = opt(&mut map)?.unwrap_or_default(),
                "user" => s.user = opt(&mut map)?,
                "working_dir" => s.working_dir = opt::<A, Text>(&mut map)?.map(|t| t.0),
                "tty" => s.tty = opt(&mut map)?.unwrap_or_default(),
                "stdin_open" => s.stdin_open = opt(&mut map)?.unwrap_or_default(),
                "healthcheck" => s.healthcheck = opt(&mut map)?,
                other => return Err(de::Error::unknown_field(other, SERVICE_KEYS)),
            }
        }
        s.image = image.ok_or_else(|| de::Error::missing_field("image"))?;
        Ok(s)
    }
}

impl<'de> Deserialize<'de> for ServiceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SpecVisitor)
    }
}

/// The service files in `dir`: `*.yml` and `*.yaml`, hidden files skipped, sorted by name
/// (the order PID 1 loads them and `ros service list` shows them). A missing dir has none.
pub fn service_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.extension().is_some_and(|e| e == "yml" || e == "yaml")
            && !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    });
    files.sort();
    files
}

/// Parse a service file's text; `origin` names it in errors. Fails when the file has any
/// error (all are listed); warnings are logged. See [`check_service_file`] for the
/// diagnostics themselves.
pub fn parse_service_file(origin: &str, text: &str) -> Result<ServiceFile, ServiceError> {
    let (file, diagnostics) = check_service_file(origin, text);
    let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) =
        diagnostics.into_iter().partition(Diagnostic::is_error);
    if !errors.is_empty() {
        return Err(ServiceError::Invalid {
            path: origin.to_string(),
            problems: errors,
        });
    }
    for w in warnings {
        log::warn!("{w}");
    }
    Ok(file)
}

/// Read and parse a service file from disk (see [`parse_service_file`]).
pub fn load_service_file(path: &Path) -> Result<ServiceFile, ServiceError> {
    let text = read_limited(path).map_err(|source| ServiceError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_service_file(&path.display().to_string(), &text)
}

fn read_limited(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = crate::file::open_config_file(path)?;
    let mut text = String::new();
    let limit = u64::try_from(MAX_FILE_BYTES).unwrap_or(u64::MAX) + 1;
    file.take(limit).read_to_string(&mut text)?;
    Ok(text)
}

/// Read a service file and report every problem in it (see [`check_service_file`]); a file
/// that cannot be read is one error diagnostic.
pub fn check_service_path(path: &Path) -> (ServiceFile, Vec<Diagnostic>) {
    match read_limited(path) {
        Ok(text) => check_service_file(&path.display().to_string(), &text),
        Err(e) => (
            ServiceFile::new(),
            vec![Diagnostic {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                key_path: KeyPath::root(),
                severity: Severity::Error,
                message: format!("reading service file: {e}"),
            }],
        ),
    }
}

/// Parse a service file's text and report every problem at once, each with its line,
/// column and key path (`origin:3:5: ntp.volumes[0]: ...`), errors and warnings in document
/// order. The file returned holds the services without errors: one bad definition does not
/// hide the others (PID 1 decides whether to run a partial file; [`parse_service_file`]
/// refuses it).
pub fn check_service_file(origin: &str, text: &str) -> (ServiceFile, Vec<Diagnostic>) {
    let mut report = Report {
        origin,
        text: text.strip_prefix('\u{feff}').unwrap_or(text),
        diagnostics: Vec::new(),
    };
    let file = report.file();
    report
        .diagnostics
        .sort_by_key(|d| (d.line == 0, d.line, d.column));
    (file, report.diagnostics)
}

struct Report<'a> {
    origin: &'a str,
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl Report<'_> {
    fn push(&mut self, path: KeyPath, severity: Severity, message: String, target: Target) {
        let (line, column) = if path.is_empty() && target == Target::Value && self.text.is_empty() {
            (0, 0)
        } else {
            yaml::locate(self.text, &path, target).unwrap_or((0, 0))
        };
        self.diagnostics.push(Diagnostic {
            file: self.origin.to_string(),
            line,
            column,
            key_path: path,
            severity,
            message,
        });
    }

    fn file(&mut self) -> ServiceFile {
        let mut file = ServiceFile::new();
        if self.text.len() > MAX_FILE_BYTES {
            self.push(
                KeyPath::root(),
                Severity::Error,
                format!("larger than {} KiB; file refused", MAX_FILE_BYTES >> 10),
                Target::Value,
            );
            return file;
        }
        let value = match yaml::parse_document(self.text) {
            Ok(v) => v,
            Err(e) => {
                self.diagnostics.push(Diagnostic {
                    file: self.origin.to_string(),
                    line: e.line,
                    column: e.column,
                    key_path: KeyPath::root(),
                    severity: Severity::Error,
                    message: e.message,
                });
                return file;
            }
        };
        let map = match value {
            Value::Mapping(m) => m,
            Value::Null => {
                self.push(
                    KeyPath::root(),
                    Severity::Warning,
                    "defines no service".into(),
                    Target::Value,
                );
                return file;
            }
            other => {
                self.push(
                    KeyPath::root(),
                    Severity::Error,
                    format!(
                        "a service file must be a map of service names to definitions, found a {}",
                        other.kind()
                    ),
                    Target::Value,
                );
                return file;
            }
        };
        for (k, v) in map {
            let Some(name) = k.key_text() else {
                self.push(
                    KeyPath::root(),
                    Severity::Error,
                    format!("a service name must be a string, found a {}", k.kind()),
                    Target::Value,
                );
                continue;
            };
            let at = KeyPath::root().key(name.as_str());
            let name_ok = match check_service_name(&name) {
                Ok(()) => true,
                Err(why) => {
                    self.push(at.clone(), Severity::Error, why, Target::Key);
                    false
                }
            };
            if let Some(spec) = self.service(&at, v) {
                if name_ok {
                    file.insert(name, spec);
                }
            }
        }
        file
    }

    /// Type one definition on the drop-and-retry engine (`retry`), reporting each
    /// bad key or list entry and retrying without it, so that every problem is found in
    /// one pass. `None` when it had any error.
    fn service(&mut self, at: &KeyPath, value: Value) -> Option<ServiceSpec> {
        let mut attempt = Definition {
            report: self,
            at,
            value,
            removed: BTreeMap::new(),
            failed: false,
        };
        let typed = retry::type_dropping::<ServiceSpec>(&mut attempt, MAX_PROBLEMS_PER_SERVICE);
        let mut ok = !attempt.failed;
        match typed {
            Ok(spec) => {
                for p in spec.problems() {
                    ok &= p.severity != Severity::Error;
                    let target = if p.on_key { Target::Key } else { Target::Value };
                    self.push(join(at, &p.path), p.severity, p.message, target);
                }
                ok.then_some(spec)
            }
            Err(retry::GaveUp::NothingToDrop) => None,
            Err(retry::GaveUp::TooMany) => {
                self.push(
                    at.clone(),
                    Severity::Error,
                    format!(
                        "{MAX_PROBLEMS_PER_SERVICE} problems; ignoring the rest of this service"
                    ),
                    Target::Key,
                );
                None
            }
        }
    }
}

/// One service definition on the drop-and-retry engine: a bad entry of a list of scalars
/// (`volumes[1]`) is dropped alone and reported at its index in the file; any other
/// problem drops its top-level key.
struct Definition<'r, 'a> {
    report: &'r mut Report<'a>,
    at: &'r KeyPath,
    value: Value,
    /// The original indices of the list entries removed so far, by key.
    removed: BTreeMap<String, Vec<usize>>,
    failed: bool,
}

impl retry::Attempts for Definition<'_, '_> {
    fn tree(&mut self) -> Value {
        self.value.clone()
    }

    fn drop_failed(&mut self, e: crate::yaml::TypedError) -> bool {
        self.failed = true;
        let (message, target) = describe(&e.message);
        if let Some((key, i)) = remove_entry(&mut self.value, &e.path) {
            let gone = self.removed.entry(key.clone()).or_default();
            let original = gone.iter().fold(i, |n, r| n + usize::from(*r <= n));
            gone.push(original);
            gone.sort_unstable();
            let path = KeyPath::root().key(key.as_str()).index(original);
            self.report
                .push(join(self.at, &path), Severity::Error, message, target);
            return true;
        }
        self.report
            .push(join(self.at, &e.path), Severity::Error, message, target);
        remove_field(&mut self.value, &e.path)
    }
}

fn join(base: &KeyPath, rel: &KeyPath) -> KeyPath {
    rel.segments()
        .iter()
        .fold(base.clone(), |p, seg| match seg {
            Segment::Key(k) => p.key(k.as_str()),
            Segment::Index(i) => p.index(*i),
        })
}

/// Drop the list entry an error was about when it is a scalar of a top-level key's list
/// (`volumes[1]`, `cap_add[0]`): its key and its index now.
fn remove_entry(value: &mut Value, path: &KeyPath) -> Option<(String, usize)> {
    let [Segment::Key(key), Segment::Index(i)] = path.segments() else {
        return None;
    };
    let Value::Mapping(m) = value else {
        return None;
    };
    let Some(Value::Sequence(list)) = m.get_mut(key.as_str()) else {
        return None;
    };
    if list
        .get(*i)
        .is_none_or(|v| matches!(v, Value::Mapping(_) | Value::Sequence(_)))
    {
        return None;
    }
    list.remove(*i);
    Some((key.clone(), *i))
}

/// Drop the top-level key an error was about, so the next attempt finds the next problem.
/// Only the first problem inside one key is reported: dropping a nested node instead could
/// cause a second, misleading one (a `healthcheck` without its bad `test` lacks a `test`).
/// False when the whole definition is at fault.
fn remove_field(value: &mut Value, path: &KeyPath) -> bool {
    let (Some(Segment::Key(key)), Value::Mapping(m)) = (path.segments().first(), value) else {
        return false;
    };
    m.shift_remove(key.as_str()).is_some()
}

/// A person's message for a deserialization error, and where it points.
fn describe(message: &str) -> (String, Target) {
    let problem = SerdeProblem::read(message);
    let target = match &problem {
        SerdeProblem::UnknownKey { .. } => Target::Key,
        // The key is what is unsupported (KeySeed's own error).
        SerdeProblem::Other(m) if m.starts_with(UNSUPPORTED_PREFIX) => Target::Key,
        SerdeProblem::Other(_) => Target::Value,
    };
    (problem.message(), target)
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

    fn shown(text: &str) -> Vec<String> {
        check_service_file("s.yml", text)
            .1
            .iter()
            .map(|d| format!("{}: {d}", d.severity))
            .collect()
    }

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
        assert_eq!(
            msg,
            "x.yml:3:3: console.imagee: unknown key `imagee` (did you mean `image`?)"
        );
    }

    #[test]
    fn an_unknown_capability_is_an_error_of_the_file_at_its_line() {
        let text =
            "svc:\n  image: a\n  cap_add: [NOPE, NET_ADMIN, BOGUS]\n  cap_drop:\n    - sys_admn\n";
        let msg = parse_service_file("x.yml", text).unwrap_err().to_string();
        assert!(
            msg.contains("x.yml:3:13: svc.cap_add[0]: unknown capability `NOPE`"),
            "{msg}"
        );
        // Every bad entry of a list, at its index in the file.
        assert!(
            msg.contains("x.yml:3:30: svc.cap_add[2]: unknown capability `BOGUS`"),
            "{msg}"
        );
        assert!(
            msg.contains("x.yml:5:") && msg.contains("(did you mean `SYS_ADMIN`?)"),
            "{msg}"
        );
        let ok = parse_service_file("x.yml", "svc:\n  image: a\n  cap_add: [all]\n").unwrap();
        assert_eq!(ok["svc"].cap_add, vec![CapEntry::All]);
    }

    #[test]
    fn full_definition_parses() {
        let text = r#"
ntp:
  image: ros/ntp:1
  command: ntpd -n -p pool.ntp.org
  entrypoint: [/sbin/tini, --]
  environment:
    PORT: 123
    HOME:
  labels:
    io.rancher.os.scope: system
    io.rancher.os.after: "udev, network"
    io.rancher.os.before: console
    io.rancher.os.detach: false
  privileged: true
  net: host
  pid: host
  ipc: host
  uts: host
  volumes: [/etc/ntp.conf:/etc/ntp.conf:ro]
  volumes_from: [system-volumes, container:user-volumes:ro]
  devices: [/dev/rtc0]
  cap_add: [SYS_TIME]
  cap_drop: [NET_RAW]
  restart: unless-stopped
  read_only: true
  user: "0:0"
  working_dir: /
  tty: true
  stdin_open: true
  healthcheck:
    test: [CMD, ntpq, -p]
    interval: 1m30s
    timeout: 500ms
    retries: 5
    start_period: 10s
"#;
        let file = parse_service_file("ntp.yml", text).unwrap();
        let s = &file["ntp"];
        assert_eq!(
            s.command.as_ref().unwrap().argv(),
            ["ntpd", "-n", "-p", "pool.ntp.org"]
        );
        assert_eq!(
            s.environment,
            Environment::Map(BTreeMap::from([
                ("HOME".into(), None),
                ("PORT".into(), Some("123".into()))
            ]))
        );
        assert_eq!(s.after(), ["udev", "network"]);
        assert_eq!(s.before(), ["console"]);
        assert!(s.is_oneshot());
        assert!(!s.is_createonly());
        assert_eq!(s.scope(), Scope::System);
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(
            s.volumes_from,
            [
                VolumesFrom {
                    service: "system-volumes".into(),
                    read_only: false
                },
                VolumesFrom {
                    service: "user-volumes".into(),
                    read_only: true
                }
            ]
        );
        assert!(s.stdin_open && s.tty && s.read_only && s.privileged);
        let hc = s.healthcheck.as_ref().unwrap();
        assert_eq!(hc.test.argv().unwrap(), ["ntpq", "-p"]);
        assert_eq!(hc.interval, Duration::from_secs(90));
        assert_eq!(hc.timeout, Duration::from_millis(500));
        assert_eq!(hc.retries, 5);
        assert_eq!(hc.start_period, Duration::from_secs(10));
        assert!(s.docker_only_keys.is_empty());
    }

    #[test]
    fn docker_only_keys_warn_and_other_keys_fail_all_at_once() {
        let text = "\
a:
  image: x
  log_driver: json-file
  log_opt: {max-size: 25m}
  mem_limit: 1g
b:
  image: y
  depends_on: [a]
  comand: z
  privileged: maybe
c:
  image: z
";
        let (file, diags) = check_service_file("s.yml", text);
        let shown: Vec<String> = diags
            .iter()
            .map(|d| format!("{}: {d}", d.severity))
            .collect();
        assert_eq!(
            shown,
            [
                "warning: s.yml:3:3: a.log_driver: `log_driver` only tunes Docker and is not used by rOS (output goes to /var/log/ros/NAME.log); ignored",
                "warning: s.yml:4:3: a.log_opt: `log_opt` only tunes Docker and is not used by rOS (rOS rotates service logs itself); ignored",
                "warning: s.yml:5:3: a.mem_limit: `mem_limit` only tunes Docker and is not used by rOS (resource limits are not applied); ignored",
                "error: s.yml:8:3: b.depends_on: compose key `depends_on` is not supported by rOS: order services with the label `io.rancher.os.after: NAME`",
                "error: s.yml:9:3: b.comand: unknown key `comand` (did you mean `command`?)",
                "error: s.yml:10:15: b.privileged: invalid type: string \"maybe\", expected a boolean",
            ]
        );
        assert_eq!(file.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(
            file["a"].docker_only_keys,
            ["log_driver", "log_opt", "mem_limit"]
        );
        // The strict entry point refuses the file and lists every error.
        let err = parse_service_file("s.yml", text).unwrap_err().to_string();
        assert_eq!(err.lines().count(), 3, "{err}");
    }

    #[test]
    fn problems_table() {
        let cases: [(&str, &[&str]); 12] = [
            ("a:\n  image: x\n", &[]),
            ("", &["warning: s.yml: defines no service"]),
            ("a: [1]\n", &["error: s.yml:1:4: a: invalid type: sequence, expected a service definition (a map with at least `image`)"]),
            ("a:\n  tty: true\n", &["error: s.yml:2:3: a: missing field `image`"]),
            ("a:\n  image: \"\"\n", &["error: s.yml:2:10: a.image: empty image"]),
            ("a b:\n  image: x\n", &["error: s.yml:1:1: \"a b\": a service name has 1 to 76 letters, digits, `-`, `_` and `.`"]),
            (
                "a:\n  image: x\n  volumes: [/a:/b, data:/d, /x]\n",
                &[
                    "error: s.yml:3:20: a.volumes[1]: `data:/d`: named volumes are not supported; the host path must be absolute",
                    "error: s.yml:3:29: a.volumes[2]: `/x`: anonymous volumes are not supported; write /host:/container",
                ],
            ),
            (
                "a:\n  image: x\n  labels:\n    io.rancher.os.detach: \"no\"\n    io.rancher.os.after: \"b, c d\"\n",
                &[
                    "error: s.yml:4:27: a.labels.\"io.rancher.os.detach\": `no` is neither \"true\" nor \"false\"",
                    "error: s.yml:5:26: a.labels.\"io.rancher.os.after\": `c d`: a service name has 1 to 76 letters, digits, `-`, `_` and `.`",
                ],
            ),
            ("a:\n  image: x\n  volumes_from: [\"b:rx\"]\n", &["error: s.yml:3:18: a.volumes_from[0]: `b:rx`: expected SERVICE, SERVICE:ro or SERVICE:rw"]),
            ("a:\n  image: x\n  healthcheck:\n    test: [CURL, x]\n", &["error: s.yml:4:11: a.healthcheck.test: a health check list starts with CMD, CMD-SHELL or NONE, not `CURL`"]),
            ("a:\n  image: x\n  healthcheck: {test: x, interval: 30}\n", &["error: s.yml:3:36: a.healthcheck.interval: `30` is not a duration such as `30s`, `1m30s` or `500ms`"]),
            ("a:\n  image: x\n  restart: always\n  labels: {io.rancher.os.detach: \"false\"}\n", &["warning: s.yml:3:12: a.restart: a one-shot service (`io.rancher.os.detach: \"false\"`) with `restart: always` never finishes, so whatever starts after it waits forever"]),
        ];
        for (text, want) in cases {
            assert_eq!(shown(text), want, "{text}");
        }
    }

    #[test]
    fn syntax_errors_have_positions() {
        assert_eq!(
            shown("a:\n  image: [x\n"),
            ["error: s.yml:3:1: did not find expected ',' or ']', while parsing a flow sequence at line 2 column 10"]
        );
    }

    #[test]
    fn labels_helpers_table() {
        let spec = |labels: &[(&str, &str)]| ServiceSpec {
            image: "x".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let s = spec(&[]);
        assert!(s.after().is_empty() && s.before().is_empty());
        assert!(!s.is_oneshot() && !s.is_createonly() && !s.is_reloadconfig());
        assert_eq!(s.scope(), Scope::User);
        let s = spec(&[
            (LABEL_AFTER, " a,,b ,"),
            (LABEL_BEFORE, "c"),
            (LABEL_DETACH, "False"),
            (LABEL_CREATEONLY, "true"),
            (LABEL_SCOPE, "system"),
        ]);
        assert_eq!(s.after(), ["a", "b"]);
        assert_eq!(s.before(), ["c"]);
        assert!(s.is_oneshot() && s.is_createonly());
        assert_eq!(s.scope(), Scope::System);
        assert!(!spec(&[(LABEL_DETACH, "true")]).is_oneshot());
    }

    #[test]
    fn labels_as_list_and_scalars() {
        let file = parse_service_file(
            "s.yml",
            "a:\n  image: x\n  labels: [io.rancher.os.detach=false, bare]\nb:\n  image: 5\n  labels: {io.rancher.os.createonly: true}\n",
        )
        .unwrap();
        assert!(file["a"].is_oneshot());
        assert_eq!(file["a"].label("bare"), Some(""));
        assert!(file["b"].is_createonly());
        assert_eq!(file["b"].image, "5");
    }

    #[test]
    fn healthcheck_forms() {
        let hc = |yaml: &str| -> Result<Healthcheck, String> {
            let text = format!("a:\n  image: x\n  healthcheck: {yaml}\n");
            parse_service_file("s.yml", &text)
                .map(|f| f["a"].healthcheck.clone().unwrap())
                .map_err(|e| e.to_string())
        };
        let shell = hc("{test: \"pgrep ntpd\"}").unwrap();
        assert_eq!(shell.test, HealthTest::Shell("pgrep ntpd".into()));
        assert_eq!(shell.test.argv().unwrap(), ["sh", "-c", "pgrep ntpd"]);
        assert_eq!(shell.interval, Healthcheck::DEFAULT_INTERVAL);
        assert_eq!(shell.retries, Healthcheck::DEFAULT_RETRIES);
        assert_eq!(
            hc("{test: [CMD-SHELL, \"a && b\"]}").unwrap().test,
            HealthTest::Shell("a && b".into())
        );
        assert_eq!(hc("{test: [NONE]}").unwrap().test, HealthTest::Disabled);
        assert_eq!(hc("{disable: true}").unwrap().test, HealthTest::Disabled);
        assert!(hc("{test: [CMD]}").unwrap_err().contains("a program"));
        assert!(hc("{interval: 5s}")
            .unwrap_err()
            .contains("missing field `test`"));
        assert!(hc("{test: x, disable: true}")
            .unwrap_err()
            .contains("contradict"));
        let e = hc("{test: x, interal: 3s}").unwrap_err();
        assert!(
            e.contains("unknown key `interal` (did you mean `interval`?)"),
            "{e}"
        );
    }

    #[test]
    fn healthcheck_durations_are_bounded() {
        let cases: [(&str, &[&str]); 7] = [
            ("interval: 24h", &[]),
            ("timeout: 1h", &[]),
            ("start_period: 1440m", &[]),
            ("interval: 24h1s", &["error: s.yml:3:36: a.healthcheck.interval: `24h1s` is longer than the most allowed, 86400s"]),
            ("timeout: 3601s", &["error: s.yml:3:35: a.healthcheck.timeout: `3601s` is longer than the most allowed, 3600s"]),
            ("start_period: 25h", &["error: s.yml:3:40: a.healthcheck.start_period: `25h` is longer than the most allowed, 86400s"]),
            // Would overflow the clock if PID 1 added it to `Instant::now()`.
            ("timeout: 2562047788015215h", &["error: s.yml:3:35: a.healthcheck.timeout: `2562047788015215h` is longer than the most allowed, 3600s"]),
        ];
        for (field, want) in cases {
            let text = format!("a:\n  image: x\n  healthcheck: {{test: x, {field}}}\n");
            assert_eq!(shown(&text), want, "{field}");
        }
    }

    #[test]
    fn duration_table() {
        let cases = [
            ("30s", Some(Duration::from_secs(30))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("2h", Some(Duration::from_secs(7200))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("10us", Some(Duration::from_micros(10))),
            ("30", None),
            ("", None),
            ("s", None),
            ("1x", None),
            ("-1s", None),
            ("1.s", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), want, "{text}");
        }
    }

    #[test]
    fn volumes_from_table() {
        let ok = [
            ("a", "a", false),
            ("a:ro", "a", true),
            ("a:rw", "a", false),
            ("container:a", "a", false),
            ("container:a:ro", "a", true),
        ];
        for (text, service, ro) in ok {
            let v = VolumesFrom::parse(text).unwrap();
            assert_eq!((v.service.as_str(), v.read_only), (service, ro), "{text}");
        }
        for bad in ["", "a:x", ":ro", "a b"] {
            assert!(VolumesFrom::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_regular_service_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let regular = dir.path().join("ok.yml");
        std::fs::write(&regular, "ok:\n  image: x\n").unwrap();
        let link = dir.path().join("link.yml");
        std::os::unix::fs::symlink(&regular, &link).unwrap();
        let fifo = dir.path().join("fifo.yml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", fifo.display());
        let sub = dir.path().join("dir.yml");
        std::fs::create_dir(&sub).unwrap();

        assert!(load_service_file(&regular).unwrap().contains_key("ok"));
        let cases = [
            (&link, "a symbolic link, which is not followed"),
            (&fifo, "a FIFO"),
            (&sub, "a directory"),
        ];
        for (path, what) in cases {
            // Refused, not opened: a FIFO without a writer would block the open forever.
            let err = load_service_file(path).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "reading service file {}: not a regular file ({what})",
                    path.display()
                )
            );
            let (file, diags) = check_service_path(path);
            assert!(file.is_empty());
            assert_eq!(
                diags.iter().map(ToString::to_string).collect::<Vec<_>>(),
                [format!(
                    "{}: reading service file: not a regular file ({what})",
                    path.display()
                )]
            );
        }
    }

    #[test]
    fn shipped_service_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yml") {
                let (file, diags) = check_service_path(&path);
                assert!(diags.is_empty(), "{}: {diags:#?}", path.display());
                assert!(!file.is_empty(), "{} defines no service", path.display());
                n += 1;
            }
        }
        assert!(n > 0, "no service files under {}", dir.display());
    }

    /// The image tag is the release's version, in every shipped service and in the build
    /// script that tags the images (`IMAGE_TAG` in initramfs/build.sh).
    #[test]
    fn shipped_services_use_the_images_the_build_tags() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let version = env!("CARGO_PKG_VERSION");
        let build = std::fs::read_to_string(root.join("initramfs/build.sh")).unwrap();
        assert!(
            build.lines().any(|l| l == format!("IMAGE_TAG={version}")),
            "initramfs/build.sh: IMAGE_TAG is not {version}"
        );
        for path in service_files(&root.join("services")) {
            let (file, _) = check_service_path(&path);
            for (name, spec) in file {
                let (image, tag) = spec.image.rsplit_once(':').unwrap();
                assert!(
                    image.starts_with("ros/") && tag == version,
                    "{}: service {name}: image {} is not ros/NAME:{version}",
                    path.display(),
                    spec.image
                );
                let dir = root.join("images").join(image.trim_start_matches("ros/"));
                assert!(dir.is_dir(), "{}: no {}", path.display(), dir.display());
            }
        }
    }
}
