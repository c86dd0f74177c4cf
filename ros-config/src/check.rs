//! Checks on a typed config that the types alone cannot express: content that must decode,
//! addresses that must parse, RancherOS keys that are accepted but not used. Returns
//! findings by key path; where they are in which file is `resolve`'s job.

use std::net::IpAddr;

use crate::diagnostic::Severity;
use crate::keypath::KeyPath;
use crate::schema::{
    CloudConfig, CommandSpec, InterfaceConfig, NetworkConfig, RancherConfig,
    MAX_DATASOURCE_TIMEOUT_SECS, MAX_DHCP_TIMEOUT_SECS, MAX_SHUTDOWN_TIMEOUT_SECS,
};

/// One problem found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub path: KeyPath,
    pub severity: Severity,
    pub message: String,
    /// The value cannot be used: the resolver drops it (and reports it once).
    pub drop: bool,
    /// The finding is about the key itself (point at the key, not the value).
    pub on_key: bool,
}

const DATASOURCES: &[&str] = &[
    "aliyun",
    "azure",
    "cloudstack",
    "cmdline",
    "configdrive",
    "digitalocean",
    "ec2",
    "exoscale",
    "file",
    "gce",
    "hetzner",
    "nocloud",
    "openstack",
    "packet",
    "proxmox",
    "url",
    "vmware",
];

struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, path: KeyPath, message: impl Into<String>) {
        self.0.push(Finding {
            path,
            severity: Severity::Error,
            message: message.into(),
            drop: true,
            on_key: false,
        });
    }
    fn warning(&mut self, path: KeyPath, message: impl Into<String>) {
        self.0.push(Finding {
            path,
            severity: Severity::Warning,
            message: message.into(),
            drop: false,
            on_key: false,
        });
    }
    fn unused_key(&mut self, path: KeyPath, message: impl Into<String>) {
        self.warning(path, message);
        if let Some(last) = self.0.last_mut() {
            last.on_key = true;
        }
    }
}

fn root(key: &str) -> KeyPath {
    KeyPath::root().key(key)
}

/// Every finding in `cfg`, in document order.
pub(crate) fn check(cfg: &CloudConfig) -> Vec<Finding> {
    let mut f = Findings(Vec::new());

    for (i, key) in cfg.ssh_authorized_keys.iter().enumerate() {
        if key.split_whitespace().count() < 2 {
            f.warning(
                root("ssh_authorized_keys").index(i),
                "does not look like a public key (`TYPE BASE64 [COMMENT]`)",
            );
        }
    }
    for (i, wf) in cfg.write_files.iter().enumerate() {
        let at = root("write_files").index(i);
        if !wf.path.starts_with('/') {
            f.error(
                at.key("path"),
                format!("`{}` is not an absolute path", wf.path),
            );
        }
        if let Err(e) = wf.decoded_content() {
            f.error(at.key("content"), e.to_string());
        }
    }
    commands(&mut f, root("runcmd"), &cfg.runcmd);
    commands(&mut f, root("bootcmd"), &cfg.bootcmd);
    commands(
        &mut f,
        root("rancher").key("upgrade").key("health_checks"),
        &cfg.rancher.upgrade.health_checks,
    );
    for (i, row) in cfg.mounts.iter().enumerate() {
        if row.0.is_empty() || row.0.len() > 4 {
            f.error(
                root("mounts").index(i),
                format!(
                    "a mount row has 1 to 4 fields (device, mountpoint, fstype, options), found {}",
                    row.0.len()
                ),
            );
        }
    }
    rancher(&mut f, &cfg.rancher);
    f.0
}

fn commands(f: &mut Findings, at: KeyPath, list: &[CommandSpec]) {
    for (i, cmd) in list.iter().enumerate() {
        let empty = match cmd {
            CommandSpec::Shell(line) => line.trim().is_empty(),
            CommandSpec::Argv(argv) => argv.is_empty(),
        };
        if empty {
            f.error(at.index(i), "empty command");
        }
    }
}

