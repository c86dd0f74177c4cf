//! The cloud-config schema: typed values for everything a RancherOS `cloud-config.yml` may
//! say, as documented in RANCHEROS.md. Owns shapes and per-value parsing (hostname, file
//! mode, encodings); cross-field checks live in `check`, loading and layering in `resolve`.
//!
//! Every struct rejects unknown keys; the resolver decides whether an unknown key is an
//! error (strict mode, inside `rancher:`) or a warning (boot mode, or a cloud-init key at the
//! top level). Free-text fields use [`Text`], which like RancherOS's Go YAML library also
//! takes numbers and booleans (`password: 1234`, `bridge: true`).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;

use crate::service::ServiceSpec;
pub use crate::text::Text;
use crate::text::TextVisitor;

/// Keys PID 1 reads from the kernel command line only, before any config file, with why: a
/// config file's value is ignored, with a warning.
pub const CMDLINE_ONLY_KEYS: &[(&str, &str)] = &[(
    "rancher.recovery",
    "it says what a fatal boot error leads to, which can happen before any file is read",
)];

/// `rancher.cloud_init.timeout` when unset: how long the network datasources may delay
/// the boot, all together.
pub const DEFAULT_DATASOURCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `rancher.cloud_init.timeout`, in seconds (ten minutes): the boot waits for it,
/// and a config server that has not answered in ten minutes is down.
pub const MAX_DATASOURCE_TIMEOUT_SECS: u64 = 600;
/// `rancher.shutdown_timeout` when unset.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `rancher.shutdown_timeout`, in seconds (an hour). A service that has not
/// flushed its state within an hour of SIGTERM is hung; and PID 1 computes its shutdown
/// deadline from this value, so it must stay far below what a clock can add.
pub const MAX_SHUTDOWN_TIMEOUT_SECS: u64 = 3600;
/// Longest `rancher.network.dhcp_timeout`, in seconds (an hour). It is the length of one
/// round of the DHCP client, which then starts another round, so a longer one buys
/// nothing; and the network service turns it into udhcpc's count of discover tries, an
/// `int` that a huge value would overflow.
pub const MAX_DHCP_TIMEOUT_SECS: u64 = 3600;
/// Most bytes a `write_files` entry may decode to (gzip can expand 1000-fold).
pub const MAX_WRITE_FILE_BYTES: usize = 16 << 20;

/// Errors from parsing one value of the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// Not a valid RFC 1123 hostname.
    #[error("invalid hostname `{value}`: {reason}")]
    Hostname {
        /// The text given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Not an octal file mode.
    #[error("invalid permissions `{value}`: expected an octal mode such as \"0644\"")]
    Permissions {
        /// The text given.
        value: String,
    },
}

/// Errors while decoding a `write_files` entry's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// The base64 text is malformed.
    #[error("decoding base64 content: {reason}")]
    Base64 {
        /// Why.
        reason: String,
    },
    /// The gzip stream is malformed.
    #[error("decompressing gzip content: {reason}")]
    Gzip {
        /// Why.
        reason: String,
    },
    /// The content decodes to more than the limit.
    #[error("content decodes to more than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

/// A valid hostname (RFC 1123: dot-separated labels of letters, digits and `-`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "Text")]
pub struct Hostname(String);

impl Hostname {
    /// Check and wrap a hostname.
    pub fn new(value: &str) -> Result<Self, SchemaError> {
        let err = |reason| SchemaError::Hostname {
            value: value.to_string(),
            reason,
        };
        if value.is_empty() {
            return Err(err("empty"));
        }
        if value.len() > 253 {
            return Err(err("longer than 253 characters"));
        }
        for label in value.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(err("each dot-separated label must have 1 to 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(err("only letters, digits, `-` and `.` are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("a label may not start or end with `-`"));
            }
        }
        Ok(Hostname(value.to_string()))
    }

    /// The hostname.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<Text> for Hostname {
    type Error = SchemaError;
    fn try_from(t: Text) -> Result<Self, SchemaError> {
        Hostname::new(&t)
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file mode from an octal string (`"0644"`, `"755"`, `"0o600"`). An unquoted number is
/// read by its digits (`644` means 0644), as RancherOS did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileMode(u32);

impl FileMode {
    /// Parse octal text.
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let valid = !digits.is_empty()
            && digits.len() <= 5
            && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(digits, 8) {
            Ok(bits) if valid && bits <= 0o7777 => Ok(FileMode(bits)),
            _ => Err(SchemaError::Permissions {
                value: text.to_string(),
            }),
        }
    }

    /// The permission bits, e.g. `0o644`.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_any(TextVisitor)?;
        FileMode::parse(&text).map_err(de::Error::custom)
    }
}

