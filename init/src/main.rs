//! rOS PID 1. Thin: everything happens in [`boot::run`], which never returns.

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

fn main() {
    if std::process::id() != 1 {
        eprintln!("init: rOS init must run as PID 1 (the kernel's init)");
        std::process::exit(2);
    }
    boot::run()
}
