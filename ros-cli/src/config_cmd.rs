//! `ros config get|set|merge|export|validate`: the command-line face of `ros-config`.
//!
//! Owns the arguments, which files under the root are read and written, what is printed
//! where, and the exit codes. Must not parse, layer, validate or edit config trees itself:
//! `ros_config` does all of that; this module only composes its functions.

use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use ros_config::{
    paths, AtomicWriteError, Diagnostic, KeyPath, KeyPathError, Layer, Loaded, Mode, SetError,
    ToYamlError, UserConfig, UserConfigError, Value, Written, MAX_FILE_BYTES, SECRET_MODE,
};

use crate::exit::{CliError, ExitStatus};

/// How `-i` spells standard input, and how diagnostics name it.
const STDIN_ARG: &str = "-";
const STDIN_ORIGIN: &str = "<stdin>";

const AFTER_HELP: &str = "\
Layers, lowest first (later wins; maps merge key by key, lists and scalars replace):
  /usr/share/ros/os-config.yml < /usr/share/ros/oem/oem-config.yml
  < /var/lib/rancher/conf/cloud-config.yml < /var/lib/rancher/conf/cloud-config.d/*.yml
  < rancher.KEY=VALUE words of /proc/cmdline
`get` and `export -f` show the merged result; `set` and `merge` edit only the user file
/var/lib/rancher/conf/cloud-config.yml (created with mode 0600; an existing file keeps its
mode; comments in it are not kept when it is rewritten).

Diagnostics read `error: FILE:LINE:COLUMN: KEY: MESSAGE` (or `warning: ...`) on stderr.

Exit codes: 0 success, 1 operation failed (I/O), 2 usage error or unparsable KEY,
3 invalid config (nothing written), 5 KEY or input FILE not found.

ROS_ROOT=DIR puts every path above below DIR instead of / (for tests and image builds).";

/// Arguments of `ros config`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print one value of the merged config (all layers plus the kernel command line).
    ///
    /// Scalars print plainly (`ros config get hostname` -> `rancher`), maps and lists as
    /// YAML. Without KEY, print the whole merged config with private material hidden (the
    /// same as `export -f`). Values that were dropped because they are invalid are reported
    /// on stderr; `-v` reports warnings too. Exit 5 if KEY is not set in any layer.
    Get {
        /// Dotted key: `rancher.ssh.port`, `rancher.modules[0]`,
        /// `rancher.sysctl.net.ipv4.ip_forward`.
        key: Option<String>,
        /// Also report warnings (ignored keys) found while loading the layers.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Set one key in the user config.
    ///
    /// VALUE is read as a YAML scalar (`true`, `60`, `8.8.8.8`, `box1`) or a `[a,b]` list.
    /// The change is refused (exit 3, file untouched) if it would add an error to the user
    /// config; otherwise the file is replaced atomically.
    Set {
        /// Dotted key, e.g. `rancher.network.dns.nameservers`.
        key: String,
        /// The new value, e.g. `2222` or `[8.8.8.8,1.1.1.1]`.
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Merge a YAML document into the user config (maps merge, lists and scalars replace).
    ///
    /// The input is validated first (strict: unknown `rancher:` keys are errors); on any
    /// error nothing is written and exit is 3.
    Merge {
        /// Read the document from FILE instead of standard input (`-` is standard input).
        #[arg(short, long, value_name = "FILE")]
        input: Option<PathBuf>,
    },
    /// Print the user config (or, with -f, the merged config) as YAML.
    ///
    /// Private material (password, SSH host keys, TLS keys, registry credentials) is left
    /// out unless -p is given.
    Export {
        /// Write to FILE (atomically, mode 0600) instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Include private material.
        #[arg(short, long)]
        private: bool,
        /// Export the merged config of all layers and the kernel command line.
        #[arg(short, long)]
        full: bool,
        /// With -f: also report warnings found while loading the layers.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Check a cloud-config document (strict mode) without applying it.
    ///
    /// Prints every problem, warnings too, on stderr. Exit 3 if there is any error, 0
    /// otherwise; nothing is printed for a clean document.
    Validate {
        /// Read the document from FILE instead of standard input (`-` is standard input).
        #[arg(short, long, value_name = "FILE")]
        input: Option<PathBuf>,
    },
}

/// Run `ros config` against `/` (or `$ROS_ROOT`) and the process's standard streams.
pub fn run(args: ConfigArgs) -> Result<(), CliError> {
    let root = crate::host::root();
    let stdin = io::stdin();
    let stdin_is_tty = stdin.is_terminal();
    let mut io = Io {
        stdin: &mut stdin.lock(),
        stdin_is_tty,
        out: &mut io::stdout().lock(),
        err: &mut io::stderr().lock(),
    };
    execute(&root, args.command, &mut io).map_err(CliError::from)
}

/// PID 1 is asked to apply the changed config live.
///
/// Sends `reload` over PID 1's control socket (`ROS_CONTROL_SOCKET` overrides it); when
/// PID 1 can't be reached, a note says the change applies at the next boot.
pub fn notify_config_changed(_root: &Path) {
    crate::service_cmd::config_changed("config change");
}

/// The streams a command talks to; tests pass buffers.
struct Io<'a> {
    stdin: &'a mut dyn Read,
    /// True when standard input is a terminal (a hint is printed before reading it).
    stdin_is_tty: bool,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
}

impl Io<'_> {
    /// Print the command's result. A closed pipe (`ros config export | head`) is not an
    /// error: the reader has what it wanted.
    fn print(&mut self, text: &str) -> Result<(), ConfigError> {
        match self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
        {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                Err(ConfigError::WriteStdout { source: e })
            }
            _ => Ok(()),
        }
    }

    /// A line for the user on stderr. Best effort: if stderr is gone there is nobody to tell.
    fn note(&mut self, line: impl std::fmt::Display) {
        let _ = writeln!(self.err, "{line}");
    }
}

/// Errors of `ros config`, each naming its subject; [`ConfigError::status`] gives the exit
/// code.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read (not found is only an error for `-i FILE`).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Standard input could not be read.
    #[error("reading standard input: {source}")]
    ReadStdin {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The input or the user config is not UTF-8 text.
    #[error("{origin}: not UTF-8 text (byte {valid_up_to}); nothing written")]
    NotUtf8 {
        /// The file, or `<stdin>`.
        origin: String,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The key does not parse.
    #[error("{0}")]
    BadKey(#[from] KeyPathError),
    /// The key is not set in any layer.
    #[error("config key `{key}` is not set (`ros config get` prints the whole config)")]
    KeyNotFound {
        /// The key asked for.
        key: String,
    },
    /// The user config cannot be read, or written back.
    #[error(transparent)]
    User(#[from] UserConfigError),
    /// The change was refused because of the listed problems; nothing was written.
    #[error("{action}: refused, {path} not changed:{}", listed(.diagnostics))]
    Refused {
        /// What was attempted (`setting rancher.ssh.port`, `merging <stdin>`).
        action: String,
        /// The user config.
        path: PathBuf,
        /// Every problem (errors, and warnings that came with them).
        diagnostics: Vec<Diagnostic>,
    },
    /// The key cannot be set in the current user config (a scalar or list is in the way).
    #[error("{source}; {path} not changed")]
    SetImpossible {
        /// The user config.
        path: PathBuf,
        /// What is in the way.
        #[source]
        source: SetError,
    },
    /// `ros config validate` found errors.
    #[error("{origin}: {}:{}", counts(.diagnostics), listed(.diagnostics))]
    Invalid {
        /// The file, or `<stdin>`.
        origin: String,
        /// Every problem, warnings too.
        diagnostics: Vec<Diagnostic>,
    },
    /// An existing `export -o` target could not be restricted to mode 0600 before writing.
    #[error("restricting {path} to mode 0600 before writing private config: {source}")]
    RestrictMode {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file could not be replaced.
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    /// The config could not be written as YAML.
    #[error("{what}: {source}")]
    ToYaml {
        /// What was being written.
        what: String,
        /// Why.
        #[source]
        source: ToYamlError,
    },
    /// Standard output could not be written.
    #[error("writing standard output: {source}")]
    WriteStdout {
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl ConfigError {
    /// The documented exit code for this error.
    pub fn status(&self) -> ExitStatus {
        match self {
            ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ExitStatus::NotFound
            }
            ConfigError::KeyNotFound { .. } => ExitStatus::NotFound,
            ConfigError::BadKey(_) => ExitStatus::Usage,
            ConfigError::User(e) if e.is_invalid_config() => ExitStatus::InvalidConfig,
            ConfigError::NotUtf8 { .. }
            | ConfigError::Refused { .. }
            | ConfigError::SetImpossible { .. }
            | ConfigError::Invalid { .. } => ExitStatus::InvalidConfig,
            ConfigError::Read { .. }
            | ConfigError::ReadStdin { .. }
            | ConfigError::User(_)
            | ConfigError::RestrictMode { .. }
            | ConfigError::Write(_)
            | ConfigError::ToYaml { .. }
            | ConfigError::WriteStdout { .. } => ExitStatus::Failure,
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::new(e.status(), e.to_string())
    }
}

/// How a diagnostic is shown: its severity, then the library's `file:line:column: key:
/// message` unchanged, so that editors and scripts can still split it on colons.
fn shown(d: &Diagnostic) -> String {
    format!("{}: {d}", d.severity)
}

fn listed(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("\n  {}", shown(d)))
        .collect()
}

fn counts(diagnostics: &[Diagnostic]) -> String {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    )
}

fn execute(root: &Path, command: ConfigCommand, io: &mut Io<'_>) -> Result<(), ConfigError> {
    match command {
        ConfigCommand::Get { key, verbose } => get(root, key.as_deref(), verbose, io),
        ConfigCommand::Set { key, value } => set(root, &key, &value, io),
        ConfigCommand::Merge { input } => merge(root, input.as_deref(), io),
        ConfigCommand::Export {
            output,
            private,
            full,
            verbose,
        } => export(root, output.as_deref(), private, full, verbose, io),
        ConfigCommand::Validate { input } => validate(input.as_deref(), io),
    }
}

fn get(root: &Path, key: Option<&str>, verbose: bool, io: &mut Io<'_>) -> Result<(), ConfigError> {
    if let Some(key) = key {
        // `ros_config::get` answers "absent" for a malformed key; say what is wrong instead.
        KeyPath::parse(key)?;
    }
    let loaded = load_merged(root)?;
    report_load_problems(&loaded, verbose, io);
    let text = match key {
        None => to_yaml(
            &ros_config::export(&loaded.value, false),
            "the merged config",
        )?,
        Some(key) => match ros_config::get(&loaded.value, key) {
            Some(value) => render(value, key)?,
            None => {
                return Err(ConfigError::KeyNotFound {
                    key: key.to_string(),
                })
            }
        },
    };
    io.print(&text)
}

fn set(root: &Path, key: &str, value_text: &str, io: &mut Io<'_>) -> Result<(), ConfigError> {
    let mut user = UserConfig::read(root)?;
    user.set(key, value_text).map_err(|e| match e {
        SetError::Key(e) => ConfigError::BadKey(e),
        SetError::Invalid { diagnostics, .. } => ConfigError::Refused {
            action: format!("setting `{key}`"),
            path: user.path().to_path_buf(),
            diagnostics,
        },
        other => ConfigError::SetImpossible {
            path: user.path().to_path_buf(),
            source: other,
        },
    })?;
    if written(&user, io)? {
        notify_config_changed(root);
    }
    let value = user.value();
    // A higher layer (a drop-in, the command line) may still win; say so rather than let
    // the user wonder why `get` shows something else. Best effort: this is only a hint.
    if let Ok(merged) = load_merged(root) {
        if ros_config::get(&merged.value, key) != ros_config::get(value, key) {
            io.note(format_args!(
                "note: `{key}` is overridden by a higher layer ({}/*.yml or {}); \
                 `ros config get {key}` shows the value in effect",
                paths::DROP_IN_DIR,
                paths::KERNEL_CMDLINE
            ));
        }
    }
    Ok(())
}

fn merge(root: &Path, input: Option<&Path>, io: &mut Io<'_>) -> Result<(), ConfigError> {
    let (origin, text) = read_input(input, io)?;
    let user_path = paths::under(root, paths::USER_CONFIG);
    let action = format!("merging {origin}");
    let diagnostics = ros_config::validate_text(&origin, &text, Mode::Strict);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(ConfigError::Refused {
            action,
            path: user_path,
            diagnostics,
        });
    }
    for d in &diagnostics {
        io.note(shown(d));
    }
    let incoming = Layer::parse(origin.as_str(), &text)
        .map_err(|d| ConfigError::Refused {
            action: action.clone(),
            path: user_path.clone(),
            diagnostics: vec![d],
        })?
        .value();
    let mut user = UserConfig::read(root)?;
    // The input is valid on its own, but combined with what the user file already has it
    // may not be; only errors the file did not have before block the merge.
    user.merge(incoming)
        .map_err(|diagnostics| ConfigError::Refused {
            action,
            path: user.path().to_path_buf(),
            diagnostics,
        })?;
    if written(&user, io)? {
        notify_config_changed(root);
    }
    Ok(())
}

/// Write the edited user config; true when the file changed (a note when its comments
/// went with the rewrite).
fn written(user: &UserConfig, io: &mut Io<'_>) -> Result<bool, ConfigError> {
    match user.write()? {
        Written::Unchanged => Ok(false),
        Written::Replaced { comments_dropped } => {
            if comments_dropped {
                io.note(format_args!(
                    "note: {}: comments are not kept when `ros config` rewrites the file",
                    user.path().display()
                ));
            }
            Ok(true)
        }
    }
}

fn export(
    root: &Path,
    output: Option<&Path>,
    private: bool,
    full: bool,
    verbose: bool,
    io: &mut Io<'_>,
) -> Result<(), ConfigError> {
    let (value, what) = if full {
        let loaded = load_merged(root)?;
        report_load_problems(&loaded, verbose, io);
        (loaded.value, "the merged config")
    } else {
        (UserConfig::read(root)?.value().clone(), "the user config")
    };
    let text = to_yaml(&ros_config::export(&value, private), what)?;
    match output {
        None => io.print(&text),
        Some(path) => write_private(path, &text),
    }
}

fn validate(input: Option<&Path>, io: &mut Io<'_>) -> Result<(), ConfigError> {
    let (origin, text) = read_input(input, io)?;
    let diagnostics = ros_config::validate_text(&origin, &text, Mode::Strict);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(ConfigError::Invalid {
            origin,
            diagnostics,
        });
    }
    for d in &diagnostics {
        io.note(shown(d));
    }
    Ok(())
}

/// Every layer under `root` plus `<root>/proc/cmdline` (absent: empty), as PID 1 sees them.
fn load_merged(root: &Path) -> Result<Loaded, ConfigError> {
    ros_config::load_system(root).map_err(|source| ConfigError::Read {
        path: paths::under(root, paths::KERNEL_CMDLINE),
        source,
    })
}

/// Errors always (a value the user wrote was dropped, so what is shown is not what they
/// wrote); warnings only when asked.
fn report_load_problems(loaded: &Loaded, verbose: bool, io: &mut Io<'_>) {
    for d in &loaded.diagnostics {
        if verbose || d.is_error() {
            io.note(shown(d));
        }
    }
}

/// Scalars plainly (a string as its text, so `$(ros config get hostname)` just works),
/// everything else as YAML.
fn render(value: &Value, key: &str) -> Result<String, ConfigError> {
    Ok(match ros_config::scalar_text(value) {
        Some(s) if s.ends_with('\n') => s,
        Some(s) => s + "\n",
        None => to_yaml(value, &format!("`{key}`"))?,
    })
}

fn to_yaml(value: &Value, what: &str) -> Result<String, ConfigError> {
    ros_config::to_yaml(value).map_err(|source| ConfigError::ToYaml {
        what: what.to_string(),
        source,
    })
}

/// Errors a tree would have as the user config on its own (strict mode).
/// `-i FILE`, or standard input when absent or `-`: its name for diagnostics and its text.
/// Larger inputs than the library accepts are cut one byte over the limit, so that the
/// library refuses them with its own message instead of this reading without bound.
fn read_input(input: Option<&Path>, io: &mut Io<'_>) -> Result<(String, String), ConfigError> {
    let limit = u64::try_from(MAX_FILE_BYTES + 1).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    let origin = match input {
        Some(path) if path.as_os_str() != STDIN_ARG => {
            let read = fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes));
            read.map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            path.display().to_string()
        }
        _ => {
            if io.stdin_is_tty {
                io.note("reading a cloud-config from standard input (end with Ctrl-D)");
            }
            (&mut io.stdin)
                .take(limit)
                .read_to_end(&mut bytes)
                .map_err(|source| ConfigError::ReadStdin { source })?;
            STDIN_ORIGIN.to_string()
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::NotUtf8 {
        origin: origin.clone(),
        valid_up_to: e.utf8_error().valid_up_to(),
    })?;
    Ok((origin, text))
}

/// `export -o FILE`: atomically, and never readable by others, even when FILE already
/// existed with a wider mode (`write_atomic` would keep that mode). Narrowing the old file
/// first closes the window in which the new content would be visible with it.
fn write_private(path: &Path, text: &str) -> Result<(), ConfigError> {
    match fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o7777 != SECRET_MODE => {
            fs::set_permissions(path, fs::Permissions::from_mode(SECRET_MODE)).map_err(
                |source| ConfigError::RestrictMode {
                    path: path.to_path_buf(),
                    source,
                },
            )?;
        }
        _ => {}
    }
    ros_config::write_atomic(path, text.as_bytes(), SECRET_MODE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: &str = include_str!("../../configs/os-config.yml");

    struct Run {
        result: Result<(), ConfigError>,
        out: String,
        err: String,
    }

    fn run_in(root: &Path, command: ConfigCommand, stdin: &str) -> Run {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input = stdin.as_bytes();
        let mut io = Io {
            stdin: &mut input,
            stdin_is_tty: false,
            out: &mut out,
            err: &mut err,
        };
        let result = execute(root, command, &mut io);
        Run {
            result,
            out: String::from_utf8(out).unwrap(),
            err: String::from_utf8(err).unwrap(),
        }
    }

    fn root_with_defaults() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = paths::under(dir.path(), paths::OS_CONFIG);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, DEFAULTS).unwrap();
        dir
    }

    fn get_cmd(key: &str) -> ConfigCommand {
        ConfigCommand::Get {
            key: Some(key.into()),
            verbose: false,
        }
    }

    #[test]
    fn scalars_print_plainly_and_structures_as_yaml() {
        let y = |t: &str| {
            Layer::parse("t", &format!("v: {t}"))
                .unwrap()
                .value()
                .get("v")
                .cloned()
                .unwrap()
        };
        let cases = [
            ("rancher", "rancher\n"),
            ("60", "60\n"),
            ("true", "true\n"),
            ("'1.0'", "1.0\n"),
            ("\"two\\nlines\\n\"", "two\nlines\n"),
            ("[a, b]", "- a\n- b\n"),
            ("{x: 1}", "x: 1\n"),
        ];
        for (yaml, want) in cases {
            assert_eq!(render(&y(yaml), "v").unwrap(), want, "{yaml}");
        }
    }

    #[test]
    fn every_error_maps_to_its_documented_exit_code() {
        let io_err = |kind| io::Error::new(kind, "x");
        let diags = Vec::new;
        let cases = [
            (
                ConfigError::KeyNotFound { key: "a".into() },
                ExitStatus::NotFound,
            ),
            (
                ConfigError::Read {
                    path: "f".into(),
                    source: io_err(io::ErrorKind::NotFound),
                },
                ExitStatus::NotFound,
            ),
            (
                ConfigError::Read {
                    path: "f".into(),
                    source: io_err(io::ErrorKind::PermissionDenied),
                },
                ExitStatus::Failure,
            ),
            (
                ConfigError::BadKey(KeyPath::parse("a..b").unwrap_err()),
                ExitStatus::Usage,
            ),
            (
                ConfigError::Refused {
                    action: "x".into(),
                    path: "f".into(),
                    diagnostics: diags(),
                },
                ExitStatus::InvalidConfig,
            ),
            (
                ConfigError::Invalid {
                    origin: "f".into(),
                    diagnostics: diags(),
                },
                ExitStatus::InvalidConfig,
            ),
            (
                ConfigError::WriteStdout {
                    source: io_err(io::ErrorKind::Other),
                },
                ExitStatus::Failure,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(CliError::from(err).status, want);
        }
    }

    #[test]
    fn header_kept_and_comment_loss_noted() {
        let root = tempfile::tempdir().unwrap();
        let path = paths::under(root.path(), paths::USER_CONFIG);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "#cloud-config\nhostname: a\n").unwrap();
        let set = |key: &str, value: &str| ConfigCommand::Set {
            key: key.into(),
            value: value.into(),
        };
        let r = run_in(root.path(), set("hostname", "b"), "");
        r.result.unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "#cloud-config\nhostname: b\n"
        );
        assert!(!r.err.contains("comments"), "{}", r.err);

        fs::write(&path, "# mine\nhostname: a\n").unwrap();
        let r = run_in(root.path(), set("hostname", "c"), "");
        r.result.unwrap();
        assert!(r.err.contains("comments are not kept"), "{}", r.err);
        assert_eq!(fs::read_to_string(&path).unwrap(), "hostname: c\n");
    }

    #[test]
    fn setting_the_same_value_leaves_the_file_alone() {
        let root = tempfile::tempdir().unwrap();
        let path = paths::under(root.path(), paths::USER_CONFIG);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = "# keep me\nhostname:   a\n";
        fs::write(&path, text).unwrap();
        let cmd = ConfigCommand::Set {
            key: "hostname".into(),
            value: "a".into(),
        };
        run_in(root.path(), cmd, "").result.unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn set_overridden_by_the_command_line_says_so() {
        let root = root_with_defaults();
        let cmdline = paths::under(root.path(), paths::KERNEL_CMDLINE);
        fs::create_dir_all(cmdline.parent().unwrap()).unwrap();
        fs::write(&cmdline, "quiet rancher.ssh.port=2022\n").unwrap();
        let cmd = ConfigCommand::Set {
            key: "rancher.ssh.port".into(),
            value: "2222".into(),
        };
        let r = run_in(root.path(), cmd, "");
        r.result.unwrap();
        assert!(r.err.contains("overridden"), "{}", r.err);
        let r = run_in(root.path(), get_cmd("rancher.ssh.port"), "");
        assert_eq!(r.out, "2022\n");
    }

    #[test]
    fn merge_is_not_blocked_by_errors_the_user_file_already_had() {
        let root = tempfile::tempdir().unwrap();
        let path = paths::under(root.path(), paths::USER_CONFIG);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "rancher:\n  ssh:\n    port: soon\n").unwrap();
        let r = run_in(
            root.path(),
            ConfigCommand::Merge { input: None },
            "hostname: merged\n",
        );
        r.result.unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "rancher:\n  ssh:\n    port: soon\nhostname: merged\n"
        );
    }

    #[test]
    fn malformed_key_is_a_usage_error_naming_it() {
        let root = root_with_defaults();
        let err = run_in(root.path(), get_cmd("rancher..ssh"), "")
            .result
            .unwrap_err();
        assert_eq!(err.status(), ExitStatus::Usage);
        assert!(err.to_string().contains("rancher..ssh"), "{err}");
    }

    #[test]
    fn export_to_an_existing_wide_file_narrows_it() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("backup.yml");
        fs::write(&out, "old").unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o644)).unwrap();
        let cmd = ConfigCommand::Export {
            output: Some(out.clone()),
            private: true,
            full: false,
            verbose: false,
        };
        let r = run_in(root.path(), cmd, "");
        r.result.unwrap();
        assert_eq!(r.out, "");
        assert_eq!(fs::read_to_string(&out).unwrap(), "{}\n");
        let mode = fs::metadata(&out).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn validate_passes_warnings_through_and_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let r = run_in(
            dir.path(),
            ConfigCommand::Validate { input: None },
            "hostname: a\nusers: [bob]\n",
        );
        r.result.unwrap();
        assert!(
            r.err.starts_with("warning: <stdin>:2:1: users:"),
            "{}",
            r.err
        );
    }
}
