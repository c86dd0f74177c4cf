//! Applying a loaded cloud-config to the host: hostname, kernel modules, sysctl,
//! `write_files`, `ssh_authorized_keys` (and `mounts`, in `mounts`). Each step and each item
//! is independent: a failure is recorded in the [`Report`] and the rest goes on. Reads
//! well-known files under the root it is given; every change goes through [`Host`] or
//! [`ModuleLoader`]. Must not run commands (that is `commands`) or touch containers: the
//! `write_files` entries with `container:` are handed back to the caller.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ros_config::schema::{CloudConfig, WriteFile};

use crate::accounts::{lookup_user, resolve_owner};
use crate::confined::{container_path, ContainerRoot, HomeFile};
use crate::host::{Host, ModuleLoader, Owner};
use crate::mounts::apply_mounts;
use crate::paths::{self, under};
use crate::report::{Report, Step};

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every step's result.
    pub report: Report,
}

/// The `write_files` entries of `config` with `container:`, which [`apply`] leaves to
/// whoever starts that service ([`apply_container_write_files`] into its root). One
/// reading for the boot and for every reload of the config.
pub fn container_files(config: &CloudConfig) -> Vec<WriteFile> {
    config
        .write_files
        .iter()
        .filter(|f| f.container.is_some())
        .cloned()
        .collect()
}

/// Apply everything that needs no command and no container, in this order: kernel
/// modules (sysctl keys may need them), sysctl, hostname, `write_files` (mounts may need
/// the files), `mounts`, `ssh_authorized_keys`. Each step's problems are reported and
/// never stop the next.
pub fn apply(
    root: &Path,
    config: &CloudConfig,
    host: &dyn Host,
    modules: &dyn ModuleLoader,
) -> Applied {
    let mut report = Report::default();
    load_modules(config, modules, &mut report);
    apply_sysctl(root, config, host, &mut report);
    apply_hostname(root, config, host, &mut report);
    apply_write_files(root, config, host, &mut report);
    apply_mounts(root, config, host, &mut report);
    authorize_ssh_keys(root, config, host, &mut report);
    Applied { report }
}

/// `rancher.modules`: each entry is `NAME [PARAMS...]`.
pub fn load_modules(config: &CloudConfig, loader: &dyn ModuleLoader, report: &mut Report) {
    for entry in &config.rancher.modules {
        let mut words = entry.split_whitespace();
        let Some(name) = words.next() else {
            report.problem(Step::Modules, "\"\"", "empty module name");
            continue;
        };
        let params = words.collect::<Vec<_>>().join(" ");
        match loader.load_module(name, &params) {
            Ok(()) => report.done(Step::Modules, name, "loaded"),
            Err(e) => report.problem(Step::Modules, name, e),
        }
    }
}

/// The `/proc/sys` file of a sysctl key, as sysctl(8) spells keys: dots separate the
/// levels and a `/` inside a level stands for a dot (`net.ipv4.conf.eth0/100.rp_filter`),
/// unless the key starts its levels with `/` (`net/ipv4/ip_forward`), where dots are
/// literal. Levels that are empty, `.` or `..` are refused: a key must stay under
/// `/proc/sys`.
pub fn sysctl_path(root: &Path, key: &str) -> Result<PathBuf, String> {
    let key = key.trim();
    let slash_separated = key
        .find(['.', '/'])
        .is_some_and(|i| key[i..].starts_with('/'));
    let levels: Vec<String> = if slash_separated {
        key.split('/').map(str::to_string).collect()
    } else {
        key.split('.').map(|l| l.replace('/', ".")).collect()
    };
    if let Some(bad) = levels
        .iter()
        .find(|l| l.is_empty() || *l == "." || *l == ".." || l.contains('\0'))
    {
        return Err(format!(
            "invalid key: level `{bad}` (expected e.g. net.ipv4.ip_forward)"
        ));
    }
    let mut path = under(root, paths::PROC_SYS);
    path.extend(levels);
    Ok(path)
}

/// `rancher.sysctl`: write each value into its `/proc/sys` file.
pub fn apply_sysctl(root: &Path, config: &CloudConfig, host: &dyn Host, report: &mut Report) {
    for (key, value) in &config.rancher.sysctl {
        let path = match sysctl_path(root, key) {
            Ok(p) => p,
            Err(e) => {
                report.problem(Step::Sysctl, key, e);
                continue;
            }
        };
        match host.sysctl(&path, value) {
            Ok(()) => report.done(Step::Sysctl, key, value.to_string()),
            Err(e) => report.problem(Step::Sysctl, key, format!("writing {:?}: {e}", &**value)),
        }
    }
}

