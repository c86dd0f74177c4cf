//! rOS PID 1. Thin: everything happens in the library ([`ros_init::run`]), which never
//! returns. `init --subreaper` with `ROS_ROOT=DIR` runs the same boot as an ordinary
//! process below DIR, for the process tests ([`ros_init::run_subreaper`]).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        // The kernel passes PID 1 the command line's words it does not know: ignored.
        _ if std::process::id() == 1 => ros_init::run(),
        [] => usage("rOS init must run as PID 1 (the kernel's init), or with --subreaper"),
        [flag] if flag == "--subreaper" => match std::env::var_os(ros_config::paths::ROOT_ENV) {
            Some(root) if std::path::Path::new(&root).is_absolute() => {
                ros_init::run_subreaper(root.into())
            }
            _ => usage("--subreaper needs ROS_ROOT, an absolute directory the paths are below"),
        },
        _ => usage("unknown arguments"),
    }
}

fn usage(why: &str) -> ! {
    eprintln!(
        "init: {why}\nusage: init               (as PID 1)\n       ROS_ROOT=DIR init --subreaper"
    );
    std::process::exit(2)
}
