//! The `ros` command tree. Each subcommand group lives in its own module; this file
//! only parses arguments and dispatches.

use clap::{Parser, Subcommand};

pub mod config_cmd;
pub mod engine_runc;
pub mod exit;
pub mod host;
pub mod install_cmd;
pub mod os_cmd;
pub mod power;
pub mod service_cmd;
pub mod sysconf_cmd;

pub use exit::{CliError, ExitStatus};

/// rOS control: services, config and the OS.
#[derive(Debug, Parser)]
#[command(name = "ros", version, about, after_help = exit::EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read, change, merge, export and validate the cloud-config.
    #[command(visible_alias = "c")]
    Config(config_cmd::ConfigArgs),
    /// List, enable, start, stop and inspect services.
    #[command(visible_alias = "s")]
    Service(service_cmd::ServiceArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Config views for the system services' scripts (not for users).
    #[command(hide = true)]
    Sysconf(sysconf_cmd::SysconfArgs),
    /// Install rOS to a disk that boots by itself (erases the disk).
    Install(install_cmd::InstallArgs),
    /// Operating system: version, upgrade and rollback, power.
    Os {
        #[command(subcommand)]
        command: os_cmd::OsCommand,
    },
}

/// Run `ros` with the process arguments.
pub fn run() -> Result<(), CliError> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage {
                Err(CliError::usage_printed())
            } else {
                Ok(())
            };
        }
    };
    match cli.command {
        Command::Config(args) => config_cmd::run(args),
        Command::Service(args) => service_cmd::run(args),
        Command::Sysconf(args) => sysconf_cmd::run(args),
        Command::Install(args) => install_cmd::run(args),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            service_cmd::completions(shell, &mut Cli::command(), &mut std::io::stdout());
            Ok(())
        }
        Command::Os { command } => os_cmd::run(command),
    }
}
