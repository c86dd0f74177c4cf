//! What `ros service list` shows: every service that could run, where it is defined, and
//! whether `rancher.services_include` turns it on. Reads the definition directories and the
//! merged config below a root; the same rules as PID 1's catalog.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ros_config::{paths, Mode};

pub use ros_config::paths::SERVICES_DIR;
pub use ros_config::paths::SERVICE_INDEX_DIR;

/// Where a service is defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file of the built-in services.
    Builtin(PathBuf),
    /// The service index.
    Index(PathBuf),
    /// `rancher.services` in the config.
    Config,
    /// A file enabled by its path in `rancher.services_include`.
    Include,
    /// A `rancher.services_include` entry that names nothing (no such index file or path).
    Missing,
}

/// One line of `ros service list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Service name (for an index entry: the file's stem; for an include: its path).
    pub name: String,
    /// Whether it runs.
    pub enabled: bool,
    /// Where it is defined.
    pub source: Source,
}

impl Entry {
    /// Built-in and config services run unless disabled.
    pub fn on_by_default(&self) -> bool {
        matches!(self.source, Source::Builtin(_) | Source::Config)
    }
}

/// The `NAME.yml` of the service index below `root`.
pub fn index_file(root: &Path, name: &str) -> PathBuf {
    paths::under(root, SERVICE_INDEX_DIR).join(format!("{name}.yml"))
}

use ros_config::service::service_files as yml_files;

fn read_cmdline(root: &Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(paths::under(root, paths::KERNEL_CMDLINE)).ok()?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(ros_config::MAX_CMDLINE_BYTES + 1).unwrap_or(u64::MAX);
    file.take(limit).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Every service below `root`, by name. Files that do not parse contribute no names
/// (`ros config validate` and the boot log report them).
pub fn available(root: &Path) -> Vec<Entry> {
    let loaded = ros_config::load(root, read_cmdline(root).as_deref(), Mode::Boot);
    let rancher = &loaded.config.rancher;
    let include = &rancher.services_include;
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    for file in yml_files(&paths::under(root, SERVICES_DIR)) {
        let (defs, _) = ros_config::check_service_path(&file);
        for name in defs.into_keys() {
            let enabled = include.get(&name) != Some(&false);
            let source = Source::Builtin(file.clone());
            out.insert(
                name.clone(),
                Entry {
                    name,
                    enabled,
                    source,
                },
            );
        }
    }
    for file in yml_files(&paths::under(root, SERVICE_INDEX_DIR)) {
        let Some(name) = file.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let enabled = include.get(&name) == Some(&true);
        let source = Source::Index(file.clone());
        out.insert(
            name.clone(),
            Entry {
                name,
                enabled,
                source,
            },
        );
    }
    for name in rancher.services.keys() {
        let enabled = include.get(name) != Some(&false);
        out.insert(
            name.clone(),
            Entry {
                name: name.clone(),
                enabled,
                source: Source::Config,
            },
        );
    }
    for (key, on) in include {
        if out.contains_key(key) {
            continue;
        }
        let source = if key.starts_with('/') && Path::new(key).is_file() {
            Source::Include
        } else {
            Source::Missing
        };
        out.insert(
            key.clone(),
            Entry {
                name: key.clone(),
                enabled: *on,
                source,
            },
        );
    }
    out.into_values().collect()
}

/// The enabled `rancher.services_include` path whose file defines service `name`, if any
/// (so `ros service disable NAME` works for a service enabled by its file's path).
pub fn include_path_defining(root: &Path, name: &str) -> Option<String> {
    let loaded = ros_config::load(root, read_cmdline(root).as_deref(), Mode::Boot);
    loaded
        .config
        .rancher
        .services_include
        .iter()
        .filter(|(key, on)| **on && key.starts_with('/'))
        .find(|(key, _)| {
            let (defs, _) = ros_config::check_service_path(Path::new(key.as_str()));
            defs.contains_key(name)
        })
        .map(|(key, _)| key.clone())
}

/// The text of `ros service list`: `enabled  NAME` / `disabled NAME`, sorted by name, as
/// RancherOS printed it. With `all`, a SOURCE column and dangling includes too.
pub fn render(entries: &[Entry], all: bool) -> String {
    let state = |e: &Entry| if e.enabled { "enabled" } else { "disabled" };
    let width = entries
        .iter()
        .filter(|e| all || e.source != Source::Missing)
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for e in entries {
        if !all {
            if e.source != Source::Missing {
                out.push_str(&format!("{:<8} {}\n", state(e), e.name));
            }
            continue;
        }
        let source = match &e.source {
            Source::Builtin(p) => format!("builtin {}", p.display()),
            Source::Index(p) => format!("index {}", p.display()),
            Source::Config => "config rancher.services".to_string(),
            Source::Include => "file".to_string(),
            Source::Missing => "missing (no such index entry or file)".to_string(),
        };
        out.push_str(&format!("{:<8} {:<width$}   {source}\n", state(e), e.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, path: &str, text: &str) {
        let p = paths::under(root, path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn sources_and_include_rules() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(
            r,
            "/usr/share/ros/services/base.yml",
            "console:\n  image: c\nacpid:\n  image: a\n",
        );
        write(
            r,
            "/usr/share/ros/service-index/kernel-headers.yml",
            "kernel-headers:\n  image: k\n",
        );
        write(
            r,
            "/usr/share/ros/service-index/open-vm-tools.yml",
            "open-vm-tools:\n  image: o\n",
        );
        write(
            r,
            paths::USER_CONFIG,
            "rancher:\n  services_include:\n    kernel-headers: true\n    acpid: false\n    gone: true\n  services:\n    web:\n      image: nginx\n",
        );
        let entries = available(r);
        let shown: Vec<(&str, bool)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.enabled))
            .collect();
        assert_eq!(
            shown,
            [
                ("acpid", false),
                ("console", true),
                ("gone", true),
                ("kernel-headers", true),
                ("open-vm-tools", false),
                ("web", true)
            ]
        );
        assert_eq!(
            render(&entries, false),
            "disabled acpid\nenabled  console\nenabled  kernel-headers\ndisabled open-vm-tools\nenabled  web\n"
        );
        let all = render(&entries, true);
        assert!(
            all.contains("enabled  gone             missing (no such index entry or file)\n"),
            "{all}"
        );
        assert!(
            all.contains("enabled  web              config rancher.services\n"),
            "{all}"
        );
    }
}