/// `write_files[].encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Encoding {
    /// The content is the file's text (the default).
    #[default]
    #[serde(rename = "text/plain", alias = "plain")]
    Plain,
    /// Base64 (`b64`, `base64`).
    #[serde(rename = "b64", alias = "base64")]
    Base64,
    /// Gzip (`gzip`, `gz`). YAML cannot carry raw binary, so the content is the base64 text
    /// of the gzip stream, as a `!!binary` value reads.
    #[serde(rename = "gzip", alias = "gz")]
    Gzip,
    /// Base64 of a gzip stream (`gz+b64`, `gzip+base64`, `gz+base64`, `gzip+b64`).
    #[serde(
        rename = "gz+b64",
        alias = "gzip+base64",
        alias = "gz+base64",
        alias = "gzip+b64"
    )]
    GzipBase64,
}

/// One `write_files` entry: a file written at boot by `cloud-init-execute`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// Absolute path of the file.
    pub path: Text,
    /// The content, encoded as `encoding` says.
    #[serde(default)]
    pub content: Text,
    /// How `content` is encoded.
    #[serde(default)]
    pub encoding: Encoding,
    /// Octal mode, e.g. `"0644"` (the default when unset).
    #[serde(default)]
    pub permissions: Option<FileMode>,
    /// `user[:group]` to own the file (default `root:root`).
    #[serde(default)]
    pub owner: Option<Text>,
    /// Write the file inside this system service's container instead of the host
    /// (RancherOS: e.g. `container: ntp`).
    #[serde(default)]
    pub container: Option<Text>,
}

impl WriteFile {
    /// The bytes to write, decoded and bounded by [`MAX_WRITE_FILE_BYTES`].
    pub fn decoded_content(&self) -> Result<Vec<u8>, ContentError> {
        let text: &str = &self.content;
        let bytes = match self.encoding {
            Encoding::Plain => text.as_bytes().to_vec(),
            Encoding::Base64 => decode_base64(text)?,
            Encoding::Gzip | Encoding::GzipBase64 => gunzip(&decode_base64(text)?)?,
        };
        if bytes.len() > MAX_WRITE_FILE_BYTES {
            return Err(ContentError::TooLarge {
                limit: MAX_WRITE_FILE_BYTES,
            });
        }
        Ok(bytes)
    }

    /// The mode to create the file with.
    pub fn mode(&self) -> u32 {
        self.permissions.map_or(0o644, FileMode::bits)
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, ContentError> {
    use base64::engine::{
        general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig,
    };
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // Block scalars wrap base64 over lines.
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    ENGINE.decode(compact).map_err(|e| ContentError::Base64 {
        reason: match e {
            base64::DecodeError::InvalidByte(offset, byte) => format!(
                "invalid character {:?} at offset {offset}",
                char::from(byte)
            ),
            other => other.to_string(),
        },
    })
}

pub(crate) fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, ContentError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(ContentError::Gzip {
            reason: "not gzip data".into(),
        });
    }
    gunzip_capped(bytes, MAX_WRITE_FILE_BYTES).map_err(|e| match e {
        Some(reason) => ContentError::Gzip { reason },
        None => ContentError::TooLarge {
            limit: MAX_WRITE_FILE_BYTES,
        },
    })
}

/// Decompress at most `limit` bytes; `Err(None)` when the output would be larger.
pub(crate) fn gunzip_capped(bytes: &[u8], limit: usize) -> Result<Vec<u8>, Option<String>> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::GzDecoder::new(bytes)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| Some(e.to_string()))?;
    if out.len() > limit {
        return Err(None);
    }
    Ok(out)
}

/// A `runcmd`/`bootcmd` entry: a shell line or an argv list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// `- echo hi > /tmp/x`: run by `sh -c`.
    Shell(String),
    /// `- [mkdir, -p, /opt/x]`: run directly.
    Argv(Vec<String>),
}

