//! `ros service list|enable|disable|delete|up|start|stop|restart|rm|ps|logs`.
//!
//! Owns the arguments, what is read and written under the root, the talk with PID 1 over
//! its control socket (`ros_control`), and the exit codes. Must not parse or validate
//! service definitions or config itself (`ros_config` does) nor start containers (PID 1
//! does: every state change is a request on the socket).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use ros_config::{paths, Diagnostic, KeyPath, SetError};
use ros_control::{ControlError, ErrorKind, Request, Response};

use crate::exit::{CliError, ExitStatus};

mod catalog;
mod logs;
mod table;

pub use catalog::{SERVICES_DIR, SERVICE_INDEX_DIR};
pub use logs::LOG_DIR;

/// Environment variable that overrides the control socket's path (tests).
pub const SOCKET_ENV: &str = "ROS_CONTROL_SOCKET";

/// How long PID 1 may take to answer a request other than `stop`: `up` may wait for
/// one-shot services and image unpacking.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a best-effort `reload` after `enable`/`disable`/`delete` may take.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

const AFTER_HELP: &str = "\
Services come from the built-in definitions (/usr/share/ros/services/*.yml), the service
index (/usr/share/ros/service-index/NAME.yml: off unless enabled) and `rancher.services` in
the config. `enable`, `disable` and `delete` edit `rancher.services_include` in
/var/lib/rancher/conf/cloud-config.yml, then ask PID 1 to reload (if it is not reachable,
the change applies at the next `ros service up` or boot). The other commands are requests
to PID 1 on /run/ros/control.sock (root only).

Exit codes: 0 success, 1 operation failed, 2 usage error, 3 invalid service file or
config (nothing written), 4 PID 1 unreachable, 5 service, index entry or log not found.

ROS_ROOT=DIR puts every path above below DIR; ROS_CONTROL_SOCKET=PATH overrides the socket.";

