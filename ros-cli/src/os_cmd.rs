//! `ros os`: the running release (`version`, `version --manifest`) and power.
//!
//! The release and the build's inputs come from the image's manifest, written by
//! `initramfs/build.sh` (one tab-separated line per input: kind, name, version, sha256,
//! detail); nothing here is compiled in, so a rebuilt image never shows a stale version.

use std::io::{self, Write};
use std::path::Path;

use clap::Subcommand;
use ros_config::paths;

use crate::exit::{CliError, ExitStatus};
use crate::host::{self, release, running_release};
use crate::power;

mod upgrade;

/// `ros os ...`.
#[derive(Debug, Subcommand)]
pub enum OsCommand {
    /// Write a signed upgrade bundle to the inactive slot and boot it once, on trial.
    ///
    /// The bundle's signature and every part's hash are checked before anything is
    /// written. The new slot is tried at the next boot only; it becomes the default once
    /// that boot passes its health check (boot complete, every enabled service up), and
    /// otherwise the running slot boots again by itself, with the reason kept for `ros os
    /// list`. The cloud-config, logs and both engines' data are shared by the slots.
    Upgrade {
        /// The bundle: a file (or a disk holding one) or an http(s) URL.
        #[arg(short = 'i', long = "image", value_name = "FILE|URL")]
        image: String,
        /// Do not reboot into the trial (it runs at the next boot).
        #[arg(long)]
        no_reboot: bool,
        /// Write it even if it is the release running now or was rolled back before.
        #[arg(short, long)]
        force: bool,
    },
    /// Each slot's release, which runs, which boots next, which is known good, and how
    /// the last upgrade ended.
    List {
        /// `table` (default) or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Stop the console's warning about the last rollback.
        #[arg(long)]
        acknowledge: bool,
    },
    /// Boot the other slot from now on (only one that booted healthy), or cancel an
    /// upgrade armed and not yet booted.
    Rollback,
    /// Print the running rOS release (from the image's build manifest).
    Version {
        /// Print the whole build manifest instead: every Debian package (name, version,
        /// sha256 of the .deb), every source package built from source with its toolchain
        /// and the static libraries linked in, the Rust toolchain and Cargo.lock's hash.
        #[arg(long)]
        manifest: bool,
    },
    /// Shut down cleanly and power off (same as `poweroff`).
    Poweroff,
    /// Shut down cleanly and reboot (same as `reboot`).
    Reboot,
    /// Shut down cleanly and halt (same as `halt`).
    Halt,
}

/// Run `ros os` against `/` (or `$ROS_ROOT`).
pub fn run(command: OsCommand) -> Result<(), CliError> {
    let root = host::root();
    let running = || running_release(&root);
    match command {
        OsCommand::Version { manifest } => version(&root, manifest, &mut io::stdout().lock()),
        OsCommand::Upgrade {
            image,
            no_reboot,
            force,
        } => {
            upgrade::upgrade(&root, running()?, &image, force)?;
            if no_reboot {
                println!("ros os upgrade: not rebooting (--no-reboot): the trial is the next boot");
                Ok(())
            } else {
                power::request(ros_control::PowerAction::Reboot)
            }
        }
        OsCommand::List {
            format,
            acknowledge,
        } => upgrade::list(
            &root,
            running()?,
            format == "json",
            acknowledge,
            &mut io::stdout().lock(),
        ),
        OsCommand::Rollback => upgrade::rollback(&root, running()?),
        OsCommand::Poweroff => power::request(ros_control::PowerAction::PowerOff),
        OsCommand::Reboot => power::request(ros_control::PowerAction::Reboot),
        OsCommand::Halt => power::request(ros_control::PowerAction::Halt),
    }
}

fn version(root: &Path, whole: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let path = paths::under(root, paths::MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let status = if e.kind() == io::ErrorKind::NotFound {
            ExitStatus::NotFound
        } else {
            ExitStatus::Failure
        };
        CliError::new(status, format!("reading {}: {e}", path.display()))
    })?;
    let written = if whole {
        out.write_all(text.as_bytes())
    } else {
        let v = release(&text)
            .ok_or_else(|| CliError::failure(format!("{}: no `release` line", path.display())))?;
        match upgrade::running_slot(root) {
            Some(slot) => writeln!(out, "v{v} (slot {slot})"),
            None => writeln!(out, "v{v}"),
        }
    };
    written.map_err(|e| CliError::failure(format!("writing to standard output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "# rOS build manifest\n\
        release\tros\t0.2.0+abc\t-\tcommit abc\n\
        deb\tlinux-image-6.1.0-57-amd64\t6.1.192-3\t14d2\tarch=amd64\n";

    fn root_with(manifest: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(m) = manifest {
            let path = paths::under(dir.path(), paths::MANIFEST);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, m).unwrap();
        }
        dir
    }

    #[test]
    fn version_is_the_manifests_release() {
        let root = root_with(Some(MANIFEST));
        let mut out = Vec::new();
        version(root.path(), false, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "v0.2.0+abc\n");
    }

    #[test]
    fn manifest_flag_prints_the_whole_manifest() {
        let root = root_with(Some(MANIFEST));
        let mut out = Vec::new();
        version(root.path(), true, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), MANIFEST);
    }

    #[test]
    fn missing_manifest_is_not_found_and_names_the_file() {
        let root = root_with(None);
        let err = version(root.path(), false, &mut Vec::new()).unwrap_err();
        assert_eq!(err.status, ExitStatus::NotFound);
        assert!(
            err.message.contains("usr/share/ros/manifest"),
            "{}",
            err.message
        );
    }

    #[test]
    fn manifest_without_release_is_an_error() {
        let root = root_with(Some("deb\tx\t1\t-\t-\n"));
        let err = version(root.path(), false, &mut Vec::new()).unwrap_err();
        assert_eq!(err.status, ExitStatus::Failure);
        assert!(err.message.contains("no `release` line"), "{}", err.message);
    }
}
