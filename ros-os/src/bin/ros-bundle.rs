//! `ros-bundle`: make and check upgrade bundles on the build host (initramfs/build.sh).
//!
//! ```text
//! ros-bundle keygen --key FILE [--public FILE]      a signing key (PKCS#8, 0600), once
//! ros-bundle public --key FILE --out FILE.pub        its public half, for trusted-keys/
//! ros-bundle pack --key FILE --version V --kernel F --initrd F --root F --manifest F --out FILE
//! ros-bundle verify --keys DIR FILE                  check a bundle as `ros os upgrade` does
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ros_os::bundle;

#[derive(Debug, Parser)]
#[command(name = "ros-bundle", about = "Make and check rOS upgrade bundles")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Make a signing key, unless FILE exists already.
    Keygen {
        #[arg(long)]
        key: PathBuf,
    },
    /// Write the public key of a signing key, as a trusted-keys file.
    Public {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a signed bundle.
    Pack {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        version: String,
        #[arg(long, default_value = std::env::consts::ARCH)]
        arch: String,
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initrd: PathBuf,
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a live medium's syslinux (or isolinux) config, one entry `ros`, to stdout.
    SyslinuxCfg {
        /// What it boots, for its first line.
        #[arg(long)]
        comment: String,
        /// The initrds, comma-separated.
        #[arg(long)]
        initrd: String,
        /// The kernel command line.
        #[arg(long)]
        append: String,
    },
    /// Check a bundle against the keys in DIR.
    Verify {
        #[arg(long)]
        keys: PathBuf,
        bundle: PathBuf,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Cmd::Keygen { key } => {
            if key.exists() {
                return Ok(());
            }
            if let Some(dir) = key.parent() {
                fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let pkcs8 = bundle::generate_key().map_err(|e| e.to_string())?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key)
                .map_err(|e| format!("{}: {e}", key.display()))?;
            f.write_all(&pkcs8)
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("{}: {e}", key.display()))?;
            println!("ros-bundle: new signing key {}", key.display());
            Ok(())
        }
        Cmd::Public { key, out } => {
            let pkcs8 = read(&key)?;
            let public =
                bundle::public_of(&pkcs8, &key.display().to_string()).map_err(|e| e.to_string())?;
            let line = bundle::public_key_line(&public, &format!("from {}", key.display()));
            fs::write(&out, line).map_err(|e| format!("{}: {e}", out.display()))
        }
        Cmd::Pack {
            key,
            version,
            arch,
            kernel,
            initrd,
            root,
            manifest,
            out,
        } => {
            let pkcs8 = read(&key)?;
            let tmp = out.with_extension("upgrade.tmp");
            let file = fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            let parts: [(&str, &Path); 4] = [
                ("vmlinuz", &kernel),
                ("initrd", &initrd),
                ("root.img", &root),
                ("manifest", &manifest),
            ];
            let meta = bundle::pack(
                std::io::BufWriter::new(file),
                &version,
                &arch,
                &parts,
                &pkcs8,
            )
            .map_err(|e| e.to_string())?;
            fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
            println!(
                "ros-bundle: {} ({} for {}, key {})",
                out.display(),
                meta.version,
                meta.arch,
                meta.key
            );
            Ok(())
        }
        Cmd::SyslinuxCfg {
            comment,
            initrd,
            append,
        } => {
            let entry = ros_os::slots::SyslinuxEntry {
                label: "ros".into(),
                kernel: "/boot/vmlinuz".into(),
                initrd,
                append,
            };
            print!(
                "{}",
                ros_os::slots::syslinux_config(
                    &format!("{comment} (initramfs/build.sh)."),
                    "ros",
                    &[entry]
                )
            );
            Ok(())
        }
        Cmd::Verify { keys, bundle: path } => {
            let keys = bundle::trusted_keys(&keys).map_err(|e| e.to_string())?;
            let file = fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let meta = bundle::read(
                std::io::BufReader::new(file),
                &keys,
                std::env::consts::ARCH,
                &mut bundle::Check,
            )
            .map_err(|e| format!("{}: {e}", path.display()))?;
            println!(
                "{}: {} for {}, signed by {}",
                path.display(),
                meta.version,
                meta.arch,
                meta.key
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ros-bundle: {e}");
            ExitCode::FAILURE
        }
    }
}