fn rancher(f: &mut Findings, r: &RancherConfig) {
    let at = root("rancher");
    for (key, why) in r.ignored_keys() {
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        f.unused_key(
            at.key(key),
            format!("RancherOS key not used by rOS{why}; ignored"),
        );
    }
    for (name, spec) in &r.services {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            f.error(
                at.key("services").key(name.as_str()),
                "a service name may only contain letters, digits, `-`, `_` and `.`",
            );
        } else {
            // The service's own checks: empty image, volume syntax, docker-only keys
            // (warnings), ... — the same ones a service file gets.
            for p in spec.problems() {
                let path =
                    p.path
                        .segments()
                        .iter()
                        .fold(at.key("services").key(name.as_str()), |k, s| match s {
                            crate::keypath::Segment::Key(x) => k.key(x.as_str()),
                            crate::keypath::Segment::Index(i) => k.index(*i),
                        });
                f.0.push(Finding {
                    path,
                    severity: p.severity,
                    message: p.message,
                    drop: p.severity == Severity::Error,
                    on_key: p.on_key,
                });
            }
        }
    }
    for (i, m) in r.modules.iter().enumerate() {
        if m.trim().is_empty() || m.contains('/') {
            f.error(
                at.key("modules").index(i),
                format!("`{m}` is not a module name (with optional parameters)"),
            );
        }
    }
    for key in r.sysctl.keys() {
        let valid = !key.is_empty()
            && !key.starts_with(['.', '/'])
            && !key.contains("..")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
        if !valid {
            f.error(at.key("sysctl").key(key.as_str()), "not a sysctl key");
        }
    }
    network(f, &at.key("network"), &r.network);
    network(f, &at.key("defaults").key("network"), &r.defaults.network);
    seconds(
        f,
        at.key("shutdown_timeout"),
        r.shutdown_timeout,
        MAX_SHUTDOWN_TIMEOUT_SECS,
    );
    seconds(
        f,
        at.key("cloud_init").key("timeout"),
        r.cloud_init.timeout,
        MAX_DATASOURCE_TIMEOUT_SECS,
    );
    for (section, pems) in [
        ("cloud_init", &r.cloud_init.ca_certs),
        ("upgrade", &r.upgrade.ca_certs),
    ] {
        for (i, pem) in pems.iter().enumerate() {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                f.error(
                    at.key(section).key("ca_certs").index(i),
                    "not a PEM certificate (-----BEGIN CERTIFICATE----- ...)",
                );
            }
        }
    }
    if r.ssh.port == Some(0) {
        f.error(at.key("ssh").key("port"), "port 0 is not a port");
    }
    for (i, ds) in r.cloud_init.datasources.iter().enumerate() {
        let kind = ds.split(':').next().unwrap_or_default();
        if !DATASOURCES.contains(&kind) {
            f.warning(
                at.key("cloud_init").key("datasources").index(i),
                format!("unknown datasource `{kind}`; it will be skipped"),
            );
        }
    }
    if let Some(dev) = &r.state.dev {
        let known = ["LABEL=", "UUID=", "PARTUUID=", "PARTLABEL=", "/dev/"]
            .iter()
            .any(|p| dev.starts_with(p));
        if !known {
            f.warning(
                at.key("state").key("dev"),
                format!("`{dev}` is not LABEL=, UUID=, PARTUUID=, PARTLABEL= or a /dev path"),
            );
        }
    }
    for (i, dev) in r.state.autoformat.iter().enumerate() {
        if !dev.starts_with("/dev/") {
            f.error(
                at.key("state").key("autoformat").index(i),
                format!("`{dev}` is not a /dev path"),
            );
        }
    }
    for (key, t) in [
        ("http_proxy", &r.network.http_proxy),
        ("https_proxy", &r.network.https_proxy),
    ] {
        if let Some(url) = t {
            if !url.contains("://") {
                f.warning(
                    at.key("network").key(key),
                    format!("`{url}` has no scheme (http://...)"),
                );
            }
        }
    }
}

/// A duration in seconds must be at most `max` (each bound says why beside its constant in
/// `schema`): unbounded, `rancher.shutdown_timeout = u64::MAX` overflowed PID 1's clock
/// arithmetic and panicked it at every shutdown.
fn seconds(f: &mut Findings, path: KeyPath, value: Option<u64>, max: u64) {
    if let Some(secs) = value.filter(|s| *s > max) {
        f.error(
            path,
            format!("{secs} seconds is longer than the most allowed, {max} seconds"),
        );
    }
}

fn network(f: &mut Findings, at: &KeyPath, n: &NetworkConfig) {
    seconds(
        f,
        at.key("dhcp_timeout"),
        n.dhcp_timeout,
        MAX_DHCP_TIMEOUT_SECS,
    );
    for (i, ns) in n.dns.nameservers.iter().enumerate() {
        if ns.parse::<IpAddr>().is_err() {
            f.error(
                at.key("dns").key("nameservers").index(i),
                format!("`{ns}` is not an IP address"),
            );
        }
    }
    for (name, iface) in &n.interfaces {
        let here = at.key("interfaces").key(name.as_str());
        if let Err(why) = interface_key(name) {
            f.error(here, why);
            continue;
        }
        interface(f, &here, iface);
    }
}

fn interface_key(name: &str) -> Result<(), String> {
    if let Some(mac) = name.strip_prefix("mac=") {
        let ok = !mac.is_empty()
            && mac
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'*');
        return if ok {
            Ok(())
        } else {
            Err(format!("`{mac}` is not a MAC address (or glob)"))
        };
    }
    let ok = !name.is_empty()
        && name.len() <= 15
        && !name.contains('/')
        && !name.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an interface name, glob or `mac=ADDRESS` (names have at most 15 characters)"
        ))
    }
}

