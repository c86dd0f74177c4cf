//! Kernel modules by name: dependencies resolved from `modules.dep`, loaded with
//! `finit_module` (no modprobe binary).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::sys::ModuleLoader;

/// Errors finding or loading a module.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// `modules.dep` could not be read.
    #[error("reading {path}: {source}")]
    ReadIndex {
        /// The modules.dep path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No module of that name is shipped.
    #[error("module {0}: not found in modules.dep")]
    NotFound(String),
    /// The kernel refused the module.
    #[error("module {name}: loading {path}: {source}")]
    Load {
        /// Module name.
        name: String,
        /// File that failed.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// `modules.dep` and `modules.builtin` of one kernel, indexed by module name.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    dir: PathBuf,
    deps: HashMap<String, (PathBuf, Vec<PathBuf>)>,
    builtin: HashSet<String>,
}

/// Module names treat `-` and `_` alike.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn name_of(path: &Path) -> String {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    normalize(file.split(".ko").next().unwrap_or(file))
}

impl ModuleIndex {
    /// Read `<dir>/modules.dep` (and `modules.builtin` if present).
    pub fn open(dir: &Path) -> Result<Self, ModuleError> {
        let dep_path = dir.join("modules.dep");
        let text = fs::read_to_string(&dep_path).map_err(|source| ModuleError::ReadIndex {
            path: dep_path,
            source,
        })?;
        let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        Ok(Self::parse(dir, &text, &builtin))
    }