impl CommandSpec {
    /// The argv to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandSpec::Shell(line) => vec!["sh".into(), "-c".into(), line.clone()],
            CommandSpec::Argv(v) => v.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for CommandSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CommandSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command line or a list of arguments")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CommandSpec, E> {
                Ok(CommandSpec::Shell(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<CommandSpec, E> {
                TextVisitor.visit_bool(v).map(|t| CommandSpec::Shell(t.0))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CommandSpec, E> {
                TextVisitor.visit_i64(v).map(|t| CommandSpec::Shell(t.0))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CommandSpec, E> {
                TextVisitor.visit_u64(v).map(|t| CommandSpec::Shell(t.0))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<CommandSpec, E> {
                TextVisitor.visit_f64(v).map(|t| CommandSpec::Shell(t.0))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<CommandSpec, A::Error> {
                let mut argv = Vec::new();
                while let Some(Text(arg)) = seq.next_element()? {
                    argv.push(arg);
                }
                Ok(CommandSpec::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

/// A `mounts` row: `[device, mountpoint, fstype, options]`; trailing fields may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct MountRow(pub Vec<Text>);

impl MountRow {
    /// Field `i` (0 device, 1 mountpoint, 2 fstype, 3 options), if given.
    pub fn field(&self, i: usize) -> Option<&str> {
        self.0.get(i).map(|t| t.as_ref())
    }
}

/// A RancherOS key that rOS accepts but does not use; the resolver warns about it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Ignored)
    }
}

/// A whole cloud-config: cloud-init-compatible top-level keys plus `rancher:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudConfig {
    /// The machine's hostname.
    pub hostname: Option<Hostname>,
    /// Public keys allowed to log in as the console user.
    pub ssh_authorized_keys: Vec<Text>,
    /// Files written at boot.
    pub write_files: Vec<WriteFile>,
    /// Commands run once the system services are up (by `cloud-init-execute`).
    pub runcmd: Vec<CommandSpec>,
    /// Commands run early in boot, before the system services.
    pub bootcmd: Vec<CommandSpec>,
    /// Extra mounts, fstab-like rows.
    pub mounts: Vec<MountRow>,
    /// The RancherOS section.
    pub rancher: RancherConfig,
}

impl CloudConfig {
    /// `rancher.shutdown_timeout`, or 60 s; at most [`MAX_SHUTDOWN_TIMEOUT_SECS`]. The
    /// resolver already drops a larger value; the cap is for a config built in memory.
    pub fn shutdown_timeout(&self) -> Duration {
        self.rancher
            .shutdown_timeout
            .map_or(DEFAULT_SHUTDOWN_TIMEOUT, |secs| {
                Duration::from_secs(secs.min(MAX_SHUTDOWN_TIMEOUT_SECS))
            })
    }
}

/// Everything under `rancher:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RancherConfig {
    /// Service definitions, added to (or overriding) the built-in ones.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Services from the service index turned on (`true`) or off (`false`).
    pub services_include: BTreeMap<String, bool>,
    /// Kernel modules to load at boot (an entry may carry parameters: `nbd max_part=8`).
    pub modules: Vec<Text>,
    /// Sysctl settings, `net.ipv4.ip_forward: 1`.
    pub sysctl: BTreeMap<String, Text>,
    /// Environment variables passed into system services.
    pub environment: BTreeMap<String, Text>,
    /// Networking.
    pub network: NetworkConfig,
    /// The user container engine.
    pub docker: DockerConfig,
    /// The system container engine (here: the system containerd). Keys that only made
    /// sense for RancherOS's System Docker are accepted and not used.
    pub system_docker: DockerConfig,
    /// Which console to run (`default`, or a console service name such as `alpine`).
    pub console: Option<Text>,
    /// The SSH daemon of the console.
    pub ssh: SshConfig,
    /// The state partition.
    pub state: StateConfig,
    /// Where cloud-config comes from.
    pub cloud_init: CloudInitConfig,
    /// Seconds that reboot/poweroff waits for services to stop (default 60, at most
    /// [`MAX_SHUTDOWN_TIMEOUT_SECS`] = 3600; a larger value is an error and dropped).
    pub shutdown_timeout: Option<u64>,
    /// Where upgrades come from.
    pub upgrade: UpgradeConfig,
    /// Keep boot logs in `/var/log/boot` (RancherOS `rancher.log`).
    pub log: bool,
    /// Verbose logging from init and the system services.
    pub debug: bool,
    /// Console user's password (normally only from the kernel command line).
    pub password: Option<Text>,
    /// Log in automatically on this console (`tty1`, `ttyS0`).
    pub autologin: Option<Text>,
    /// What a fatal boot error leads to: a recovery shell (`true`) or a reboot (`false`);
    /// unset, a shell on live media and a reboot on an installed disk. Read by PID 1 from
    /// the kernel command line only ([`CMDLINE_ONLY_KEYS`]), before any file is.
    pub recovery: bool,
    /// Values used when nothing else sets them (RancherOS `rancher.defaults`).
    pub defaults: DefaultsConfig,
    /// Start the hypervisor's guest agent service when one is detected.
    pub hypervisor_service: bool,

    /// RancherOS bootstrap containers (not used by rOS).
    pub bootstrap: Option<Ignored>,
    /// RancherOS cloud-init services (not used by rOS).
    pub cloud_init_services: Option<Ignored>,
    /// RancherOS bootstrap Docker settings (not used by rOS).
    pub bootstrap_docker: Option<Ignored>,
    /// RancherOS: remove /usr (not used by rOS).
    pub rm_usr: Option<Ignored>,
    /// RancherOS: no shared root (not used by rOS).
    pub no_sharedroot: Option<Ignored>,
    /// RancherOS: rebuild the console container (not used by rOS).
    pub force_console_rebuild: Option<Ignored>,
    /// RancherOS: services to disable (use `services_include: {NAME: false}`).
    pub disable: Option<Ignored>,
    /// RancherOS service repositories (not used by rOS).
    pub repositories: Option<Ignored>,
    /// RancherOS registry credentials (not used by rOS).
    pub registry_auths: Option<Ignored>,
    /// RancherOS: grow the root partition on this device (not used by rOS).
    pub resize_device: Option<Ignored>,
    /// RancherOS: services restarted after cloud-init (not used by rOS: config is reconciled live).
    pub restart_services: Option<Ignored>,
    /// RancherOS: wait for image preloading (not used by rOS).
    pub preload_wait: Option<Ignored>,
}

impl RancherConfig {
    /// The RancherOS keys that are set here but not used by rOS, with advice (may be empty).
    pub fn ignored_keys(&self) -> Vec<(&'static str, &'static str)> {
        let all = [
            (
                "bootstrap",
                self.bootstrap,
                "bootstrap containers are not used",
            ),
            ("cloud_init_services", self.cloud_init_services, ""),
            (
                "bootstrap_docker",
                self.bootstrap_docker,
                "there is no bootstrap Docker",
            ),
            ("rm_usr", self.rm_usr, ""),
            ("no_sharedroot", self.no_sharedroot, ""),
            ("force_console_rebuild", self.force_console_rebuild, ""),
            (
                "disable",
                self.disable,
                "use `rancher.services_include: {NAME: false}`",
            ),
            (
                "repositories",
                self.repositories,
                "service repositories are not used",
            ),
            ("registry_auths", self.registry_auths, ""),
            ("resize_device", self.resize_device, ""),
            (
                "restart_services",
                self.restart_services,
                "config changes are applied live",
            ),
            ("preload_wait", self.preload_wait, ""),
        ];
        all.into_iter()
            .filter(|(_, v, _)| v.is_some())
            .map(|(k, _, why)| (k, why))
            .collect()
    }
}

/// `rancher.network`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Resolver settings.
    pub dns: DnsConfig,
    /// Interfaces by name (`eth0`), glob (`eth*`) or MAC (`mac=00:11:22:33:44:55`).
    pub interfaces: BTreeMap<String, InterfaceConfig>,
    /// Proxy for HTTP, passed to services and the engines.
    pub http_proxy: Option<Text>,
    /// Proxy for HTTPS.
    pub https_proxy: Option<Text>,
    /// Hosts that bypass the proxies.
    pub no_proxy: Option<Text>,
    /// Seconds to wait for a DHCP lease in one round of the DHCP client (at most
    /// [`MAX_DHCP_TIMEOUT_SECS`] = 3600; a larger value is an error and dropped).
    pub dhcp_timeout: Option<u64>,
    /// Shell commands run before the interfaces are configured.
    pub pre_cmds: Vec<Text>,
    /// Shell commands run after the interfaces are configured.
    pub post_cmds: Vec<Text>,
    /// RancherOS Wi-Fi networks (not used by rOS).
    pub wifi_networks: Option<Ignored>,
    /// RancherOS modem networks (not used by rOS).
    pub modem_networks: Option<Ignored>,
}

/// `rancher.network.dns`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Name server addresses.
    pub nameservers: Vec<Text>,
    /// Search domains.
    pub search: Vec<Text>,
}

/// One entry of `rancher.network.interfaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Which links this entry applies to, when the key is only a label.
    pub r#match: Option<Text>,
    /// Get an address by DHCP.
    pub dhcp: Option<bool>,
    /// Extra arguments for the DHCP client.
    pub dhcp_args: Option<Text>,
    /// A static address in CIDR form, `192.168.1.10/24`.
    pub address: Option<Text>,
    /// More static addresses in CIDR form.
    pub addresses: Vec<Text>,
    /// Use an IPv4 link-local address.
    pub ipv4ll: bool,
    /// IPv4 default gateway.
    pub gateway: Option<Text>,
    /// IPv6 default gateway.
    pub gateway_ipv6: Option<Text>,
    /// Link MTU.
    pub mtu: Option<u32>,
    /// Make this a bridge (`true`) or add it to the named bridge.
    pub bridge: Option<Text>,
    /// Add this link to the named bond.
    pub bond: Option<Text>,
    /// Bonding driver options (`mode: 1`, `miimon: 100`).
    pub bond_opts: BTreeMap<String, Text>,
    /// VLANs on this link, `"100,200:name"`.
    pub vlans: Option<Text>,
    /// Shell commands run before the link is brought up.
    pub pre_up: Vec<Text>,
    /// Shell commands run after the link is up.
    pub post_up: Vec<Text>,
}

/// `rancher.docker` (the user engine) and `rancher.system_docker`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// Which engine to run, e.g. `docker-24.0.7` (a service from the index).
    pub engine: Option<Text>,
    /// Listen on TCP with TLS.
    pub tls: bool,
    /// Daemon arguments used when `tls` is on.
    pub tls_args: Vec<Text>,
    /// Extra daemon arguments.
    pub extra_args: Vec<Text>,
    /// TLS server certificate (PEM).
    pub server_cert: Option<Text>,
    /// TLS server key (PEM; private, hidden by export).
    pub server_key: Option<Text>,
    /// TLS CA certificate (PEM).
    pub ca_cert: Option<Text>,
    /// TLS CA key (PEM; private, hidden by export).
    pub ca_key: Option<Text>,
    /// Environment of the daemon, `NAME=value` entries.
    pub environment: Vec<Text>,
    /// RancherOS: the container the engine's storage lives in.
    pub storage_context: Option<Text>,
    /// RancherOS: run the engine by exec rather than in a container.
    pub exec: Option<bool>,
    /// Default bridge name.
    pub bridge: Option<Text>,
    /// Default bridge IP, `172.17.0.1/16`.
    pub bip: Option<Text>,
    /// Daemon config file.
    pub config_file: Option<Text>,
    /// Address of an external containerd.
    pub containerd: Option<Text>,
    /// Daemon debug output.
    pub debug: Option<bool>,
    /// Daemon exec root.
    pub exec_root: Option<Text>,
    /// Group owning the socket.
    pub group: Option<Text>,
    /// Data directory (old name of `data_root`).
    pub graph: Option<Text>,
    /// Data directory.
    pub data_root: Option<Text>,
    /// Sockets to listen on.
    pub host: Vec<Text>,
    /// Registries reached without TLS verification.
    pub insecure_registry: Vec<Text>,
    /// Keep containers running while the daemon restarts.
    pub live_restore: Option<bool>,
    /// Default log driver.
    pub log_driver: Option<Text>,
    /// Daemon log level.
    pub log_level: Option<Text>,
    /// Log driver options.
    pub log_opts: BTreeMap<String, Text>,
    /// Default bridge MTU.
    pub mtu: Option<u32>,
    /// Daemon PID file.
    pub pid_file: Option<Text>,
    /// Registry mirror URL.
    pub registry_mirror: Option<Text>,
    /// Restart containers with a restart policy when the daemon starts.
    pub restart: Option<bool>,
    /// SELinux support.
    pub selinux_enabled: Option<bool>,
    /// Storage driver (for the system engine: the containerd snapshotter).
    pub storage_driver: Option<Text>,
    /// Use the userland proxy for published ports.
    pub userland_proxy: Option<bool>,
}

impl DockerConfig {
    /// `data_root`, or the old `graph`.
    pub fn data_root(&self) -> Option<&str> {
        self.data_root.as_deref().or(self.graph.as_deref())
    }
}

/// `rancher.ssh`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    /// Run the SSH daemon (default on).
    pub daemon: Option<bool>,
    /// Port to listen on (default 22).
    pub port: Option<u16>,
    /// Address to listen on (default all).
    pub listen_address: Option<Text>,
    /// Host keys by file name (`ssh_host_rsa_key: |` PEM); private, hidden by export.
    pub keys: BTreeMap<String, Text>,
}

