//! `runc` in the user Docker engine: `ros`, by `argv[0]`, in front of crun. Docker confines
//! an unprivileged container's `/proc` (it masks `/proc/kcore`, `/proc/keys`, ...) but not
//! `/proc/cmdline`, where the kernel shows `rancher.password=` to every process. For a
//! container whose `/proc` Docker confines, this binds the kernel line with its secrets
//! hidden over `/proc/cmdline` (PID 1's copy, the one the unprivileged system services
//! see, which the docker service binds), then runs crun with the same arguments. A `--privileged` container (or
//! `--security-opt systempaths=unconfined`) has no masked paths and is left alone: it is
//! root on the host, and could read `/proc/1/root/proc/cmdline` anyway.

use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::CliError;

/// The name by which `ros` acts as the engine's runc (the symlink
/// `/usr/lib/ros/engine/runc`, first on dockerd's PATH).
pub const ARGV0: &str = "runc";
/// Where the user engine's binaries are (initramfs/build.sh puts them there; the docker
/// service binds the directory and puts it first on dockerd's PATH).
pub const ENGINE_DIR: &str = "/usr/lib/ros/engine";
/// The real runtime, beside the symlink, in [`ENGINE_DIR`].
const CRUN: &str = "/usr/lib/ros/engine/crun";
/// The kernel line with its secrets hidden, as PID 1 wrote it
/// (`ros_config::paths::REDACTED_CMDLINE`), where services/docker.yml binds it.
const REDACTED_CMDLINE: &str = "/etc/ros/kernel-cmdline";
/// runc's global options that take a value (`--root DIR`, ...): the subcommand comes after.
const VALUED_GLOBALS: [&str; 5] = ["root", "log", "log-format", "criu", "rootless"];

/// Confine `/proc/cmdline` when the arguments create a container, then become crun.
pub fn run() -> Result<(), CliError> {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| ARGV0.into());
    let args: Vec<OsString> = args.collect();
    if let Some(bundle) = created_bundle(&args) {
        confine(&bundle, Path::new(REDACTED_CMDLINE)).map_err(|e| {
            CliError::failure(format!(
                "{}: hiding the kernel line's secrets: {e}",
                bundle.display()
            ))
        })?;
    }
    let err = Command::new(CRUN).arg0(argv0).args(&args).exec();
    Err(CliError::failure(format!("running {CRUN}: {err}")))
}

/// The bundle directory of a `create` or `run` command line (runc's default: the current
/// directory), or `None` for every other command.
fn created_bundle(args: &[OsString]) -> Option<PathBuf> {
    let mut rest = args.iter().map(|a| a.to_string_lossy());
    // Global options, then the subcommand.
    let command = loop {
        let arg = rest.next()?;
        match option_name(&arg) {
            Some((name, None)) if VALUED_GLOBALS.contains(&name) => {
                rest.next()?;
            }
            Some(_) => {}
            None => break arg,
        }
    };
    if command != "create" && command != "run" {
        return None;
    }
    let mut bundle = None;
    while let Some(arg) = rest.next() {
        match option_name(&arg) {
            Some(("b" | "bundle", Some(value))) => bundle = Some(value.to_string()),
            Some(("b" | "bundle", None)) => bundle = rest.next().map(|v| v.into_owned()),
            _ => {}
        }
    }
    let bundle = PathBuf::from(bundle.unwrap_or_else(|| ".".into()));
    Some(if bundle.is_absolute() {
        bundle
    } else {
        std::env::current_dir().map_or(bundle.clone(), |cwd| cwd.join(&bundle))
    })
}

/// `("name", value)` of `-name`, `--name` or `--name=value` (urfave/cli, runc's parser,
/// takes one dash or two); `None` for an argument that is not an option.
fn option_name(arg: &str) -> Option<(&str, Option<&str>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if body.is_empty() {
        return None;
    }
    Some(match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    })
}

/// Bind `redacted` over `/proc/cmdline` in `bundle/config.json`, when that container's
/// `/proc` is confined. Without the file (PID 1 could not write it), an error: the
/// container is not started unconfined.
fn confine(bundle: &Path, redacted: &Path) -> Result<(), String> {
    let spec_path = bundle.join("config.json");
    let text = fs::read(&spec_path).map_err(|e| format!("reading config.json: {e}"))?;
    let mut spec: Value =
        serde_json::from_slice(&text).map_err(|e| format!("parsing config.json: {e}"))?;
    if !add_cmdline_mount(&mut spec, redacted) {
        return Ok(());
    }
    if !fs::metadata(redacted).is_ok_and(|m| m.is_file()) {
        return Err(format!(
            "{} is not a file (PID 1 writes it at boot)",
            redacted.display()
        ));
    }
    let bytes = serde_json::to_vec(&spec).map_err(|e| format!("config.json: {e}"))?;
    ros_config::write_atomic(&spec_path, &bytes, 0o600)
        .map_err(|e| format!("writing config.json: {e}"))
}

