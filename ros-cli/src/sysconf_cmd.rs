//! `ros sysconf` (hidden): the merged config, reduced to what the system services' shell
//! scripts need, in a form `read` and `eval` can take without parsing YAML.
//!
//! Owns interface matching (name, glob, `mac=`) and the validation of every value it
//! prints: addresses, gateways, name servers and search domains are parsed here, so the
//! scripts never see a character a shell would interpret. Must not change the system: the
//! scripts in the network and console images do that with busybox tools.

use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::Path;

use ros_config::schema::InterfaceConfig;
use ros_config::CloudConfig;

use crate::CliError;

pub mod docker;
pub mod tls;

/// `ros sysconf`.
#[derive(Debug, clap::Args)]
pub struct SysconfArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// One line per item: `link NAME dhcp|static MTU|- GATEWAY|- [ADDRESS/PREFIX...]`,
    /// `nameserver IP`, `search DOMAIN`, `dhcp_timeout SECONDS`; problems go to stderr.
    Network,
    /// Shell assignments (single-quoted): AUTOLOGIN, PASSWORD, SSH_DAEMON, SSH_PORT,
    /// SSH_LISTEN.
    Console,
    /// Exec dockerd with the arguments and environment `rancher.docker` asks for (run
    /// inside the docker service).
    Docker,
}

/// Print the requested view of the config under `/` (or `$ROS_ROOT`).
pub fn run(args: SysconfArgs) -> Result<(), CliError> {
    let root = crate::host::root();
    let config = load(&root)?;
    let text = match args.what {
        What::Network => {
            let (text, problems) = network_plan(&config, &links(&root.join("sys/class/net")));
            for p in problems {
                eprintln!("ros sysconf network: {p}");
            }
            text
        }
        What::Console => console_vars(&config),
        What::Docker => return docker::exec(&config.rancher.docker),
    };
    print!("{text}");
    Ok(())
}

/// The merged config as PID 1 sees it (every layer under `root`, its kernel line).
pub(crate) fn load(root: &Path) -> Result<CloudConfig, CliError> {
    let loaded = ros_config::load_system(root).map_err(|e| {
        CliError::failure(format!(
            "reading {root}/proc/cmdline: {e}",
            root = root.display()
        ))
    })?;
    Ok(loaded.config)
}

/// A network link: its name and MAC address (lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Kernel name (`eth0`).
    pub name: String,
    /// MAC address, lower case (`52:54:00:12:34:56`); empty if unknown.
    pub mac: String,
}

/// The links under `sys_class_net` (sorted, without `lo`).
fn links(sys_class_net: &Path) -> Vec<Link> {
    let mut links: Vec<Link> = fs::read_dir(sys_class_net)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n != "lo")
                .map(|name| Link {
                    mac: fs::read_to_string(sys_class_net.join(&name).join("address"))
                        .map(|m| m.trim().to_ascii_lowercase())
                        .unwrap_or_default(),
                    name,
                })
                .collect()
        })
        .unwrap_or_default();
    links.sort_by(|a, b| a.name.cmp(&b.name));
    links
}

/// `*` and `?` globs, as RancherOS matched interface names.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob_match(rest, name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some((b'?', rest)), Some((_, n))) => glob_match(rest, n),
        (Some((p, rest)), Some((c, n))) if p == c => glob_match(rest, n),
        _ => false,
    }
}

