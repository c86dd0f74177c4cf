//! `ros-image` CLI: a thin wrapper that parses flags and calls the `ros_image` library; no image logic here.

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use ros_image::{add_to_store, build_archive, inspect_archive, ImageSpec};
use std::path::PathBuf;
use std::process::ExitCode;

/// Build and inspect reproducible OCI image archives (for `ctr import` / `docker load`).
#[derive(Debug, Parser)]
#[command(name = "ros-image", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an OCI image archive from layer directories and print
    /// `NAME FILE <size> KiB manifest=sha256:...`.
    Build(BuildArgs),
    /// Verify an OCI image archive (digests, sizes, diff_ids) and print its name, digests and layers.
    Inspect {
        /// The archive to read.
        archive: PathBuf,
    },
    /// Verify an OCI image archive and add it to an unpacked image store (layers as
    /// directories, for the system runtime's overlay roots); print `NAME <n> layers unpacked`.
    Store {
        /// The store directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The archive to add.
        archive: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// Image reference, stored exactly as given (e.g. ros/console:0.1.0).
    #[arg(long)]
    name: String,
    /// Layer directory; repeat for more layers, base first. Its contents become one layer.
    #[arg(long = "layer", value_name = "DIR", required = true)]
    layers: Vec<PathBuf>,
    /// Entrypoint, one word per flag (--entrypoint /bin/sh --entrypoint -c), or the whole list as
    /// a single JSON array (--entrypoint '["/bin/sh","-c"]'). A value starting with '[' is always
    /// read as JSON, and then it must be the only --entrypoint.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// Default command, in the same two forms as --entrypoint.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// Environment variable KEY=VALUE; repeat for more.
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory (absolute).
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// Output archive path.
    #[arg(long, value_name = "FILE.tar")]
    out: PathBuf,
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ros-image: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(args) => build(args),
        Command::Inspect { archive } => inspect(&archive),
        Command::Store { dir, archive } => {
            let stored = add_to_store(&archive, &dir)?;
            println!("{} {} layers unpacked", stored.name, stored.unpacked.len());
            Ok(())
        }
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let spec = ImageSpec {
        entrypoint: argv_words("--entrypoint", &args.entrypoint)?,
        cmd: argv_words("--cmd", &args.cmd)?,
        name: args.name,
        env: args.env,
        working_dir: args.workdir,
        layers: args.layers,
    };
    let built = build_archive(&spec, &args.out)?;
    println!(
        "{} {} {} KiB manifest={}",
        spec.name,
        args.out.display(),
        built.archive_size.div_ceil(1024),
        built.manifest_digest
    );
    Ok(())
}

fn inspect(archive: &std::path::Path) -> anyhow::Result<()> {
    let report = inspect_archive(archive)?;
    let json = |v: &Option<Vec<String>>| -> anyhow::Result<String> {
        Ok(match v {
            Some(v) => serde_json::to_string(v)?,
            None => "-".to_owned(),
        })
    };
    let config = report.config.config().clone().unwrap_or_default();
    println!("name: {}", report.name.as_deref().unwrap_or("-"));
    println!(
        "archive: {} ({} bytes)",
        archive.display(),
        report.archive_size
    );
    println!("manifest: {}", report.manifest_digest);
    println!("config: {}", report.config_digest);
    println!(
        "platform: {}/{}",
        report.config.os(),
        report.config.architecture()
    );
    println!("entrypoint: {}", json(config.entrypoint())?);
    println!("cmd: {}", json(config.cmd())?);
    println!("env: {}", json(config.env())?);
    println!(
        "workdir: {}",
        config.working_dir().as_deref().unwrap_or("-")
    );
    println!("layers: {}", report.layers.len());
    for layer in &report.layers {
        println!(
            "  {} {} KiB ({} KiB uncompressed) diff_id={}",
            layer.digest,
            layer.size.div_ceil(1024),
            layer.uncompressed_size.div_ceil(1024),
            layer.diff_id
        );
    }
    Ok(())
}

/// Turns the values of a repeated `--entrypoint`/`--cmd` flag into an argv.
fn argv_words(flag: &str, values: &[String]) -> anyhow::Result<Vec<String>> {
    match values {
        [single] if single.starts_with('[') => serde_json::from_str(single)
            .with_context(|| format!("{flag} {single:?}: not a JSON array of strings")),
        _ => {
            if let Some(json) = values.iter().find(|v| v.starts_with('[')) {
                bail!("{flag} {json:?}: a JSON array must be the only {flag}");
            }
            Ok(values.to_vec())
        }
    }
}

/// Minimal stderr backend for the `log` facade; warnings (e.g. skipped device nodes) must be seen.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("ros-image: {}: {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

fn init_logging() {
    static LOGGER: StderrLogger = StderrLogger;
    // Only fails if a logger is already set, which cannot happen this early in main.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn repeated_words_are_kept_in_order() {
        let words = argv_words("--cmd", &strings(&["/bin/sh", "-c", "echo hi"])).expect("words");
        assert_eq!(words, ["/bin/sh", "-c", "echo hi"]);
    }

    #[test]
    fn a_single_json_array_is_the_whole_argv() {
        let words = argv_words("--entrypoint", &strings(&[r#"["/bin/sh","-c"]"#])).expect("json");
        assert_eq!(words, ["/bin/sh", "-c"]);
    }

    #[test]
    fn json_mixed_with_words_or_malformed_json_is_rejected() {
        let mixed = argv_words("--cmd", &strings(&["a", r#"["b"]"#])).expect_err("mixed");
        assert!(
            mixed.to_string().contains("must be the only --cmd"),
            "{mixed}"
        );
        let bad = argv_words("--cmd", &strings(&["[1,2]"])).expect_err("numbers");
        assert!(format!("{bad:#}").contains("--cmd"), "{bad:#}");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
