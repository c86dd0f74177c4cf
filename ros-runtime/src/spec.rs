//! OCI runtime spec generation: a pure function from a service definition and its image's
//! config to the `config.json` runc gets.
//!
//! Must not talk to containerd or look at the host: everything it needs is passed in, so
//! every rule here is covered by table tests without root.

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscall, LinuxSyscallBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use ros_config::capability::CapEntry;
use ros_config::fields::{User, Volume};
use ros_config::service::NamespaceMode;
use ros_config::ServiceSpec;

/// The cgroup (relative to each hierarchy's root) under which every service gets its own
/// cgroup: `/ros/<service>`.
pub const CGROUP_PARENT: &str = "/ros";

/// `PATH` for images that do not set one (Docker's default).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set, given to every unprivileged service.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability up to `CAP_CHECKPOINT_RESTORE` (Linux 5.9), in kernel numbering order
/// (index = capability number): what `privileged: true` gets. runc skips the ones the
/// running kernel does not know.
const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// Paths runc and containerd hide from unprivileged containers.
const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths runc and containerd make read-only for unprivileged containers.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Why a service definition cannot be turned into a runtime spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The image's `User` is not numeric `uid[:gid]`; names would need the image's
    /// /etc/passwd, which a pure function cannot read. (The service's own `user` is
    /// checked with its file.)
    #[error("service {service}: user {user:?} must be numeric uid[:gid] (or root)")]
    InvalidUser { service: String, user: String },
    /// Neither the service nor the image gives a command to run.
    #[error("service {service}: no entrypoint or command in the service or image {image}")]
    NoCommand { service: String, image: String },
    /// oci-spec rejected a value.
    #[error("service {service}: building the runtime spec: {source}")]
    Build {
        service: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

/// Build the OCI runtime spec for service `service` from its definition and its image's
/// config. `env_lookup` resolves bare `NAME` entries of `environment` (RancherOS passed the
/// host's value through).
///
/// Least privilege unless `privileged: true`: Docker's default capabilities (plus
/// `cap_add`, minus `cap_drop`), a seccomp deny-list, masked and read-only /proc paths, a
/// tmpfs /dev (runc populates the default devices; `devices:` are added by the caller,
/// [`crate::devices`]), read-only /sys and /sys/fs/cgroup,
/// `no_new_privileges`. Privileged services get every capability, no seccomp and no masked
/// paths, rw /sys and /sys/fs/cgroup, and the host's /dev bound recursively.
pub fn runtime_spec(
    service: &str,
    spec: &ServiceSpec,
    image: &ImageConfiguration,
    env_lookup: impl Fn(&str) -> Option<String>,
) -> Result<Spec, SpecError> {
    let build = |source| SpecError::Build {
        service: service.to_string(),
        source,
    };
    let image_config = image.config().as_ref();

    let args = process_args(spec, image_config);
    if args.is_empty() {
        return Err(SpecError::NoCommand {
            service: service.to_string(),
            image: spec.image.clone(),
        });
    }

    // The service's user was parsed with its file; the image's is read here, by the same
    // rules.
    let user = match spec.user {
        Some(u) => u,
        None => {
            let text = image_config
                .and_then(|c| c.user().clone())
                .unwrap_or_default();
            text.parse::<User>().map_err(|_| SpecError::InvalidUser {
                service: service.to_string(),
                user: text,
            })?
        }
    };

    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| image_config.and_then(|c| c.working_dir().clone()))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".to_string());

    let caps = capabilities(spec);
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        // Empty inheritable and ambient sets, as Docker does since CVE-2022-24769.
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(build)?;

    let process = ProcessBuilder::default()
        .terminal(spec.tty)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .build()
                .map_err(build)?,
        )
        .args(args)
        .env(environment(spec, image_config, env_lookup))
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()
            .map_err(build)?])
        .no_new_privileges(!spec.privileged)
        .build()
        .map_err(build)?;

    let mut namespaces = vec![LinuxNamespaceType::Mount, LinuxNamespaceType::Cgroup];
    for (mode, typ) in [
        (&spec.pid, LinuxNamespaceType::Pid),
        (&spec.net, LinuxNamespaceType::Network),
        (&spec.ipc, LinuxNamespaceType::Ipc),
        (&spec.uts, LinuxNamespaceType::Uts),
    ] {
        if !is_host(mode) {
            namespaces.push(typ);
        }
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(build)?;

    // Deny every device but the defaults runc adds itself; privileged services get all.
    // `devices:` adds its own (crate::devices, from the host's nodes).
    let devices_rule = LinuxDeviceCgroupBuilder::default()
        .allow(spec.privileged)
        .access("rwm")
        .build()
        .map_err(build)?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(format!("{CGROUP_PARENT}/{service}")))
        .resources(
            LinuxResourcesBuilder::default()
                .devices(vec![devices_rule])
                .build()
                .map_err(build)?,
        )
        .build()
        .map_err(build)?;
    // oci-spec's builders start from its own defaults (masked paths, hostname "youki"), so
    // every optional field that depends on the service is set explicitly.
    if spec.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
        linux.set_seccomp(None);
    } else {
        linux.set_masked_paths(Some(MASKED_PATHS.map(String::from).to_vec()));
        linux.set_readonly_paths(Some(READONLY_PATHS.map(String::from).to_vec()));
        linux.set_seccomp(Some(seccomp_profile(&caps).map_err(build)?));
    }

    let mut oci = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(spec.read_only)
                .build()
                .map_err(build)?,
        )
        .process(process)
        .mounts(mounts(spec))
        .linux(linux)
        .build()
        .map_err(build)?;
    oci.set_hostname((!is_host(&spec.uts)).then(|| service.to_string()));
    oci.set_annotations(None);
    Ok(oci)
}