/// `rancher.state`: the persistent partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// The device: `LABEL=RANCHER_STATE`, `UUID=...` or `/dev/sda1`.
    pub dev: Option<Text>,
    /// Its filesystem (`auto`, `ext4`).
    pub fstype: Option<Text>,
    /// Blank disks to format as the state partition on first boot.
    pub autoformat: Vec<Text>,
    /// Wait for the device to appear.
    pub wait: bool,
    /// Refuse to boot without it.
    pub required: bool,
    /// Subdirectory of the partition used as state.
    pub directory: Option<Text>,
    /// Assemble RAID arrays before looking for it.
    pub mdadm_scan: bool,
    /// Script run before mounting it.
    pub script: Option<Text>,
    /// OEM partition device.
    pub oem_dev: Option<Text>,
    /// OEM partition filesystem.
    pub oem_fstype: Option<Text>,
    /// Boot partition device.
    pub boot_dev: Option<Text>,
    /// Boot partition filesystem.
    pub boot_fstype: Option<Text>,
    /// Start rngd early (entropy for encrypted state).
    pub rngd: bool,
    /// Open LUKS devices before looking for it.
    pub cryptsetup: bool,
    /// Activate LVM volumes before looking for it.
    pub lvm_scan: bool,
}

/// `rancher.cloud_init`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudInitConfig {
    /// Where to fetch user-data: `configdrive:PATH`, `file:PATH`, `url:URL`, `cmdline`,
    /// `ec2`, `digitalocean`, ...
    pub datasources: Vec<Text>,
    /// How long the network datasources (`url:`, `cmdline`) may take, all together, in
    /// seconds (new in rOS): 60 by default, at most [`MAX_DATASOURCE_TIMEOUT_SECS`]. The
    /// boot goes on without what they did not deliver in time.
    pub timeout: Option<u64>,
    /// CA certificates (PEM) that https datasources trust instead of the public roots (new
    /// in rOS): a config server with a private CA. Read from the layers present before the
    /// datasources: the image's, the user config on the state disk, the kernel line.
    pub ca_certs: Vec<Text>,
}