fn interface(f: &mut Findings, at: &KeyPath, i: &InterfaceConfig) {
    if let Some(addr) = &i.address {
        if let Err(why) = cidr(addr) {
            f.error(at.key("address"), why);
        }
    }
    for (n, addr) in i.addresses.iter().enumerate() {
        if let Err(why) = cidr(addr) {
            f.error(at.key("addresses").index(n), why);
        }
    }
    for (key, gw, want_v6) in [
        ("gateway", &i.gateway, false),
        ("gateway_ipv6", &i.gateway_ipv6, true),
    ] {
        if let Some(gw) = gw {
            match gw.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv6() == want_v6 => {}
                _ => f.error(
                    at.key(key),
                    format!(
                        "`{gw}` is not an IPv{} address",
                        if want_v6 { 6 } else { 4 }
                    ),
                ),
            }
        }
    }
    if let Some(mtu) = i.mtu {
        if !(68..=65535).contains(&mtu) {
            f.error(at.key("mtu"), format!("MTU {mtu} is outside 68..65535"));
        }
    }
}

/// `192.168.1.10/24` or `fd00::1/64`.
fn cidr(text: &str) -> Result<(), String> {
    let bad = || format!("`{text}` is not an address in CIDR form (`192.168.1.10/24`)");
    let (ip, prefix) = text.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_table() {
        for ok in ["10.0.0.1/8", "192.168.1.10/24", "fd00::1/64", "0.0.0.0/0"] {
            assert!(cidr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "fd00::1/129",
            "x/24",
            "10.0.0.1/",
        ] {
            assert!(cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_bounded() {
        let cases: [(&str, &[&str]); 11] = [
            // (cloud-config, diagnostics)
            ("rancher:\n  shutdown_timeout: 3600\n", &[]),
            (
                "rancher:\n  shutdown_timeout: 3601\n",
                &["t.yml:2:21: rancher.shutdown_timeout: 3601 seconds is longer than the most allowed, 3600 seconds"],
            ),
            (
                "rancher:\n  shutdown_timeout: 99999999999999999\n",
                &["t.yml:2:21: rancher.shutdown_timeout: 99999999999999999 seconds is longer than the most allowed, 3600 seconds"],
            ),
            ("rancher:\n  network: {dhcp_timeout: 3600}\n", &[]),
            (
                "rancher:\n  network: {dhcp_timeout: 3601}\n",
                &["t.yml:2:27: rancher.network.dhcp_timeout: 3601 seconds is longer than the most allowed, 3600 seconds"],
            ),
            (
                "rancher:\n  defaults:\n    network: {dhcp_timeout: 18446744073709551615}\n",
                &["t.yml:3:29: rancher.defaults.network.dhcp_timeout: 18446744073709551615 seconds is longer than the most allowed, 3600 seconds"],
            ),
            ("rancher:\n  shutdown_timeout: 0\n", &[]),
            ("rancher:\n  cloud_init: {timeout: 600}\n", &[]),
            (
                "rancher:\n  cloud_init: {ca_certs: [not-a-pem]}\n",
                &["t.yml:2:27: rancher.cloud_init.ca_certs[0]: not a PEM certificate (-----BEGIN CERTIFICATE----- ...)"],
            ),
            (
                "rancher:\n  upgrade: {ca_certs: [not-a-pem]}\n",
                &["t.yml:2:24: rancher.upgrade.ca_certs[0]: not a PEM certificate (-----BEGIN CERTIFICATE----- ...)"],
            ),
            (
                "rancher:\n  cloud_init: {timeout: 601}\n",
                &["t.yml:2:25: rancher.cloud_init.timeout: 601 seconds is longer than the most allowed, 600 seconds"],
            ),
        ];
        for (text, want) in cases {
            let shown: Vec<String> = crate::validate_text("t.yml", text, crate::Mode::Strict)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(shown, want, "{text}");
        }
    }

    #[test]
    fn a_duration_over_its_bound_is_dropped_at_boot() {
        let layer = crate::Layer::parse("t.yml", "rancher:\n  shutdown_timeout: 4000\n").unwrap();
        let r = crate::resolve(vec![layer], crate::Mode::Boot);
        assert_eq!(r.config.rancher.shutdown_timeout, None);
        assert_eq!(
            r.config.shutdown_timeout(),
            crate::schema::DEFAULT_SHUTDOWN_TIMEOUT
        );
        assert!(r.diagnostics[0].is_error(), "{:?}", r.diagnostics);
    }

    #[test]
    fn set_refuses_a_duration_over_its_bound() {
        let mut value = crate::Value::mapping();
        crate::set(&mut value, "rancher.shutdown_timeout", "3600").unwrap();
        let before = value.clone();
        match crate::set(&mut value, "rancher.shutdown_timeout", "99999999999999999") {
            Err(crate::SetError::Invalid { diagnostics, .. }) => {
                assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
                assert_eq!(
                    diagnostics[0].key_path.to_string(),
                    "rancher.shutdown_timeout"
                );
                assert!(
                    diagnostics[0].message.contains("3600"),
                    "{}",
                    diagnostics[0]
                );
            }
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(value, before);
    }

    #[test]
    fn interface_key_table() {
        for ok in [
            "eth0",
            "eth*",
            "mac=00:11:22:33:44:55",
            "mac=00:11:*",
            "br0",
        ] {
            assert!(interface_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "mac=",
            "mac=zz",
            "a/b",
            "a very long interface name",
            "eth 0",
        ] {
            assert!(interface_key(bad).is_err(), "{bad}");
        }
    }
}