/// Drop from every capability set of `spec` the capabilities missing from `bounding`, a
/// kernel capability mask (`CapBnd` in /proc/self/status): runc cannot grant what its caller
/// does not hold, and fails the whole container if asked to. Capabilities numbered past
/// the ones this crate knows are unaffected.
pub fn restrict_capabilities(spec: &mut Spec, bounding: u64) {
    let allowed = |c: &Capability| {
        let bit = ALL_CAPABILITIES.iter().position(|known| known == c);
        !matches!(bit, Some(bit) if bounding & (1u64 << bit) == 0)
    };
    let Some(process) = spec.process_mut() else {
        return;
    };
    let Some(mut caps) = process.capabilities().clone() else {
        return;
    };
    let keep = |set: &Option<Capabilities>| -> Option<Capabilities> {
        set.as_ref()
            .map(|s| s.iter().copied().filter(allowed).collect())
    };
    caps.set_bounding(keep(caps.bounding()));
    caps.set_effective(keep(caps.effective()));
    caps.set_permitted(keep(caps.permitted()));
    caps.set_inheritable(keep(caps.inheritable()));
    caps.set_ambient(keep(caps.ambient()));
    process.set_capabilities(Some(caps));
}

fn is_host(mode: &Option<NamespaceMode>) -> bool {
    matches!(mode, Some(NamespaceMode::Host))
}

/// Docker semantics: the service's entrypoint replaces the image's and resets its Cmd; the
/// service's command replaces the image's Cmd.
fn process_args(spec: &ServiceSpec, image: Option<&oci_spec::image::Config>) -> Vec<String> {
    let image_entrypoint = image.and_then(|c| c.entrypoint().clone());
    let image_cmd = image.and_then(|c| c.cmd().clone());
    let (entrypoint, default_cmd) = match &spec.entrypoint {
        Some(ep) => (ep.argv(), Vec::new()),
        None => (
            image_entrypoint.unwrap_or_default(),
            image_cmd.unwrap_or_default(),
        ),
    };
    let cmd = spec.command.as_ref().map_or(default_cmd, |c| c.argv());
    entrypoint.into_iter().chain(cmd).collect()
}