/// `/etc/hosts` with `127.0.1.1` naming `hostname` (and its first label, when it has
/// dots): an existing `127.0.1.1` line is replaced, the rest kept; a missing file gets the
/// usual loopback lines.
pub fn hosts_with(current: Option<&str>, hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let entry = if short == hostname {
        format!("127.0.1.1 {hostname}")
    } else {
        format!("127.0.1.1 {hostname} {short}")
    };
    let Some(text) = current else {
        return format!("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n{entry}\n");
    };
    let mut out = String::new();
    let mut placed = false;
    for line in text.lines() {
        if line.split_whitespace().next() == Some("127.0.1.1") {
            if !placed {
                out.push_str(&entry);
                out.push('\n');
                placed = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !placed {
        out.push_str(&entry);
        out.push('\n');
    }
    out
}

/// `hostname` (or `rancher.defaults.hostname`): `sethostname`, `/etc/hostname`, and the
/// `127.0.1.1` line of `/etc/hosts`. Files are rewritten only when they differ.
pub fn apply_hostname(root: &Path, config: &CloudConfig, host: &dyn Host, report: &mut Report) {
    let Some(name) = config
        .hostname
        .as_ref()
        .or(config.rancher.defaults.hostname.as_ref())
    else {
        return;
    };
    let name = name.as_str();
    let mut ok = true;
    if let Err(e) = host.set_hostname(name) {
        report.problem(Step::Hostname, name, format!("sethostname: {e}"));
        ok = false;
    }
    let hostname_file = under(root, paths::ETC_HOSTNAME);
    let hosts_file = under(root, paths::ETC_HOSTS);
    let hosts = match read_optional(&hosts_file) {
        Ok(current) => Some((hosts_with(current.as_deref(), name), current)),
        Err(e) => {
            report.problem(
                Step::Hostname,
                name,
                format!("reading {}: {e}", hosts_file.display()),
            );
            ok = false;
            None
        }
    };
    let mut files = vec![(
        hostname_file.clone(),
        format!("{name}\n"),
        read_optional(&hostname_file).ok().flatten(),
    )];
    if let Some((want, current)) = hosts {
        files.push((hosts_file, want, current));
    }
    for (path, want, current) in files {
        if current.as_deref() == Some(want.as_str()) {
            continue;
        }
        if let Err(e) = host.write_file(&path, want.as_bytes(), 0o644, Owner::ROOT) {
            report.problem(
                Step::Hostname,
                name,
                format!("writing {}: {e}", path.display()),
            );
            ok = false;
        }
    }
    if ok {
        report.done(Step::Hostname, name, "set");
    }
}

fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `write_files` without `container:`: decode, resolve the owner under `root`, write
/// atomically with the entry's mode (default 0644).
pub fn apply_write_files(root: &Path, config: &CloudConfig, host: &dyn Host, report: &mut Report) {
    // Entries with `container:` are [`container_files`]: not written on the host.
    for file in config.write_files.iter().filter(|f| f.container.is_none()) {
        let subject: &str = &file.path;
        if !subject.starts_with('/') {
            report.problem(Step::WriteFiles, subject, "path must be absolute");
            continue;
        }
        let bytes = match file.decoded_content() {
            Ok(b) => b,
            Err(e) => {
                report.problem(Step::WriteFiles, subject, e.to_string());
                continue;
            }
        };
        let owner = match resolve_owner(root, file.owner.as_deref()) {
            Ok(o) => o,
            Err(e) => {
                report.problem(Step::WriteFiles, subject, e.to_string());
                continue;
            }
        };
        let mode = file.mode();
        match host.write_file(&under(root, subject), &bytes, mode, owner) {
            Ok(()) => report.done(
                Step::WriteFiles,
                subject,
                format!("{} bytes, mode {mode:04o}, owner {owner}", bytes.len()),
            ),
            Err(e) => report.problem(Step::WriteFiles, subject, format!("writing: {e}")),
        }
    }
}

/// `write_files` entries with `container:`, written inside the container whose root (as
/// the host sees it) is `root`, typically `/proc/PID/root` of its task. An entry whose
/// path is relative or holds `..` is refused with a problem naming it; the others are
/// resolved inside that root, never through the host's (an absolute symlink in the image
/// resolves in the image), owners against the container's own `/etc/passwd` and
/// `/etc/group` (read the same way), and written atomically with the entry's mode.
pub fn apply_container_write_files(
    root: &Path,
    files: &[WriteFile],
    host: &dyn Host,
    report: &mut Report,
) {
    let subject = |file: &WriteFile| {
        let path: &str = &file.path;
        match file.container.as_deref() {
            Some(c) => format!("{path} (container {c})"),
            None => path.to_string(),
        }
    };
    let mut checked = Vec::new();
    for file in files {
        match container_path(&file.path) {
            Ok(rel) => checked.push((file, rel)),
            Err(e) => report.problem(Step::WriteFiles, subject(file), e.to_string()),
        }
    }
    if checked.is_empty() {
        return;
    }
    let croot = match ContainerRoot::open(root) {
        Ok(r) => r,
        Err(e) => {
            for (file, _) in checked {
                report.problem(Step::WriteFiles, subject(file), e.to_string());
            }
            return;
        }
    };
    for (file, rel) in checked {
        let subject = subject(file);
        let bytes = match file.decoded_content() {
            Ok(b) => b,
            Err(e) => {
                report.problem(Step::WriteFiles, subject, e.to_string());
                continue;
            }
        };
        let owner = match resolve_owner(&croot, file.owner.as_deref()) {
            Ok(o) => o,
            Err(e) => {
                report.problem(Step::WriteFiles, subject, e.to_string());
                continue;
            }
        };
        let mode = file.mode();
        match host.write_file_in_root(&croot, &rel, &bytes, mode, owner) {
            Ok(()) => report.done(
                Step::WriteFiles,
                subject,
                format!("{} bytes, mode {mode:04o}, owner {owner}", bytes.len()),
            ),
            Err(e) => report.problem(Step::WriteFiles, subject, e.to_string()),
        }
    }
}

/// `authorized_keys` text: the existing lines kept, each key not already there appended.
/// Keys typed by hand on the machine survive a reboot that re-applies the config.
pub fn merge_authorized_keys(existing: &str, keys: &[&str]) -> String {
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    for key in keys.iter().map(|k| k.trim()).filter(|k| !k.is_empty()) {
        if !lines.iter().any(|l| l.trim() == key) {
            lines.push(key.to_string());
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// `ssh_authorized_keys`: added to the console user's `~/.ssh/authorized_keys` (directory
/// 0700, file 0600, owned by `rancher`, uid/gid from `/etc/passwd` or 1100), as RancherOS
/// did; root gets none. The user controls the home, so `.ssh` and `authorized_keys` are
/// opened without following symlinks and refused (a problem naming them) when a symlink or
/// owned by someone other than the user or root: see [`Host::update_home_file`].
pub fn authorize_ssh_keys(root: &Path, config: &CloudConfig, host: &dyn Host, report: &mut Report) {
    if config.ssh_authorized_keys.is_empty() {
        return;
    }
    let subject = format!("{}/.ssh/authorized_keys", paths::CONSOLE_HOME);
    let owner = lookup_user(root, paths::CONSOLE_USER)
        .ok()
        .flatten()
        .unwrap_or(Owner {
            uid: paths::CONSOLE_UID,
            gid: paths::CONSOLE_UID,
        });
    let home = under(root, paths::CONSOLE_HOME);
    // Only when nothing is there: a symlink in its place is refused below, not followed.
    if fs::symlink_metadata(&home).is_err() {
        if let Err(e) = host.create_dir(&home, 0o755, owner) {
            report.problem(
                Step::SshAuthorizedKeys,
                &subject,
                format!("creating {}: {e}", home.display()),
            );
            return;
        }
    }
    let keys: Vec<&str> = config.ssh_authorized_keys.iter().map(|k| &**k).collect();
    let merge = |existing: &str| merge_authorized_keys(existing, &keys);
    match host.update_home_file(&home, &AUTHORIZED_KEYS, owner, &merge) {
        Ok(()) => report.done(
            Step::SshAuthorizedKeys,
            &subject,
            format!("{} key(s) for {}", keys.len(), paths::CONSOLE_USER),
        ),
        Err(e) => report.problem(Step::SshAuthorizedKeys, &subject, e.to_string()),
    }
}

/// `~/.ssh/authorized_keys`, as sshd's StrictModes wants it.
const AUTHORIZED_KEYS: HomeFile<'static> = HomeFile {
    dir: ".ssh",
    dir_mode: 0o700,
    name: "authorized_keys",
    mode: 0o600,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_path_table() {
        let root = Path::new("/r");
        let ok = [
            ("net.ipv4.ip_forward", "/r/proc/sys/net/ipv4/ip_forward"),
            ("vm.swappiness", "/r/proc/sys/vm/swappiness"),
            (
                "net.ipv4.conf.eth0/100.rp_filter",
                "/r/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
            ),
            (
                "net/ipv4/conf/eth0.100/rp_filter",
                "/r/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
            ),
        ];
        for (key, want) in ok {
            assert_eq!(
                sysctl_path(root, key).unwrap(),
                PathBuf::from(want),
                "{key}"
            );
        }
        for bad in [
            "",
            "net..ipv4",
            "../../etc/passwd",
            "net/../../x",
            "a./.b",
            ".",
        ] {
            assert!(sysctl_path(root, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_table() {
        assert_eq!(
            hosts_with(None, "node1"),
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 node1\n"
        );
        assert_eq!(
            hosts_with(
                Some("127.0.0.1 localhost\n127.0.1.1 old\n10.0.0.2 db\n127.0.1.1 older\n"),
                "n.example.com"
            ),
            "127.0.0.1 localhost\n127.0.1.1 n.example.com n\n10.0.0.2 db\n"
        );
        assert_eq!(
            hosts_with(Some("127.0.0.1 localhost"), "a"),
            "127.0.0.1 localhost\n127.0.1.1 a\n"
        );
    }

    #[test]
    fn authorized_keys_merge() {
        assert_eq!(
            merge_authorized_keys("", &["ssh-ed25519 AAA a@b", " ", "ssh-rsa BBB"]),
            "ssh-ed25519 AAA a@b\nssh-rsa BBB\n"
        );
        assert_eq!(
            merge_authorized_keys(
                "ssh-rsa OLD by-hand\nssh-rsa BBB\n",
                &["ssh-rsa BBB", "ssh-rsa CCC"]
            ),
            "ssh-rsa OLD by-hand\nssh-rsa BBB\nssh-rsa CCC\n"
        );
    }
}