    /// Build an index from the texts of `modules.dep` and `modules.builtin`.
    pub fn parse(dir: &Path, dep: &str, builtin: &str) -> Self {
        let mut deps = HashMap::new();
        for line in dep.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            let module = PathBuf::from(module.trim());
            let needs = rest.split_whitespace().map(PathBuf::from).collect();
            deps.insert(name_of(&module), (module, needs));
        }
        let builtin = builtin
            .lines()
            .map(|l| name_of(Path::new(l.trim())))
            .collect();
        ModuleIndex {
            dir: dir.to_path_buf(),
            deps,
            builtin,
        }
    }

    /// Whether the module is built into the kernel (nothing to load).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The modules no other module depends on, sorted: loading these (each with its
    /// dependencies) loads everything in the index.
    pub fn top_level(&self) -> Vec<String> {
        let needed: HashSet<String> = self
            .deps
            .values()
            .flat_map(|(_, needs)| needs.iter().map(|p| name_of(p)))
            .collect();
        let mut names: Vec<String> = self
            .deps
            .keys()
            .filter(|n| !needed.contains(*n))
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Files to load for `name`, dependencies first. Empty for built-ins.
    pub fn resolve(&self, name: &str) -> Result<Vec<PathBuf>, ModuleError> {
        let key = normalize(name);
        if self.is_builtin(&key) {
            return Ok(Vec::new());
        }
        let (path, needs) = self
            .deps
            .get(&key)
            .ok_or_else(|| ModuleError::NotFound(name.to_string()))?;
        // modules.dep lists each module's full closure, most-dependent first,
        // so loading it back to front satisfies every dependency.
        let mut order: Vec<PathBuf> = needs.iter().rev().map(|p| self.dir.join(p)).collect();
        order.push(self.dir.join(path));
        Ok(order)
    }

    /// Load `name` and its dependencies.
    pub fn load(&self, name: &str, loader: &dyn ModuleLoader) -> Result<(), ModuleError> {
        self.load_with_params(name, "", loader)
    }

    /// The modules whose `modules.alias` patterns (shell globs, as modprobe matches them)
    /// match a device's `modalias`, and whose file is under `subtree` of the modules
    /// directory (`kernel/drivers/net/`: network drivers only), sorted.
    pub fn matching(&self, aliases: &str, modalias: &str, subtree: &str) -> Vec<String> {
        let mut names: Vec<String> = aliases
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("alias"), Some(pattern), Some(module)) => Some((pattern, module)),
                    _ => None,
                }
            })
            .filter(|(pattern, _)| glob_matches(pattern, modalias))
            .map(|(_, module)| normalize(module))
            .filter(|name| {
                self.deps
                    .get(name)
                    .is_some_and(|(path, _)| path.starts_with(subtree))
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The text of this kernel's `modules.alias` (empty when there is none).
    pub fn aliases(&self) -> String {
        fs::read_to_string(self.dir.join("modules.alias")).unwrap_or_default()
    }

    /// The modules of `subtree` (`kernel/drivers/net/`) that drive a device on one of
    /// `buses` under `sys_bus` (`/sys/bus`), by the devices' modaliases; sorted.
    pub fn drivers_for(&self, sys_bus: &Path, buses: &[&str], subtree: &str) -> Vec<String> {
        let aliases = self.aliases();
        let mut names: Vec<String> = buses
            .iter()
            .flat_map(|bus| {
                fs::read_dir(sys_bus.join(bus).join("devices"))
                    .into_iter()
                    .flatten()
            })
            .flatten()
            .filter_map(|dev| fs::read_to_string(dev.path().join("modalias")).ok())
            .flat_map(|alias| self.matching(&aliases, alias.trim(), subtree))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Load `name` with module parameters (`max_part=8`) after its dependencies.
    pub fn load_with_params(
        &self,
        name: &str,
        params: &str,
        loader: &dyn ModuleLoader,
    ) -> Result<(), ModuleError> {
        let order = self.resolve(name)?;
        let last = order.len().saturating_sub(1);
        for (i, path) in order.into_iter().enumerate() {
            let p = if i == last { params } else { "" };
            loader.load(&path, p).map_err(|source| ModuleError::Load {
                name: name.to_string(),
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Whether the shell glob `pattern` matches `text` (fnmatch(3), as libkmod matches
/// aliases).
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (Ok(p), Ok(t)) = (
        std::ffi::CString::new(pattern),
        std::ffi::CString::new(text),
    ) else {
        return false;
    };
    // SAFETY: both are NUL-terminated strings that live across the call.
    unsafe { libc::fnmatch(p.as_ptr(), t.as_ptr(), 0) == 0 }
}

/// The kernel release (`uname -r`), which names the modules directory.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, Recorder};

    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/fs/squashfs/squashfs.ko:
kernel/net/netfilter/nf_conntrack-netlink.ko: kernel/net/netfilter/nf_conntrack.ko
";

    #[test]
    fn a_device_finds_its_network_driver_by_alias() {
        let dep = "kernel/drivers/net/ethernet/intel/e1000/e1000.ko:\n\
                   kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko\n\
                   kernel/drivers/ata/ata_piix.ko:\n";
        let idx = ModuleIndex::parse(Path::new("/m"), dep, "");
        let aliases = "# Aliases extracted from modules themselves.\n\
            alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
            alias pci:v00008086d00007010sv*sd*bc*sc*i* ata_piix\n\
            alias virtio:d00000001v* virtio_net\n";
        let net = "kernel/drivers/net/";
        let e1000 = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00";
        assert_eq!(idx.matching(aliases, e1000, net), ["e1000"]);
        assert_eq!(
            idx.matching(aliases, "virtio:d00000001v00001AF4", net),
            ["virtio_net"]
        );
        // A disk controller matches its alias but is not a network driver.
        let piix = "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80";
        assert!(idx.matching(aliases, piix, net).is_empty());
        assert_eq!(idx.matching(aliases, piix, "kernel/"), ["ata_piix"]);
    }

    #[test]
    fn resolves_dependencies_first() {
        let idx = ModuleIndex::parse(Path::new("/m"), DEP, "kernel/fs/ext4/ext4.ko\n");
        let got = idx.resolve("virtio_pci").unwrap();
        let want: Vec<PathBuf> = [
            "kernel/drivers/virtio/virtio_ring.ko",
            "kernel/drivers/virtio/virtio.ko",
            "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
            "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
            "kernel/drivers/virtio/virtio_pci.ko",
        ]
        .iter()
        .map(|p| Path::new("/m").join(p))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn dashes_and_underscores_match_and_builtins_load_nothing() {
        let idx = ModuleIndex::parse(Path::new("/m"), DEP, "kernel/fs/ext4/ext4.ko\n");
        assert_eq!(idx.resolve("nf_conntrack_netlink").unwrap().len(), 2);
        assert!(idx.resolve("ext4").unwrap().is_empty());
        assert!(matches!(idx.resolve("nope"), Err(ModuleError::NotFound(n)) if n == "nope"));
    }

    #[test]
    fn top_level_leaves_out_what_others_depend_on() {
        let idx = ModuleIndex::parse(Path::new("/m"), DEP, "");
        assert_eq!(
            idx.top_level(),
            vec!["nf_conntrack_netlink", "squashfs", "virtio_pci"]
        );
    }

    #[test]
    fn loads_through_the_loader() {
        let idx = ModuleIndex::parse(Path::new("/m"), DEP, "");
        let rec = Recorder::default();
        idx.load_with_params("squashfs", "x=1", &rec).unwrap();
        assert_eq!(
            rec.calls(),
            vec![Call::LoadModule(
                "/m/kernel/fs/squashfs/squashfs.ko".into(),
                "x=1".into()
            )]
        );
    }
}