/// Image env, then the service's (later wins per name), plus Docker's PATH default.
fn environment(
    spec: &ServiceSpec,
    image: Option<&oci_spec::image::Config>,
    env_lookup: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut env: Vec<String> = image.and_then(|c| c.env().clone()).unwrap_or_default();
    let name_of = |entry: &str| entry.split_once('=').map_or(entry, |(k, _)| k).to_string();
    if !env.iter().any(|e| name_of(e) == "PATH") {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    for entry in spec.environment.resolve(env_lookup) {
        let name = name_of(&entry);
        match env.iter_mut().find(|e| name_of(e) == name) {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
    if spec.tty && !env.iter().any(|e| name_of(e) == "TERM") {
        env.push("TERM=xterm".to_string());
    }
    env
}

/// The OCI name of `cap`: [`ALL_CAPABILITIES`] is in the kernel's numbering, as
/// `ros_config`'s names are (a test checks they agree), so the mapping cannot fail.
fn oci_capability(cap: ros_config::capability::Capability) -> Capability {
    ALL_CAPABILITIES[cap.number()]
}

fn capabilities(spec: &ServiceSpec) -> Capabilities {
    let mut caps: Capabilities = if spec.privileged || spec.cap_add.contains(&CapEntry::All) {
        ALL_CAPABILITIES.into_iter().collect()
    } else {
        DEFAULT_CAPABILITIES.into_iter().collect()
    };
    for entry in &spec.cap_add {
        if let CapEntry::One(c) = entry {
            caps.insert(oci_capability(*c));
        }
    }
    if spec.cap_drop.contains(&CapEntry::All) {
        caps.clear();
    }
    for entry in &spec.cap_drop {
        if let CapEntry::One(c) = entry {
            caps.remove(&oci_capability(*c));
        }
    }
    caps
}

/// `file` bound read-only over `/proc/cmdline` (after `/proc` is mounted: the mount goes
/// last).
pub(crate) fn kernel_cmdline_mount(file: &Path) -> Mount {
    mount(
        "/proc/cmdline",
        "bind",
        &file.to_string_lossy(),
        &["bind", "ro", "nosuid", "noexec", "nodev"],
    )
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    // MountBuilder only fails on mismatched id mappings, which are never set here.
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .expect("mount without id mappings always builds")
}

fn mounts(spec: &ServiceSpec) -> Vec<Mount> {
    let mut mounts = vec![mount(
        "/proc",
        "proc",
        "proc",
        &["nosuid", "noexec", "nodev"],
    )];
    if spec.privileged {
        mounts.push(mount("/dev", "bind", "/dev", &["rbind", "rw"]));
    } else {
        mounts.push(mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ));
        mounts.push(mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ));
    }
    if is_host(&spec.ipc) {
        // The host's IPC namespace comes with the host's shared memory. A privileged
        // service already has it through the /dev bind.
        if !spec.privileged {
            mounts.push(mount("/dev/shm", "bind", "/dev/shm", &["rbind", "rw"]));
        }
    } else {
        mounts.push(mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ));
        mounts.push(mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ));
    }
    let sys_access = if spec.privileged { "rw" } else { "ro" };
    mounts.push(mount(
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", sys_access],
    ));
    mounts.push(mount(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", sys_access],
    ));
    mounts.extend(spec.volumes.iter().map(volume_mount));
    mounts
}

/// A volume as a recursive bind mount.
fn volume_mount(volume: &Volume) -> Mount {
    let options: &[&str] = if volume.read_only {
        &["rbind", "ro"]
    } else {
        &["rbind"]
    };
    mount(&volume.container, "bind", &volume.host, options)
}

