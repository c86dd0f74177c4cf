//! rOS PID 1. Thin: everything happens in the library ([`ros_init::run`]), which never
//! returns.

fn main() {
    if std::process::id() != 1 {
        eprintln!("init: rOS init must run as PID 1 (the kernel's init)");
        std::process::exit(2);
    }
    ros_init::run()
}