/// Append the bind of `file` over `/proc/cmdline` to an OCI spec whose `linux.maskedPaths`
/// is not empty (mounts are made in order, so it lands on the container's own `/proc`).
/// False, and `spec` unchanged, for an unconfined `/proc` or one that already has a mount
/// there.
fn add_cmdline_mount(spec: &mut Value, file: &Path) -> bool {
    let confined = spec
        .pointer("/linux/maskedPaths")
        .and_then(Value::as_array)
        .is_some_and(|paths| !paths.is_empty());
    let taken = spec
        .pointer("/mounts")
        .and_then(Value::as_array)
        .is_some_and(|mounts| {
            mounts
                .iter()
                .any(|m| m.get("destination").and_then(Value::as_str) == Some("/proc/cmdline"))
        });
    if !confined || taken {
        return false;
    }
    let mount = json!({
        "destination": "/proc/cmdline",
        "type": "bind",
        "source": file.to_string_lossy(),
        "options": ["bind", "ro", "nosuid", "noexec", "nodev"],
    });
    match spec.get_mut("mounts").and_then(Value::as_array_mut) {
        Some(mounts) => mounts.push(mount),
        None => spec["mounts"] = json!([mount]),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn finds_the_bundle_of_create_and_run_only() {
        let shim = "--root /run/containerd/runc/moby --log /b/log.json --log-format json \
                    create --bundle /b --pid-file /b/init.pid abc";
        assert_eq!(created_bundle(&args(shim)), Some(PathBuf::from("/b")));
        assert_eq!(
            created_bundle(&args("--debug run -b=/x id")),
            Some(PathBuf::from("/x"))
        );
        assert_eq!(
            created_bundle(&args("-root /r create -bundle /y id")),
            Some(PathBuf::from("/y"))
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(created_bundle(&args("create id")), Some(cwd.join(".")));
        for other in [
            "--root /r start abc",
            "delete abc",
            "--version",
            "features",
            "",
        ] {
            assert_eq!(created_bundle(&args(other)), None, "{other}");
        }
        // A global option's value that reads like a command is not the command.
        assert_eq!(created_bundle(&args("--log create state abc")), None);
    }

    #[test]
    fn binds_the_redacted_line_only_over_a_confined_proc() {
        let file = Path::new("/b/ros-cmdline");
        let mut confined = json!({
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"maskedPaths": ["/proc/kcore"]},
        });
        assert!(add_cmdline_mount(&mut confined, file));
        let mounts = confined["mounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[1]["destination"], "/proc/cmdline");
        assert_eq!(mounts[1]["source"], "/b/ros-cmdline");
        assert_eq!(mounts[1]["options"][1], "ro");
        // Twice changes nothing: the mount is there.
        assert!(!add_cmdline_mount(&mut confined, file));

        // --privileged: no masked paths, left as it is.
        for linux in [json!({"maskedPaths": []}), json!({})] {
            let mut privileged = json!({"mounts": [], "linux": linux});
            let before = privileged.clone();
            assert!(!add_cmdline_mount(&mut privileged, file));
            assert_eq!(privileged, before);
        }
        // No mounts at all yet: the list is made.
        let mut bare = json!({"linux": {"maskedPaths": ["/proc/keys"]}});
        assert!(add_cmdline_mount(&mut bare, file));
        assert_eq!(bare["mounts"][0]["destination"], "/proc/cmdline");
    }

    #[test]
    fn confine_rewrites_the_spec_to_bind_the_redacted_line() {
        let dir = std::env::temp_dir().join(format!("ros-engine-runc-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let redacted = dir.join("kernel-cmdline");
        let spec = json!({"ociVersion": "1.0.2", "process": {"args": ["sh"]},
                          "mounts": [], "linux": {"maskedPaths": ["/proc/kcore"]}});
        let spec = serde_json::to_vec(&spec).unwrap();
        fs::write(dir.join("config.json"), &spec).unwrap();
        // No redacted line to bind: refused, the spec untouched.
        assert!(confine(&dir, &redacted)
            .unwrap_err()
            .contains("is not a file"));
        assert_eq!(fs::read(dir.join("config.json")).unwrap(), spec);
        fs::write(&redacted, b"rancher.password=(hidden)").unwrap();
        confine(&dir, &redacted).unwrap();
        let written: Value =
            serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(written["process"]["args"][0], "sh", "other fields kept");
        assert_eq!(
            written["mounts"][0]["source"],
            redacted.to_string_lossy().as_ref()
        );
        // Unreadable or broken specs are errors (the container is not started unconfined).
        fs::write(dir.join("config.json"), b"{not json").unwrap();
        assert!(confine(&dir, &redacted)
            .unwrap_err()
            .contains("parsing config.json"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