impl CloudInitConfig {
    /// [`CloudInitConfig::timeout`], or 60 s; at most [`MAX_DATASOURCE_TIMEOUT_SECS`].
    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_DATASOURCE_TIMEOUT, |secs| {
            Duration::from_secs(secs.min(MAX_DATASOURCE_TIMEOUT_SECS))
        })
    }
}

/// `rancher.upgrade`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpgradeConfig {
    /// URL of the release list.
    pub url: Option<Text>,
    /// Image repository of OS releases.
    pub image: Option<Text>,
    /// `true`/`false` for automatic rollback, or (RancherOS) the image to roll back to.
    pub rollback: Option<Text>,
    /// The user's own health checks for a trial boot (new in rOS): commands run as
    /// `runcmd` runs them, in order, once every service is up and stable; the new slot
    /// is committed only if each exits 0 within [`HEALTH_CHECK_DEADLINE_SECS`], and a
    /// failure rolls the upgrade back, naming the check.
    pub health_checks: Vec<CommandSpec>,
    /// CA certificates (PEM) that `ros os upgrade -i https://...` trusts instead of the
    /// public roots (new in rOS): a release server with a private CA. The bundle's own
    /// signature is checked either way.
    pub ca_certs: Vec<Text>,
    /// How long, in seconds, every service must stay up without a restart for a trial
    /// boot (or a slot's first boot) to count as healthy (new in rOS): 20 by default,
    /// between 1 and [`MAX_HEALTHY_AFTER_SECS`]. A crash loop fails the gate sooner.
    pub healthy_after: Option<u64>,
}

