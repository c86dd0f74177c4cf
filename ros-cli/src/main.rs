//! `ros`: the rOS command line. Thin: picks the command by `argv[0]` (`poweroff`,
//! `reboot` and `halt` are `ros` too, and so is the user engine's `runc`), runs it, and maps errors to exit codes
//! (see `ros_cli::ExitStatus`).

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
        None if name == ros_cli::engine_runc::ARGV0 => ros_cli::engine_runc::run(),
        None => ros_cli::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("{name}: {}", e.message);
            }
            ExitCode::from(e.status as u8)
        }
    }
}
