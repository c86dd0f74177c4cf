//! rOS PID 1, as a library: its boot steps, supervisor, control socket, reaper and
//! shutdown. The `init` binary (main.rs) only checks that it is PID 1 and calls [`run`];
//! a library is what tests of the real steps build on (issue 23: a process-level tier).

mod boot;
mod catalog;
mod cloudinit;
mod cmdline;
mod console;
mod containerd;
mod control;
mod desired;
mod logfile;
mod logrotate;
pub mod mode;
mod modules;
mod mounts;
mod netboot;
mod paths;
mod power;
mod readiness;
mod reaper;
mod recovery;
mod root;
mod state;
mod supervisor;
mod sys;
mod upgrade;
mod watchdog;

/// PID 1's whole life (`boot::run`). Never returns.
pub fn run() -> ! {
    boot::run()
}

/// The same life as a child subreaper whose well-known paths are below `root`
/// ([`mode::RunMode::Subreaper`]): what the process tests run. Exits at the end of a
/// shutdown.
pub fn run_subreaper(root: std::path::PathBuf) -> ! {
    mode::set(mode::RunMode::Subreaper { root });
    boot::run()
}
