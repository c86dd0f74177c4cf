//! What `ros service list` shows: every service that could run, where it is defined, and
//! whether `rancher.services_include` turns it on. Reads the definition directories and the
//! merged config below a root; the same rules as PID 1's catalog.

use std::path::{Path, PathBuf};

use ros_config::{paths, Mode};

pub use ros_config::paths::SERVICES_DIR;
pub use ros_config::paths::SERVICE_INDEX_DIR;

pub use ros_config::catalog::Source;

/// One line of `ros service list`: a service of the one catalog (`ros_config::catalog`,
/// which PID 1 starts from too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Service name (for an index entry: the file's stem; for an include: its path).
    pub name: String,
    /// Whether it runs.
    pub enabled: bool,
    /// Where it is defined.
    pub source: Source,
    /// Why PID 1 does not start it although it is enabled (it waits for a service that
    /// does not exist, or is part of a cycle): the same plan PID 1 makes.
    pub not_started: Option<String>,
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

/// Every service below `root`, by name, as PID 1 sees them (its problems are in the boot
/// log and `ros config validate`).
pub fn available(root: &Path) -> Vec<Entry> {
    // A command line that cannot be read counts as empty here: the list is still shown.
    let loaded =
        ros_config::load_system(root).unwrap_or_else(|_| ros_config::load(root, None, Mode::Boot));
    let cat = ros_config::catalog::read(
        &paths::under(root, SERVICES_DIR),
        &paths::under(root, SERVICE_INDEX_DIR),
        &loaded.config,
    );
    let mut left_out = cat.plan().left_out;
    cat.entries
        .into_values()
        .map(|e| Entry {
            not_started: left_out.remove(&e.name),
            name: e.name,
            enabled: e.enabled,
            source: e.source,
        })
        .collect()
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
                out.push_str(&format!("{:<8} {}{}\n", state(e), e.name, not_started(e)));
            }
            continue;
        }
        let source = match &e.source {
            Source::Builtin(p) => format!("builtin {}", p.display()),
            Source::Index(p) => format!("index {}", p.display()),
            Source::Config => "config rancher.services".to_string(),
            Source::Include(p) => format!("file {}", p.display()),
            Source::Missing => "missing (no such index entry or file)".to_string(),
        };
        out.push_str(&format!(
            "{:<8} {:<width$}   {source}{}\n",
            state(e),
            e.name,
            not_started(e)
        ));
    }
    out
}

fn not_started(e: &Entry) -> String {
    e.not_started
        .as_ref()
        .map_or(String::new(), |why| format!("  (not started: {why})"))
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
            "rancher:\n  services_include:\n    kernel-headers: true\n    acpid: false\n    gone: true\n  services:\n    web:\n      image: nginx\n      labels:\n        io.rancher.os.after: nope\n",
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
            "disabled acpid\nenabled  console\nenabled  kernel-headers\ndisabled open-vm-tools\n\
             enabled  web  (not started: service web: io.rancher.os.after names `nope`, which is not a defined service)\n"
        );
        let all = render(&entries, true);
        assert!(
            all.contains("enabled  gone             missing (no such index entry or file)\n"),
            "{all}"
        );
        assert!(
            all.contains("enabled  web              config rancher.services  (not started: "),
            "{all}"
        );
    }
}