/// Arguments of `ros service`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ServiceArgs {
    #[command(subcommand)]
    command: ServiceCommand,
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// List the available services, each `enabled` or `disabled`.
    ///
    /// Built-in services and `rancher.services` are enabled unless
    /// `rancher.services_include.NAME` is false; index services only when it is true.
    /// With -a, also show where each comes from (builtin, index, config, or the included
    /// file) and `services_include` entries that name nothing.
    List {
        /// Also show each service's source and dangling `services_include` entries.
        #[arg(short, long)]
        all: bool,
    },
    /// Enable a service from the index by NAME, or a service file by PATH.
    ///
    /// Records `rancher.services_include.NAME: true` (for a file: its absolute path as the
    /// key, after checking the file; exit 3 with file:line on errors). A built-in service
    /// is on by default: enabling it removes a `false` entry. Exit 5 if NAME is unknown.
    Enable {
        /// Index service name, or path to a YAML service file.
        service: String,
    },
    /// Disable a service: records `rancher.services_include.NAME: false`.
    Disable {
        /// Service name (or the path it was enabled by).
        service: String,
    },
    /// Remove a service's entry from `rancher.services_include` (back to its default).
    Delete {
        /// Service name (or the path it was enabled by).
        service: String,
    },
    /// Create and start services (and what they wait for); no NAME: every enabled service.
    Up {
        /// Service names.
        services: Vec<String>,
    },
    /// Start services that exist but are not running.
    Start {
        /// Service names.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Stop services: SIGTERM, then SIGKILL after the timeout.
    Stop {
        /// Service names.
        #[arg(required = true)]
        services: Vec<String>,
        /// Seconds to wait between SIGTERM and SIGKILL (default: PID 1's, 10).
        #[arg(short, long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Restart services.
    Restart {
        /// Service names.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Remove stopped services' containers.
    Rm {
        /// Service names.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Show the services PID 1 knows, with their state.
    Ps {
        /// `table` (default) or `json` (the rows as PID 1 sent them).
        #[arg(long, value_name = "FORMAT", default_value = "table")]
        format: PsFormat,
        /// Do not truncate the COMMAND column.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Print a service's log (/var/log/ros/NAME.log, and NAME.log.1 before it).
    Logs {
        /// Keep printing what is appended (until interrupted).
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(short = 'n', long, value_name = "N")]
        lines: Option<usize>,
        /// Service name.
        service: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PsFormat {
    Table,
    Json,
}

/// Errors of `ros service`, each naming its subject; [`ServiceCmdError::status`] gives the
/// exit code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceCmdError {
    /// PID 1's control socket is missing, refuses, or PID 1 did not answer.
    #[error("{source} (is PID 1 rOS's init, and are you root?)")]
    Unreachable {
        /// Why.
        #[source]
        source: ControlError,
    },
    /// PID 1 answered something this `ros` does not understand.
    #[error(transparent)]
    Control(ControlError),
    /// PID 1 refused or failed the request.
    #[error("{request}: {message}")]
    Refused {
        /// The request's name.
        request: &'static str,
        /// PID 1's category.
        kind: ErrorKind,
        /// PID 1's message.
        message: String,
    },
    /// A name that is not a known service (or index entry).
    #[error("service {name}: {why}")]
    NotFound {
        /// The name given.
        name: String,
        /// Where it was looked for.
        why: String,
    },
    /// A service file given to `enable` has errors; nothing was written.
    #[error("{path}: not enabled, the service file has errors:{}", listed(.diagnostics))]
    InvalidServiceFile {
        /// The file.
        path: PathBuf,
        /// Its errors.
        diagnostics: Vec<Diagnostic>,
    },
    /// The user config cannot be read, or written back.
    #[error(transparent)]
    User(#[from] ros_config::UserConfigError),
    /// The change would make the user config invalid.
    #[error("{path}: {source}")]
    Set {
        /// The user config.
        path: PathBuf,
        /// Why.
        #[source]
        source: SetError,
    },
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The service has no log.
    #[error("service {service}: no log at {path}")]
    NoLog {
        /// The service.
        service: String,
        /// The log file looked for.
        path: PathBuf,
    },
    /// Watching a log for `-f` failed.
    #[error("following {path}: {source}")]
    Follow {
        /// The log or its directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// Writing to standard output failed.
    #[error("writing to standard output: {0}")]
    Stdout(#[source] io::Error),
    /// A bad argument clap could not catch.
    #[error("{0}")]
    Usage(String),
}

impl ServiceCmdError {
    /// The exit code for this error.
    pub fn status(&self) -> ExitStatus {
        match self {
            ServiceCmdError::Unreachable { .. } => ExitStatus::Unreachable,
            ServiceCmdError::Refused { kind, .. } => match kind {
                ErrorKind::NotFound => ExitStatus::NotFound,
                ErrorKind::Invalid => ExitStatus::InvalidConfig,
                ErrorKind::Failed | ErrorKind::Unsupported => ExitStatus::Failure,
            },
            ServiceCmdError::NotFound { .. } | ServiceCmdError::NoLog { .. } => {
                ExitStatus::NotFound
            }
            ServiceCmdError::InvalidServiceFile { .. } => ExitStatus::InvalidConfig,
            ServiceCmdError::User(e) if e.is_invalid_config() => ExitStatus::InvalidConfig,
            ServiceCmdError::Set { source, .. } => match source {
                SetError::Invalid { .. } => ExitStatus::InvalidConfig,
                _ => ExitStatus::Usage,
            },
            ServiceCmdError::Usage(_) => ExitStatus::Usage,
            ServiceCmdError::Control(_)
            | ServiceCmdError::User(_)
            | ServiceCmdError::Read { .. }
            | ServiceCmdError::Follow { .. }
            | ServiceCmdError::Stdout(_) => ExitStatus::Failure,
        }
    }
}

impl From<ServiceCmdError> for CliError {
    fn from(e: ServiceCmdError) -> Self {
        CliError::new(e.status(), e.to_string())
    }
}

fn listed(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("\n  {}: {d}", d.severity))
        .collect()
}

/// Where `ros service` looks: the root of the well-known paths and PID 1's socket.
#[derive(Debug, Clone)]
pub struct Env {
    /// `/`, or `$ROS_ROOT`.
    pub root: PathBuf,
    /// `/run/ros/control.sock` below the root, or `$ROS_CONTROL_SOCKET`.
    pub socket: PathBuf,
}

impl Env {
    /// From the process environment.
    pub fn from_process() -> Env {
        let root = crate::host::root();
        let socket = match std::env::var_os(SOCKET_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => paths::under(&root, ros_control::CONTROL_SOCKET),
        };
        Env { root, socket }
    }
}

/// Run `ros service`.
pub fn run(args: ServiceArgs) -> Result<(), CliError> {
    execute(&Env::from_process(), args.command).map_err(CliError::from)
}

fn execute(env: &Env, command: ServiceCommand) -> Result<(), ServiceCmdError> {
    match command {
        ServiceCommand::List { all } => {
            let entries = catalog::available(&env.root);
            print(&catalog::render(&entries, all))
        }
        ServiceCommand::Enable { service } => enable(env, &service),
        ServiceCommand::Disable { service } => disable(env, &service),
        ServiceCommand::Delete { service } => delete(env, &service),
        ServiceCommand::Up { services } => request(env, Request::Up { services }, CALL_TIMEOUT),
        ServiceCommand::Start { services } => {
            request(env, Request::Start { services }, CALL_TIMEOUT)
        }
        ServiceCommand::Stop { services, timeout } => {
            // PID 1 may stop them one after another, each taking up to the timeout.
            let grace = timeout.unwrap_or(10).saturating_add(5);
            let n = u64::try_from(services.len()).unwrap_or(u64::MAX);
            let wait = CALL_TIMEOUT.max(Duration::from_secs(grace.saturating_mul(n)));
            let req = Request::Stop {
                services,
                timeout_secs: timeout,
            };
            request(env, req, wait)
        }
        ServiceCommand::Restart { services } => {
            request(env, Request::Restart { services }, CALL_TIMEOUT)
        }
        ServiceCommand::Rm { services } => request(env, Request::Remove { services }, CALL_TIMEOUT),
        ServiceCommand::Ps { format, no_trunc } => ps(env, format, no_trunc),
        ServiceCommand::Logs {
            follow,
            lines,
            service,
        } => logs::run(&env.root, &service, lines, follow),
    }
}

/// Write to stdout; a closed pipe (`ros service ps | head -1`) is not an error.
fn print(text: &str) -> Result<(), ServiceCmdError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(ServiceCmdError::Stdout(e)),
        _ => Ok(()),
    }
}

/// Send one request; anything but an `ok` or `ps` answer is an error.
fn call(env: &Env, req: &Request, timeout: Duration) -> Result<Response, ServiceCmdError> {
    match ros_control::call(&env.socket, req, timeout) {
        Ok(Response::Error { kind, message }) => Err(ServiceCmdError::Refused {
            request: req.name(),
            kind,
            message,
        }),
        Ok(resp) => Ok(resp),
        Err(e) if e.is_unreachable() => Err(ServiceCmdError::Unreachable { source: e }),
        Err(e) => Err(ServiceCmdError::Control(e)),
    }
}

fn request(env: &Env, req: Request, timeout: Duration) -> Result<(), ServiceCmdError> {
    match call(env, &req, timeout)? {
        Response::Ok { messages } => print(&lines(&messages)),
        other => Err(ServiceCmdError::Control(ControlError::BadResponse {
            socket: env.socket.clone(),
            reason: format!("a `{}` answer to `{}`", answer_name(&other), req.name()),
        })),
    }
}

fn answer_name(resp: &Response) -> &'static str {
    match resp {
        Response::Ok { .. } => "ok",
        Response::Ps { .. } => "ps",
        Response::Error { .. } => "error",
    }
}

fn lines(messages: &[String]) -> String {
    messages.iter().map(|m| format!("{m}\n")).collect()
}

fn ps(env: &Env, format: PsFormat, no_trunc: bool) -> Result<(), ServiceCmdError> {
    let rows = match call(env, &Request::Ps, CALL_TIMEOUT)? {
        Response::Ps { services } => services,
        other => {
            return Err(ServiceCmdError::Control(ControlError::BadResponse {
                socket: env.socket.clone(),
                reason: format!("a `{}` answer to `ps`", answer_name(&other)),
            }))
        }
    };
    match format {
        PsFormat::Table => print(&table::render(&rows, SystemTime::now(), !no_trunc)),
        PsFormat::Json => {
            let mut text =
                serde_json::to_string_pretty(&rows).expect("service rows always serialize");
            text.push('\n');
            print(&text)
        }
    }
}

/// `rancher.services_include` edits of the user config (`ros_config::UserConfig`, the one
/// editor `ros config` uses too): read it, change one key, write it back.
struct UserConfig(ros_config::UserConfig);

impl UserConfig {
    fn read(root: &Path) -> Result<UserConfig, ServiceCmdError> {
        Ok(UserConfig(ros_config::UserConfig::read(root)?))
    }

    fn include_key(name: &str) -> String {
        KeyPath::root()
            .key("rancher")
            .key("services_include")
            .key(name)
            .to_string()
    }

    fn include(&self, name: &str) -> Option<bool> {
        self.0
            .value()
            .get("rancher")?
            .get("services_include")?
            .get(name)?
            .as_bool()
    }

    fn set(&mut self, name: &str, on: bool) -> Result<(), ServiceCmdError> {
        self.0
            .set(&Self::include_key(name), &on.to_string())
            .map_err(|source| ServiceCmdError::Set {
                path: self.0.path().to_path_buf(),
                source,
            })
    }

    /// Remove the entry (and `services_include` when it empties); false when there was none.
    fn remove(&mut self, name: &str) -> bool {
        self.0.remove(&Self::include_key(name)).unwrap_or(false)
    }

    fn write(&self) -> Result<(), ServiceCmdError> {
        self.0.write()?;
        Ok(())
    }
}

/// `NAME|PATH`: a path when it has a `/` or a YAML extension.
fn is_path(arg: &str) -> bool {
    arg.contains('/') || arg.ends_with(".yml") || arg.ends_with(".yaml")
}

fn enable(env: &Env, arg: &str) -> Result<(), ServiceCmdError> {
    if arg.contains("://") {
        return Err(ServiceCmdError::Usage(format!(
            "enable {arg}: URLs are not supported; download the file and enable its path"
        )));
    }
    let mut user = UserConfig::read(&env.root)?;
    let (key, message) = if is_path(arg) {
        let path = std::path::absolute(arg).map_err(|source| ServiceCmdError::Read {
            path: PathBuf::from(arg),
            source,
        })?;
        if !path.is_file() {
            return Err(ServiceCmdError::NotFound {
                name: arg.to_string(),
                why: format!("{} is not a file", path.display()),
            });
        }
        check_file(&path)?;
        if env.root == Path::new("/") {
            visible_to_pid1(&path)?;
        }
        let key = path.display().to_string();
        user.set(&key, true)?;
        (key.clone(), format!("enabled {key}"))
    } else {
        let index_file = catalog::index_file(&env.root, arg);
        if index_file.is_file() {
            check_file(&index_file)?;
            user.set(arg, true)?;
            (arg.to_string(), format!("enabled {arg}"))
        } else if catalog::available(&env.root)
            .iter()
            .any(|e| e.name == arg && e.on_by_default())
        {
            // Built-in and config services run unless disabled: enabling one only
            // removes the `false` (an include of `true` would look for an index file).
            if user.remove(arg) {
                (arg.to_string(), format!("enabled {arg} (on by default)"))
            } else {
                return print(&format!("{arg} is already enabled\n"));
            }
        } else {
            return Err(ServiceCmdError::NotFound {
                name: arg.to_string(),
                why: format!(
                    "not in the service index ({}) nor defined; `ros service list` shows what is available",
                    paths::under(&env.root, SERVICE_INDEX_DIR).display()
                ),
            });
        }
    };
    user.write()?;
    print(&format!("{message}\n"))?;
    reload(env, &key)
}

/// PID 1 reads an included file by its path in its own mount namespace: refuse a file
/// that it would not find there, or find as another file (the console's `/tmp` is its
/// own, not the host's).
fn visible_to_pid1(path: &Path) -> Result<(), ServiceCmdError> {
    use std::os::unix::fs::MetadataExt as _;
    let ours = std::fs::metadata(path).map_err(|source| ServiceCmdError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let theirs = Path::new("/proc/1/root").join(path.strip_prefix("/").unwrap_or(path));
    let same =
        std::fs::metadata(&theirs).is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
    if same {
        return Ok(());
    }
    Err(ServiceCmdError::NotFound {
        name: path.display().to_string(),
        why: format!(
            "PID 1 does not see {} (this shell's filesystem is its container's: its /tmp, \
             for one, is its own); put the file under /var/lib/rancher/conf/ (kept on the \
             state disk) or /home, and enable it from there",
            path.display()
        ),
    })
}

/// Validate a service file; warnings go to stderr, errors refuse it.
fn check_file(path: &Path) -> Result<(), ServiceCmdError> {
    let (_, diagnostics) = ros_config::check_service_path(path);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(ServiceCmdError::InvalidServiceFile {
            path: path.to_path_buf(),
            diagnostics,
        });
    }
    for d in diagnostics {
        eprintln!("{}: {d}", d.severity);
    }
    Ok(())
}

/// Names `disable` and `delete` accept: anything `list -a` shows.
fn known(env: &Env, user: &UserConfig, name: &str) -> bool {
    user.include(name).is_some() || catalog::available(&env.root).iter().any(|e| e.name == name)
}

fn disable(env: &Env, name: &str) -> Result<(), ServiceCmdError> {
    let mut user = UserConfig::read(&env.root)?;
    // A service enabled through its file's path: disable that file.
    let by_path = catalog::available(&env.root)
        .into_iter()
        .find_map(|e| match e.source {
            catalog::Source::Include(path) if e.name == name => Some(path),
            _ => None,
        });
    if let Some(path) = by_path {
        let path = path.display().to_string();
        user.set(&path, false)?;
        user.write()?;
        print(&format!("disabled {name} (defined in {path})\n"))?;
        return reload(env, name);
    }
    if !known(env, &user, name) {
        return Err(ServiceCmdError::NotFound {
            name: name.to_string(),
            why: "not a known service; `ros service list -a` shows them".into(),
        });
    }
    if user.include(name) == Some(false) {
        return print(&format!("{name} is already disabled\n"));
    }
    user.set(name, false)?;
    user.write()?;
    print(&format!("disabled {name}\n"))?;
    reload(env, name)
}

fn delete(env: &Env, name: &str) -> Result<(), ServiceCmdError> {
    let mut user = UserConfig::read(&env.root)?;
    if !user.remove(name) {
        return Err(ServiceCmdError::NotFound {
            name: name.to_string(),
            why: format!(
                "not in rancher.services_include of {}",
                user.0.path().display()
            ),
        });
    }
    user.write()?;
    print(&format!("deleted {name} from rancher.services_include\n"))?;
    reload(env, name)
}

/// Ask PID 1 to apply the changed config. Best effort: the change is recorded either way.
fn reload(env: &Env, what: &str) -> Result<(), ServiceCmdError> {
    match call(env, &Request::Reload, RELOAD_TIMEOUT) {
        Ok(Response::Ok { messages }) => print(&lines(&messages)),
        Ok(_) => Ok(()),
        Err(ServiceCmdError::Unreachable { source }) => {
            eprintln!(
                "note: {what}: recorded; PID 1 was not asked to apply it ({source}); \
                 it applies at the next `ros service up` or boot"
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("warning: {what}: recorded, but applying it failed: {e}");
            Ok(())
        }
    }
}

/// Ask PID 1 to re-read the config after `ros config set/merge` changed it, so the
/// running services converge without a reboot. Best effort, like after `enable`.
pub fn config_changed(what: &str) {
    let _ = reload(&Env::from_process(), what);
}

/// Write `shell`'s completion script for `cmd` (the whole `ros` command tree, from
/// `Cli::command()`) to `out`. For `ros completion bash|zsh|fish|elvish|powershell`.
pub fn completions(shell: clap_complete::Shell, cmd: &mut clap::Command, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, cmd, name, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_cover_the_service_subcommands() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        #[command(name = "ros")]
        enum Cli {
            Service(ServiceArgs),
        }
        let mut script = Vec::new();
        completions(clap_complete::Shell::Bash, &mut Cli::command(), &mut script);
        let script = String::from_utf8(script).unwrap();
        for word in ["enable", "logs", "--follow", "--format"] {
            assert!(script.contains(word), "{word}");
        }
    }

    #[test]
    fn paths_versus_names() {
        for p in ["./x.yml", "/opt/s.yaml", "s.yml", "dir/s"] {
            assert!(is_path(p), "{p}");
        }
        for n in ["kernel-headers", "open-vm-tools", "ntp"] {
            assert!(!is_path(n), "{n}");
        }
    }

    #[test]
    fn include_keys_quote_paths() {
        assert_eq!(
            UserConfig::include_key("ntp"),
            "rancher.services_include.ntp"
        );
        assert_eq!(
            UserConfig::include_key("/opt/my.yml"),
            "rancher.services_include.\"/opt/my.yml\""
        );
    }

    #[test]
    fn error_kinds_map_to_exit_codes() {
        let refused = |kind| ServiceCmdError::Refused {
            request: "stop",
            kind,
            message: String::new(),
        };
        assert_eq!(refused(ErrorKind::NotFound).status(), ExitStatus::NotFound);
        assert_eq!(
            refused(ErrorKind::Invalid).status(),
            ExitStatus::InvalidConfig
        );
        assert_eq!(refused(ErrorKind::Failed).status(), ExitStatus::Failure);
        assert_eq!(
            refused(ErrorKind::Unsupported).status(),
            ExitStatus::Failure
        );
    }
}
