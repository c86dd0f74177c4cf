//! `ros service list|enable|disable|up|start|stop|restart|rm|ps|logs`.

use crate::CliError;

/// Arguments of `ros service`.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {}

/// Run `ros service`.
pub fn run(_args: ServiceArgs) -> Result<(), CliError> {
    Err(CliError::failure("ros service: not implemented yet"))
}