/// The config entry for `link`: an exact name first, then `mac=`, then the first glob (in
/// key order). An entry's `match:` field, if set, stands in for its key.
fn entry_for<'a>(config: &'a CloudConfig, link: &Link) -> Option<&'a InterfaceConfig> {
    let entries: Vec<(&str, &InterfaceConfig)> = config
        .rancher
        .network
        .interfaces
        .iter()
        .map(|(key, cfg)| (cfg.r#match.as_deref().unwrap_or(key), cfg))
        .collect();
    let by_name = entries.iter().find(|(p, _)| *p == link.name);
    let by_mac = || {
        entries.iter().find(|(p, _)| {
            p.strip_prefix("mac=")
                .is_some_and(|m| !link.mac.is_empty() && m.eq_ignore_ascii_case(&link.mac))
        })
    };
    let by_glob = || {
        entries.iter().find(|(p, _)| {
            !p.starts_with("mac=")
                && p.contains(['*', '?'])
                && glob_match(p.as_bytes(), link.name.as_bytes())
        })
    };
    by_name.or_else(by_mac).or_else(by_glob).map(|(_, c)| *c)
}

/// `ADDR/PREFIX`, checked.
fn cidr(text: &str) -> Option<String> {
    let (ip, prefix) = text.trim().split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then(|| format!("{ip}/{prefix}"))
}

fn is_domain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The network plan for `links` and every problem found (values left out, with why).
pub fn network_plan(config: &CloudConfig, links: &[Link]) -> (String, Vec<String>) {
    let net = &config.rancher.network;
    let mut out = String::new();
    let mut problems = Vec::new();
    for link in links {
        let Some(cfg) = entry_for(config, link) else {
            continue;
        };
        let subject = format!("rancher.network.interfaces for {}", link.name);
        let mut addresses = Vec::new();
        for a in cfg.address.iter().chain(cfg.addresses.iter()) {
            match cidr(a) {
                Some(a) => addresses.push(a),
                None => problems.push(format!("{subject}: address '{a}' is not ADDR/PREFIX")),
            }
        }
        let gateway = match cfg.gateway.as_deref().map(str::trim) {
            None | Some("") => "-".to_string(),
            Some(g) => match g.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => {
                    problems.push(format!("{subject}: gateway '{g}' is not an IP address"));
                    "-".to_string()
                }
            },
        };
        let mtu = cfg.mtu.map_or("-".to_string(), |m| m.to_string());
        // RancherOS: DHCP unless turned off, or static addresses are given.
        let dhcp = cfg.dhcp.unwrap_or(addresses.is_empty());
        let mode = if dhcp { "dhcp" } else { "static" };
        let _ = write!(out, "link {} {mode} {mtu} {gateway}", link.name);
        for a in &addresses {
            let _ = write!(out, " {a}");
        }
        out.push('\n');
    }
    for ns in &net.dns.nameservers {
        match ns.trim().parse::<IpAddr>() {
            Ok(ip) => {
                let _ = writeln!(out, "nameserver {ip}");
            }
            Err(_) => problems.push(format!(
                "rancher.network.dns.nameservers: '{ns}' is not an IP address"
            )),
        }
    }
    for domain in &net.dns.search {
        if is_domain(domain.trim()) {
            let _ = writeln!(out, "search {}", domain.trim());
        } else {
            problems.push(format!(
                "rancher.network.dns.search: '{domain}' is not a domain name"
            ));
        }
    }
    if let Some(t) = net.dhcp_timeout {
        let _ = writeln!(out, "dhcp_timeout {t}");
    }
    (out, problems)
}

/// `'text'` for sh, with `'` as `'\''`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Shell assignments for the console's entry script.
pub fn console_vars(config: &CloudConfig) -> String {
    let r = &config.rancher;
    let vars = [
        (
            "AUTOLOGIN",
            r.autologin.as_deref().unwrap_or("").to_string(),
        ),
        ("PASSWORD", r.password.as_deref().unwrap_or("").to_string()),
        ("SSH_DAEMON", r.ssh.daemon.unwrap_or(true).to_string()),
        ("SSH_PORT", r.ssh.port.unwrap_or(22).to_string()),
        (
            "SSH_LISTEN",
            r.ssh.listen_address.as_deref().unwrap_or("").to_string(),
        ),
    ];
    vars.iter()
        .map(|(k, v)| format!("{k}={}\n", quoted(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> CloudConfig {
        let layer = ros_config::Layer::parse("test.yml", yaml).unwrap();
        ros_config::resolve(vec![layer], ros_config::Mode::Strict).config
    }

    fn link(name: &str, mac: &str) -> Link {
        Link {
            name: name.into(),
            mac: mac.into(),
        }
    }

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("eth*", "eth0", true),
            ("eth*", "ens3", false),
            ("e?h0", "eth0", true),
            ("*", "anything", true),
            ("eth", "eth0", false),
        ] {
            assert_eq!(glob_match(p.as_bytes(), n.as_bytes()), want, "{p} {n}");
        }
    }

    #[test]
    fn name_beats_mac_beats_glob_and_values_are_checked() {
        let cfg = config(
            "rancher:\n  network:\n    dns:\n      nameservers: [10.0.2.3, 'x; rm -rf /']\n      search: [example.com, 'a b']\n    interfaces:\n      eth*:\n        dhcp: true\n      mac=52:54:00:AA:BB:CC:\n        address: 10.1.0.5/24\n        gateway: 10.1.0.1\n        mtu: 1400\n      eth2:\n        addresses: [10.2.0.5/16, 'bad', 10.2.0.6/33]\n        dhcp: false\n",
        );
        let links = [
            link("eth0", "52:54:00:12:34:56"),
            link("eth1", "52:54:00:aa:bb:cc"),
            link("eth2", "52:54:00:aa:bb:cc"),
            link("wlan0", ""),
        ];
        let (text, problems) = network_plan(&cfg, &links);
        assert_eq!(
            text,
            "link eth0 dhcp - -\n\
             link eth1 static 1400 10.1.0.1 10.1.0.5/24\n\
             link eth2 static - - 10.2.0.5/16\n\
             nameserver 10.0.2.3\n\
             search example.com\n"
        );
        // The config loader drops some bad values itself; what reaches here is still checked.
        assert!(problems.iter().any(|p| p.contains("'a b'")), "{problems:?}");
    }

    #[test]
    fn console_values_are_single_quoted() {
        let cfg = config("rancher:\n  password: \"it's\"\n  ssh:\n    port: 2222\n");
        let vars = console_vars(&cfg);
        assert!(vars.contains("PASSWORD='it'\\''s'\n"), "{vars}");
        assert!(vars.contains("SSH_PORT='2222'\n"), "{vars}");
        assert!(vars.contains("SSH_DAEMON='true'\n"), "{vars}");
    }
}