/// A deny-list in the spirit of Docker's default profile: everything is allowed except
/// system-wide operations, each of which is let through again when the service holds the
/// capability that guards it. Docker's profile is an allow-list of ~350 syscalls; a
/// deny-list keeps this table reviewable at the cost of allowing syscalls newer than it.
/// Only the native architecture is listed, so foreign-ABI syscalls (int 0x80 on x86_64)
/// fail instead of slipping past the names below.
fn seccomp_profile(caps: &Capabilities) -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    const EPERM: u32 = 1;
    const ENOSYS: u32 = 38;
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    let table: [(Option<Capability>, &[&str]); 11] = [
        (
            None,
            &[
                "add_key",
                "keyctl",
                "request_key",
                "lookup_dcookie",
                "nfsservctl",
                "uselib",
                "ustat",
                "sysfs",
                "_sysctl",
                "userfaultfd",
                "vm86",
                "vm86old",
                "get_kernel_syms",
                "query_module",
                "create_module",
            ],
        ),
        (
            Some(Capability::SysAdmin),
            &[
                "mount",
                "umount",
                "umount2",
                "pivot_root",
                "unshare",
                "setns",
                "quotactl",
                "swapon",
                "swapoff",
                "sethostname",
                "setdomainname",
                "fanotify_init",
                "open_tree",
                "move_mount",
                "fsopen",
                "fsconfig",
                "fsmount",
                "fspick",
                "mount_setattr",
            ],
        ),
        (Some(Capability::Bpf), &["bpf"]),
        (Some(Capability::Perfmon), &["perf_event_open"]),
        (
            Some(Capability::SysModule),
            &["init_module", "finit_module", "delete_module"],
        ),
        (
            Some(Capability::SysBoot),
            &["reboot", "kexec_load", "kexec_file_load"],
        ),
        (
            Some(Capability::SysTime),
            &["settimeofday", "stime", "clock_settime", "clock_adjtime"],
        ),
        (Some(Capability::SysRawio), &["iopl", "ioperm"]),
        (Some(Capability::SysPacct), &["acct"]),
        (
            Some(Capability::SysPtrace),
            &["kcmp", "process_vm_readv", "process_vm_writev", "ptrace"],
        ),
        (
            Some(Capability::SysNice),
            &["get_mempolicy", "mbind", "set_mempolicy", "move_pages"],
        ),
    ];
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for (guard, names) in table {
        if guard.is_some_and(|c| caps.contains(&c)) {
            continue;
        }
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(EPERM)
                .build()?,
        );
    }
    if !caps.contains(&Capability::SysAdmin) {
        // New user namespaces hand out capabilities inside them; clone3's flags live in
        // memory seccomp cannot read, so it reports ENOSYS and libc falls back to clone.
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(EPERM)
                .args(vec![LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(CLONE_NEWUSER)
                    .value_two(CLONE_NEWUSER)
                    .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                    .build()?])
                .build()?,
        );
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(ENOSYS)
                .build()?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(syscalls)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};
    use ros_config::service::{Command, Environment};
    use std::collections::HashSet;

    fn cap_names(caps: &Capabilities) -> HashSet<String> {
        caps.iter().map(|c| c.to_string()).collect()
    }

    fn image(entrypoint: &[&str], cmd: &[&str], env: &[&str]) -> ImageConfiguration {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut config = ConfigBuilder::default().env(strings(env));
        if !entrypoint.is_empty() {
            config = config.entrypoint(strings(entrypoint));
        }
        if !cmd.is_empty() {
            config = config.cmd(strings(cmd));
        }
        ImageConfigurationBuilder::default()
            .config(config.working_dir("/srv").build().unwrap())
            .build()
            .unwrap()
    }

    fn service() -> ServiceSpec {
        ServiceSpec {
            image: "ros/test:1".into(),
            command: Some(Command::Argv(vec!["echo".into(), "hi".into()])),
            ..Default::default()
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn build(spec: &ServiceSpec) -> Spec {
        runtime_spec("svc", spec, &image(&[], &[], &[]), no_env).unwrap()
    }

    fn namespaces(spec: &Spec) -> HashSet<String> {
        let linux = spec.linux().as_ref().unwrap();
        let list = linux.namespaces().as_ref().unwrap();
        list.iter().map(|n| n.typ().to_string()).collect()
    }

    fn mount_of<'a>(spec: &'a Spec, destination: &str) -> Option<&'a Mount> {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == &PathBuf::from(destination))
    }

    fn options(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    fn caps(spec: &Spec) -> HashSet<String> {
        let process = spec.process().as_ref().unwrap();
        cap_names(
            process
                .capabilities()
                .as_ref()
                .unwrap()
                .bounding()
                .as_ref()
                .unwrap(),
        )
    }

    #[test]
    fn args_follow_docker_semantics() {
        // (case, command, entrypoint, image Entrypoint, image Cmd, expected argv)
        type Case<'a> = (
            &'a str,
            Option<Command>,
            Option<Command>,
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (
                "image only",
                None,
                None,
                &["/ep"],
                &["a", "b"],
                &["/ep", "a", "b"],
            ),
            (
                "command replaces cmd",
                Some(Command::Line("x y".into())),
                None,
                &["/ep"],
                &["a"],
                &["/ep", "x", "y"],
            ),
            (
                "entrypoint resets cmd",
                None,
                Some(Command::Argv(vec!["/other".into()])),
                &["/ep"],
                &["a"],
                &["/other"],
            ),
            (
                "entrypoint and command",
                Some(Command::Argv(vec!["c".into()])),
                Some(Command::Line("/other -v".into())),
                &["/ep"],
                &["a"],
                &["/other", "-v", "c"],
            ),
            (
                "no image entrypoint",
                Some(Command::Argv(vec!["sleep".into(), "1".into()])),
                None,
                &[],
                &["sh"],
                &["sleep", "1"],
            ),
        ];
        for (name, command, entrypoint, ep, cmd, want) in cases {
            let svc = ServiceSpec {
                image: "i".into(),
                command: command.clone(),
                entrypoint: entrypoint.clone(),
                ..Default::default()
            };
            let spec = runtime_spec("svc", &svc, &image(ep, cmd, &[]), no_env).unwrap();
            let args = spec.process().as_ref().unwrap().args().clone().unwrap();
            assert_eq!(args, *want, "{name}");
        }
    }

    #[test]
    fn no_command_is_an_error() {
        let svc = ServiceSpec {
            image: "i".into(),
            ..Default::default()
        };
        let err = runtime_spec("svc", &svc, &image(&[], &[], &[]), no_env).unwrap_err();
        assert!(matches!(err, SpecError::NoCommand { .. }), "{err}");
        assert!(err.to_string().contains("svc"), "{err}");
    }

    #[test]
    fn env_is_image_then_service_with_passthrough() {
        let svc = ServiceSpec {
            environment: Environment::List(vec!["B=service".into(), "HOME".into(), "C=3".into()]),
            tty: true,
            ..service()
        };
        let img = image(&[], &[], &["PATH=/bin", "A=1", "B=image"]);
        let lookup = |k: &str| (k == "HOME").then(|| "/root".to_string());
        let spec = runtime_spec("svc", &svc, &img, lookup).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(
            env,
            vec![
                "PATH=/bin",
                "A=1",
                "B=service",
                "HOME=/root",
                "C=3",
                "TERM=xterm"
            ]
        );
    }

    #[test]
    fn default_path_when_image_has_none() {
        let spec = build(&service());
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, vec![DEFAULT_PATH.to_string()]);
    }

    #[test]
    fn capabilities_default_add_drop_privileged() {
        let default: HashSet<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        assert_eq!(caps(&build(&service())), default);

        let added = build(&ServiceSpec {
            cap_add: cap_list(&["SYS_ADMIN", "cap_net_admin"]),
            cap_drop: cap_list(&["MKNOD", "CAP_NET_RAW"]),
            ..service()
        });
        let got = caps(&added);
        assert!(
            got.contains("SYS_ADMIN") && got.contains("NET_ADMIN"),
            "{got:?}"
        );
        assert!(
            !got.contains("MKNOD") && !got.contains("NET_RAW"),
            "{got:?}"
        );
        assert_eq!(got.len(), default.len());

        let privileged = build(&ServiceSpec {
            privileged: true,
            ..service()
        });
        assert_eq!(caps(&privileged).len(), ALL_CAPABILITIES.len());

        let none = build(&ServiceSpec {
            cap_drop: cap_list(&["ALL"]),
            cap_add: cap_list(&["KILL"]),
            ..service()
        });
        assert_eq!(caps(&none), HashSet::new(), "drop ALL wins, as in Docker");

        let sets = added
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(sets.inheritable().as_ref().unwrap().len(), 0);
        assert_eq!(sets.ambient().as_ref().unwrap().len(), 0);
    }

    #[test]
    fn capabilities_the_host_lacks_are_dropped() {
        let mut spec = build(&ServiceSpec {
            privileged: true,
            ..service()
        });
        // Everything but CAP_SYS_RESOURCE (24), as in a sandbox that dropped it.
        restrict_capabilities(&mut spec, ((1u64 << 41) - 1) & !(1 << 24));
        let got = caps(&spec);
        assert_eq!(got.len(), ALL_CAPABILITIES.len() - 1);
        assert!(
            !got.contains("SYS_RESOURCE") && got.contains("SYS_ADMIN"),
            "{got:?}"
        );
        let sets = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert!(!cap_names(sets.effective().as_ref().unwrap()).contains("SYS_RESOURCE"));

        let mut spec = build(&service());
        restrict_capabilities(&mut spec, u64::MAX);
        assert_eq!(caps(&spec).len(), DEFAULT_CAPABILITIES.len());
        for (bit, cap) in ALL_CAPABILITIES.iter().enumerate() {
            let mut spec = build(&ServiceSpec {
                cap_add: cap_list(&[&cap.to_string()]),
                ..service()
            });
            restrict_capabilities(&mut spec, !(1u64 << bit));
            assert!(
                !caps(&spec).contains(&cap.to_string()),
                "{cap} is bit {bit}"
            );
        }
    }

    fn cap_list(names: &[&str]) -> Vec<CapEntry> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn every_capability_of_the_config_maps_to_the_oci_one_of_its_number() {
        for (i, name) in ros_config::capability::CAPABILITY_NAMES.iter().enumerate() {
            assert_eq!(ALL_CAPABILITIES[i].to_string(), *name, "capability {i}");
        }
    }

    #[test]
    fn unprivileged_is_locked_down() {
        let spec = build(&service());
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_some());
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        assert!(linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_string()));
        assert_eq!(
            mount_of(&spec, "/dev").unwrap().typ().as_deref(),
            Some("tmpfs")
        );
        assert!(mount_of(&spec, "/dev/pts").is_some());
        assert!(options(mount_of(&spec, "/sys").unwrap()).contains(&"ro".to_string()));
        assert!(options(mount_of(&spec, "/sys/fs/cgroup").unwrap()).contains(&"ro".to_string()));
        let devices = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert!(!devices[0].allow());
        assert_eq!(
            spec.process().as_ref().unwrap().no_new_privileges(),
            Some(true)
        );
        let names: Vec<String> = linux
            .seccomp()
            .as_ref()
            .unwrap()
            .syscalls()
            .clone()
            .unwrap()
            .into_iter()
            .flat_map(|s| s.names().clone())
            .collect();
        assert!(names.contains(&"mount".to_string()));
        assert!(names.contains(&"reboot".to_string()));
    }

    #[test]
    fn cap_add_reopens_the_guarded_syscalls() {
        let spec = build(&ServiceSpec {
            cap_add: cap_list(&["SYS_ADMIN"]),
            ..service()
        });
        let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        let names: Vec<String> = seccomp
            .syscalls()
            .clone()
            .unwrap()
            .into_iter()
            .flat_map(|s| s.names().clone())
            .collect();
        assert!(!names.contains(&"mount".to_string()), "{names:?}");
        assert!(!names.contains(&"clone".to_string()), "{names:?}");
        assert!(names.contains(&"reboot".to_string()), "{names:?}");
    }

    #[test]
    fn privileged_gets_host_dev_and_rw_sys() {
        let spec = build(&ServiceSpec {
            privileged: true,
            ..service()
        });
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().is_none());
        assert!(linux.readonly_paths().is_none());
        let dev = mount_of(&spec, "/dev").unwrap();
        assert_eq!(dev.typ().as_deref(), Some("bind"));
        assert_eq!(dev.source().as_deref(), Some(std::path::Path::new("/dev")));
        assert!(options(dev).contains(&"rbind".to_string()));
        assert!(
            mount_of(&spec, "/dev/pts").is_none(),
            "comes with the rbind"
        );
        assert!(options(mount_of(&spec, "/sys").unwrap()).contains(&"rw".to_string()));
        assert!(options(mount_of(&spec, "/sys/fs/cgroup").unwrap()).contains(&"rw".to_string()));
        let devices = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert!(devices[0].allow());
        assert_eq!(
            spec.process().as_ref().unwrap().no_new_privileges(),
            Some(false)
        );
    }

    #[test]
    fn host_namespaces_are_omitted() {
        let all = build(&service());
        let want: HashSet<String> = ["mnt", "cgroup", "pid", "net", "ipc", "uts"]
            .map(String::from)
            .into();
        assert_eq!(namespaces(&all), want);
        assert_eq!(all.hostname().as_deref(), Some("svc"));

        let host = build(&ServiceSpec {
            net: Some(NamespaceMode::Host),
            pid: Some(NamespaceMode::Host),
            ipc: Some(NamespaceMode::Host),
            uts: Some(NamespaceMode::Host),
            ..service()
        });
        let want: HashSet<String> = ["mnt", "cgroup"].map(String::from).into();
        assert_eq!(namespaces(&host), want);
        assert_eq!(host.hostname(), &None);
        assert_eq!(
            mount_of(&host, "/dev/shm").unwrap().typ().as_deref(),
            Some("bind"),
            "host IPC shares the host's /dev/shm"
        );
        assert!(mount_of(&host, "/dev/mqueue").is_none());

        let none = build(&ServiceSpec {
            net: Some(NamespaceMode::None),
            ..service()
        });
        assert!(namespaces(&none).contains("net"));
    }

    #[test]
    fn volumes_become_rbind_mounts() {
        let spec = build(&ServiceSpec {
            volumes: vec![
                "/run:/run".parse().unwrap(),
                "/usr/bin/ros:/usr/bin/ros:ro".parse().unwrap(),
            ],
            ..service()
        });
        let run = mount_of(&spec, "/run").unwrap();
        assert_eq!(run.typ().as_deref(), Some("bind"));
        assert_eq!(run.source().as_deref(), Some(std::path::Path::new("/run")));
        assert_eq!(options(run), vec!["rbind"]);
        assert_eq!(
            options(mount_of(&spec, "/usr/bin/ros").unwrap()),
            vec!["rbind", "ro"]
        );
        let last = spec.mounts().as_ref().unwrap().last().unwrap();
        assert_eq!(
            last.destination(),
            &PathBuf::from("/usr/bin/ros"),
            "volumes come last"
        );
    }

    #[test]
    fn an_images_user_by_name_is_an_error_naming_it() {
        let mut img = image(&[], &[], &[]);
        let config = img.config().clone().map(|mut c| {
            c.set_user(Some("nobody".into()));
            c
        });
        img.set_config(config);
        let err = runtime_spec("svc", &service(), &img, no_env).unwrap_err();
        assert!(matches!(err, SpecError::InvalidUser { .. }), "{err}");
        assert!(err.to_string().contains("nobody"), "{err}");
        // The service's own user wins, and was parsed with its file.
        let spec = runtime_spec(
            "svc",
            &ServiceSpec {
                user: Some("7:8".parse().unwrap()),
                ..service()
            },
            &img,
            no_env,
        )
        .unwrap();
        let user = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((user.uid(), user.gid()), (7, 8));
    }

    #[test]
    fn user_workdir_readonly_tty_cgroup() {
        let spec = build(&ServiceSpec {
            user: Some("1000:100".parse().unwrap()),
            working_dir: Some("/work".into()),
            read_only: true,
            tty: true,
            ..service()
        });
        let process = spec.process().as_ref().unwrap();
        assert_eq!((process.user().uid(), process.user().gid()), (1000, 100));
        assert_eq!(process.cwd(), &PathBuf::from("/work"));
        assert_eq!(process.terminal(), Some(true));
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), &PathBuf::from("rootfs"));
        assert_eq!(root.readonly(), Some(true));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(std::path::Path::new("/ros/svc"))
        );

        let defaults = build(&service());
        let process = defaults.process().as_ref().unwrap();
        assert_eq!((process.user().uid(), process.user().gid()), (0, 0));
        assert_eq!(process.cwd(), &PathBuf::from("/srv"), "image WorkingDir");
        assert_eq!(process.terminal(), Some(false));
        assert_eq!(defaults.root().as_ref().unwrap().readonly(), Some(false));
    }

    #[test]
    fn spec_serialises_with_runc_field_names() {
        let json = serde_json::to_value(build(&service())).unwrap();
        assert_eq!(json["root"]["path"], "rootfs");
        assert_eq!(json["linux"]["cgroupsPath"], "/ros/svc");
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(caps.contains(&serde_json::json!("CAP_CHOWN")));
    }
}
