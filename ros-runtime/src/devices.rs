//! A service's `devices:` (`/dev/HOST[:/dev/CONTAINER[:rwm]]`, Compose's syntax) as the
//! host's device nodes it names: what an unprivileged service gets instead of every device.
//! A directory (`/dev/input`) stands for the character and block devices below it, as
//! Docker's `--device` takes it. Reads the host's `/dev` when the container is created, so
//! the nodes present then are the ones given.

use std::fs;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

use ros_config::fields::Device;

use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    Spec,
};

/// Why a `devices:` entry gives nothing usable.
#[derive(Debug, thiserror::Error)]
#[error("service {service}: devices: `{entry}`: {reason}")]
pub struct DeviceError {
    service: String,
    entry: String,
    reason: String,
}

/// One host device node, where the container sees it and what it may do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// The node: its path in the container and the host's type, numbers, mode and owner.
    pub node: LinuxDevice,
    /// `r`, `w` and `m` (mknod) for the device cgroup.
    pub access: String,
}

/// Every device node `entries` name on the host, in order (a directory's sorted by path).
/// An entry naming nothing, or a path that is neither a device nor a directory, is an
/// error, as in Docker.
pub fn resolve(service: &str, entries: &[Device]) -> Result<Vec<HostDevice>, DeviceError> {
    let mut out = Vec::new();
    for entry in entries {
        let fail = |reason: String| DeviceError {
            service: service.to_string(),
            entry: entry.to_string(),
            reason,
        };
        let host = Path::new(&entry.host);
        let inside = Path::new(&entry.container);
        let meta = fs::symlink_metadata(host).map_err(|e| fail(e.to_string()))?;
        let found = if meta.is_dir() {
            nodes_below(host, inside).map_err(|e| fail(e.to_string()))?
        } else {
            let node = device(inside, &meta)
                .ok_or_else(|| fail("not a character or block device".into()))?;
            vec![node]
        };
        out.extend(found.into_iter().map(|node| HostDevice {
            node,
            access: entry.access.clone(),
        }));
    }
    Ok(out)
}

/// The device nodes below `dir` (symlinks not followed), each at its relative path below
/// `inside`.
fn nodes_below(dir: &Path, inside: &Path) -> std::io::Result<Vec<LinuxDevice>> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let mut out = Vec::new();
    for e in entries {
        let meta = fs::symlink_metadata(e.path())?;
        let at = inside.join(e.file_name());
        if meta.is_dir() {
            out.extend(nodes_below(&e.path(), &at)?);
        } else if let Some(node) = device(&at, &meta) {
            out.push(node);
        }
    }
    Ok(out)
}

/// `meta`'s device, at `path` in the container; `None` for anything but a device node.
fn device(path: &Path, meta: &fs::Metadata) -> Option<LinuxDevice> {
    let kind = meta.file_type();
    let typ = if kind.is_char_device() {
        LinuxDeviceType::C
    } else if kind.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let rdev = meta.rdev();
    LinuxDeviceBuilder::default()
        .path(path)
        .typ(typ)
        .major(i64::from(nix::sys::stat::major(rdev) as u32))
        .minor(i64::from(nix::sys::stat::minor(rdev) as u32))
        .file_mode(meta.mode() & 0o777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()
        .ok()
}

/// Give the container of `oci` these devices: the nodes in its /dev and an allow rule for
/// each in its device cgroup, after the spec's deny-all rule.
pub fn add_to_spec(oci: &mut Spec, devices: &[HostDevice]) {
    if devices.is_empty() {
        return;
    }
    let Some(linux) = oci.linux_mut() else {
        return;
    };
    let mut nodes = linux.devices().clone().unwrap_or_default();
    nodes.extend(devices.iter().map(|d| d.node.clone()));
    linux.set_devices(Some(nodes));
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    rules.extend(devices.iter().filter_map(allow_rule));
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
}

fn allow_rule(d: &HostDevice) -> Option<LinuxDeviceCgroup> {
    LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(d.node.typ())
        .major(d.node.major())
        .minor(d.node.minor())
        .access(d.access.clone())
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[&str]) -> Vec<Device> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_node_keeps_its_numbers_and_moves_where_asked() {
        let found = resolve("svc", &entries(&["/dev/null:/dev/nothing:r"])).unwrap();
        assert_eq!(found.len(), 1);
        let d = &found[0];
        assert_eq!(d.node.path(), Path::new("/dev/nothing"));
        assert_eq!(d.node.typ(), LinuxDeviceType::C);
        assert_eq!((d.node.major(), d.node.minor()), (1, 3));
        assert_eq!(d.access, "r");
        let same = resolve("svc", &entries(&["/dev/null"])).unwrap();
        assert_eq!(same[0].node.path(), Path::new("/dev/null"));
        assert_eq!(same[0].access, "rwm");
    }

    #[test]
    fn a_directory_gives_the_nodes_below_it_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("ros-devices-{}", std::process::id()));
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("file"), b"").unwrap();
        // A link to a device is not followed: it could point anywhere on the host.
        std::os::unix::fs::symlink("/dev/null", dir.join("sub/link")).unwrap();
        assert!(resolve("svc", &entries(&[dir.to_str().unwrap()]))
            .unwrap()
            .is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_paths_and_plain_files_are_errors_naming_the_entry() {
        let err = resolve("acpid", &entries(&["/dev/no-such-device"])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("service acpid: devices: `/dev/no-such-device`: "),
            "{err}"
        );
        let err = resolve("svc", &entries(&["/proc/version"])).unwrap_err();
        assert!(
            err.to_string().contains("not a character or block device"),
            "{err}"
        );
    }

    #[test]
    fn the_spec_gets_nodes_and_allow_rules_after_the_deny_all() {
        let svc = ros_config::ServiceSpec {
            image: "img".into(),
            command: Some(ros_config::service::Command::Argv(vec!["sh".into()])),
            ..Default::default()
        };
        let image = oci_spec::image::ImageConfiguration::default();
        let mut oci = crate::runtime_spec("svc", &svc, &image, |_| None).unwrap();
        let devices = resolve("svc", &entries(&["/dev/null:/dev/input/event0:r"])).unwrap();
        add_to_spec(&mut oci, &devices);
        let linux = oci.linux().as_ref().unwrap();
        let nodes = linux.devices().as_ref().unwrap();
        assert_eq!(nodes[0].path(), Path::new("/dev/input/event0"));
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert_eq!(rules.len(), 2);
        assert!(!rules[0].allow(), "deny-all first");
        assert!(rules[1].allow());
        assert_eq!((rules[1].major(), rules[1].minor()), (Some(1), Some(3)));
        assert_eq!(rules[1].access().as_deref(), Some("r"));
    }
}
