//! The `ros` command tree. Each subcommand lives in its own module.

use clap::{Parser, Subcommand};

pub mod power;

/// rOS control: services, config and the OS.
#[derive(Debug, Parser)]
#[command(name = "ros", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Operating system: version, power.
    Os {
        #[command(subcommand)]
        command: OsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum OsCommand {
    /// Print the rOS version.
    Version,
    /// Shut down cleanly and power off (same as `poweroff`).
    Poweroff,
    /// Shut down cleanly and reboot (same as `reboot`).
    Reboot,
    /// Shut down cleanly and halt (same as `halt`).
    Halt,
}

/// Run `ros` with the process arguments.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Os { command } => match command {
            OsCommand::Version => {
                println!("v{}", env!("CARGO_PKG_VERSION"));
                Ok(())
            }
            OsCommand::Poweroff => power::request(ros_control::PowerAction::PowerOff),
            OsCommand::Reboot => power::request(ros_control::PowerAction::Reboot),
            OsCommand::Halt => power::request(ros_control::PowerAction::Halt),
        },
    }
}
