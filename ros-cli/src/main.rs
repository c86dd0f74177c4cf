//! `ros`: the rOS command line. Thin: parses arguments and calls into `ros_cli`.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 usage error.

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("ros")
        .to_string();
    let result = match ros_control::PowerAction::from_command(&name) {
        Some(action) => ros_cli::power::request(action),
        None => ros_cli::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::from(1)
        }
    }
}
