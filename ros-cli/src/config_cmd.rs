//! `ros config get|set|merge|export|validate`.

use crate::CliError;

/// Arguments of `ros config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {}

/// Run `ros config`.
pub fn run(_args: ConfigArgs) -> Result<(), CliError> {
    Err(CliError::failure("ros config: not implemented yet"))
}