impl UpgradeConfig {
    /// [`UpgradeConfig::healthy_after`], or 20 s; within 1 s and
    /// [`MAX_HEALTHY_AFTER_SECS`].
    pub fn healthy_after(&self) -> Duration {
        let secs = self.healthy_after.unwrap_or(DEFAULT_HEALTHY_AFTER_SECS);
        Duration::from_secs(secs.clamp(1, MAX_HEALTHY_AFTER_SECS))
    }
}

/// `rancher.upgrade.healthy_after` when unset, in seconds.
pub const DEFAULT_HEALTHY_AFTER_SECS: u64 = 20;
/// Longest `rancher.upgrade.healthy_after`, in seconds: the gate's whole window is
/// three minutes (init's `HEALTH_WINDOW`), and the services must settle within it.
pub const MAX_HEALTHY_AFTER_SECS: u64 = 120;

/// How long one `rancher.upgrade.health_checks` entry may run.
pub const HEALTH_CHECK_DEADLINE_SECS: u64 = 120;

/// `rancher.defaults`: values used when nothing else sets them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultsConfig {
    /// Hostname when none is configured.
    pub hostname: Option<Hostname>,
    /// User engine defaults.
    pub docker: DockerConfig,
    /// Network defaults.
    pub network: NetworkConfig,
    /// Log driver of the system engine's containers.
    pub system_docker_logs: Option<Text>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_after_defaults_to_20_s_and_stays_within_its_bounds() {
        let with = |secs| UpgradeConfig {
            healthy_after: secs,
            ..Default::default()
        };
        for (set, want) in [
            (None, 20),
            (Some(5), 5),
            (Some(0), 1),
            (Some(u64::MAX), 120),
        ] {
            assert_eq!(
                with(set).healthy_after(),
                Duration::from_secs(want),
                "{set:?}"
            );
        }
    }

    #[test]
    fn hostname_table() {
        for ok in ["rancher", "a", "node-1.example.com", "X9"] {
            assert!(Hostname::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a_b", "has space", &"x".repeat(64)] {
            assert!(Hostname::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_mode_table() {
        let cases = [
            ("0644", Some(0o644)),
            ("755", Some(0o755)),
            ("0o600", Some(0o600)),
            ("04755", Some(0o4755)),
            ("0999", None),
            ("", None),
            ("rw", None),
            ("77777", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                FileMode::parse(text).ok().map(FileMode::bits),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn content_decoding() {
        let wf = |content: &str, encoding| WriteFile {
            path: "/x".into(),
            content: content.into(),
            encoding,
            permissions: None,
            owner: None,
            container: None,
        };
        assert_eq!(
            wf("aGVsbG8=", Encoding::Base64).decoded_content().unwrap(),
            b"hello"
        );
        assert_eq!(
            wf("aGVs\n bG8", Encoding::Base64)
                .decoded_content()
                .unwrap(),
            b"hello"
        );
        assert!(wf("not base64!", Encoding::Base64)
            .decoded_content()
            .is_err());
        // gzip of "hello\n", base64.
        let gz = "H4sIAAAAAAAC/8tIzcnJ5wIAIDA6NgYAAAA=";
        assert_eq!(
            wf(gz, Encoding::GzipBase64).decoded_content().unwrap(),
            b"hello\n"
        );
        assert_eq!(
            wf(gz, Encoding::Gzip).decoded_content().unwrap(),
            b"hello\n"
        );
        assert!(wf("aGVsbG8=", Encoding::GzipBase64)
            .decoded_content()
            .is_err());
    }
}
