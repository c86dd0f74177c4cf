//! `ros sysconf docker`: `rancher.docker` as dockerd's command line and environment, then
//! exec dockerd (run by the docker service's entry script, inside its container).

use std::fs;
use std::net::IpAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use ros_config::schema::DockerConfig;

use super::tls;
use crate::CliError;

/// Host paths the docker service binds at the same place (services/docker.yml): a data
/// root elsewhere would be inside the container's own, throw-away filesystem. Not /mnt:
/// the state disk is mounted there, and the engine must not see it.
pub const BOUND_PREFIXES: [&str; 3] = ["/var/lib/docker", "/opt", "/home"];

/// dockerd's arguments and environment for `rancher.docker`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dockerd {
    /// Arguments after `dockerd`.
    pub args: Vec<String>,
    /// `NAME`, `value` pairs added to the environment.
    pub env: Vec<(String, String)>,
    /// Settings that have no effect here, one line each, for the service log.
    pub warnings: Vec<String>,
}

/// Build dockerd's command line. Errors name the `rancher.docker` key at fault; every
/// problem is reported, not only the first.
pub fn dockerd(cfg: &DockerConfig) -> Result<Dockerd, Vec<String>> {
    let mut d = Dockerd::default();
    let mut errors = Vec::new();
    let mut flag = |name: &str, value: &str| d.args.push(format!("--{name}={value}"));

    for host in &cfg.host {
        flag("host", host);
    }
    if let Some(v) = &cfg.storage_driver {
        flag("storage-driver", v);
    }
    if let Some(root) = cfg.data_root() {
        let key = if cfg.data_root.is_some() {
            "data_root"
        } else {
            "graph"
        };
        if BOUND_PREFIXES.iter().any(|p| is_under(root, p)) {
            flag("data-root", root);
        } else {
            errors.push(format!(
                "rancher.docker.{key}: {root} is not under {} (the paths the docker service \
                 shares with the host), so images and containers would be lost on restart",
                BOUND_PREFIXES.join(", ")
            ));
        }
    }
    let options = [
        ("group", &cfg.group),
        ("log-driver", &cfg.log_driver),
        ("log-level", &cfg.log_level),
        ("registry-mirror", &cfg.registry_mirror),
        ("bridge", &cfg.bridge),
        ("bip", &cfg.bip),
        ("config-file", &cfg.config_file),
        ("containerd", &cfg.containerd),
        ("exec-root", &cfg.exec_root),
        ("pidfile", &cfg.pid_file),
    ];
    for (name, value) in options {
        if let Some(v) = value {
            flag(name, v);
        }
    }
    for (key, value) in &cfg.log_opts {
        flag("log-opt", &format!("{key}={}", value.0));
    }
    for registry in &cfg.insecure_registry {
        flag("insecure-registry", registry);
    }
    let switches = [
        ("userland-proxy", cfg.userland_proxy),
        ("debug", cfg.debug),
        ("live-restore", cfg.live_restore),
        ("selinux-enabled", cfg.selinux_enabled),
    ];
    for (name, value) in switches {
        if let Some(v) = value {
            flag(name, &v.to_string());
        }
    }
    if let Some(mtu) = cfg.mtu {
        flag("mtu", &mtu.to_string());
    }
    if cfg.tls {
        d.args.extend(cfg.tls_args.iter().map(|a| a.0.clone()));
    }
    // Last, so that they can override anything above.
    d.args.extend(cfg.extra_args.iter().map(|a| a.0.clone()));

    for entry in &cfg.environment {
        match entry.split_once('=') {
            Some((name, value)) if valid_env_name(name) => {
                d.env.push((name.to_string(), value.to_string()));
            }
            _ => errors.push(format!(
                "rancher.docker.environment: {:?} is not NAME=value",
                entry.0
            )),
        }
    }
    if let Some(engine) = &cfg.engine {
        if !matches!(engine.as_ref(), "docker" | "default") {
            d.warnings.push(format!(
                "rancher.docker.engine: {engine} is not shipped; running Debian's docker 20.10"
            ));
        }
    }
    if cfg.restart.is_some() {
        d.warnings.push(
            "rancher.docker.restart: dockerd 20.10 has no such option; containers follow \
             their own restart policy"
                .into(),
        );
    }
    for (key, set) in [
        ("storage_context", cfg.storage_context.is_some()),
        ("exec", cfg.exec.is_some()),
    ] {
        if set {
            d.warnings.push(format!(
                "rancher.docker.{key}: not used (the engine always runs in its own system container)"
            ));
        }
    }
    if errors.is_empty() {
        Ok(d)
    } else {
        Err(errors)
    }
}

fn is_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') && !rest.split('/').any(|c| c == ".."))
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where the `rancher` user's docker CLI finds its client certificate (DOCKER_CERT_PATH's
/// default for that user).
pub const CLIENT_DIR: &str = "/home/rancher/.docker";
const RANCHER_UID: u32 = 1100;

/// The host's addresses a client may use to reach the engine: not loopback (always in the
/// certificate), not link-local, not the engine's own bridges.
fn host_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| {
            !["docker", "br-", "veth"]
                .iter()
                .any(|p| a.interface_name.starts_with(p))
        })
        .filter_map(|a| {
            let addr = a.address?;
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(addr.as_sockaddr_in6()?.ip())
            };
            let link_local = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            (!ip.is_loopback() && !link_local).then_some(ip)
        })
        .collect()
}

/// Copy the generated client certificate to `dir` for the `rancher` user.
fn give_client_certificate(state: &Path, dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (name, mode) in [("ca.pem", 0o644), ("cert.pem", 0o644), ("key.pem", 0o600)] {
        let text = fs::read_to_string(state.join(name))
            .map_err(|e| format!("reading {}: {e}", state.join(name).display()))?;
        tls::write(dir, name, &text, mode)?;
    }
    for path in [
        dir.to_path_buf(),
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    ] {
        std::os::unix::fs::chown(&path, Some(RANCHER_UID), Some(RANCHER_UID))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Replace this process with dockerd, configured from `cfg`.
pub fn exec(cfg: &DockerConfig) -> Result<(), CliError> {
    let d = dockerd(cfg).map_err(|errors| {
        CliError::new(
            crate::ExitStatus::InvalidConfig,
            format!(
                "ros sysconf docker: {}",
                errors.join("\nros sysconf docker: ")
            ),
        )
    })?;
    for w in &d.warnings {
        eprintln!("ros sysconf docker: warning: {w}");
    }
    if cfg.tls {
        let fail = |e: String| CliError::failure(format!("ros sysconf docker: {e}"));
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let names = tls::subject_names(&hostname, &host_addresses());
        let material =
            tls::server_material(cfg, Path::new(tls::STATE_DIR), &names).map_err(fail)?;
        tls::install(&material, Path::new(tls::DOCKER_DIR)).map_err(fail)?;
        if cfg.ca_cert.is_none() {
            give_client_certificate(Path::new(tls::STATE_DIR), Path::new(CLIENT_DIR))
                .map_err(fail)?;
        }
        eprintln!("ros sysconf docker: TLS for {}", names.join(", "));
    }
    eprintln!("ros sysconf docker: dockerd {}", d.args.join(" "));
    let err = Command::new("dockerd").args(&d.args).envs(d.env).exec();
    Err(CliError::failure(format!(
        "ros sysconf docker: running dockerd: {err}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ros_config::Mode;

    fn docker(yaml: &str) -> DockerConfig {
        let text = format!("rancher:\n  docker:\n{}", textwrap(yaml));
        let layer = ros_config::Layer::parse("test.yml", &text).unwrap();
        let resolved = ros_config::resolve(vec![layer], Mode::Strict);
        assert!(
            resolved.diagnostics.is_empty(),
            "{:?}",
            resolved.diagnostics
        );
        resolved.config.rancher.docker
    }

    fn textwrap(yaml: &str) -> String {
        yaml.lines().map(|l| format!("    {l}\n")).collect()
    }

    #[test]
    fn keys_become_flags_in_a_fixed_order_with_extra_args_last() {
        let d = dockerd(&docker(
            "host: [unix:///var/run/docker.sock]\nstorage_driver: overlay2\n\
             data_root: /opt/docker\ngroup: docker\nlog_driver: json-file\n\
             log_opts: {max-size: 25m, max-file: \"2\"}\ninsecure_registry: [r.local:5000]\n\
             registry_mirror: http://mirror:5000\nuserland_proxy: false\nmtu: 1400\n\
             extra_args: [--debug, --ip-forward=true]\nenvironment: [HTTP_PROXY=http://p:3128]",
        ))
        .unwrap();
        assert_eq!(
            d.args,
            [
                "--host=unix:///var/run/docker.sock",
                "--storage-driver=overlay2",
                "--data-root=/opt/docker",
                "--group=docker",
                "--log-driver=json-file",
                "--registry-mirror=http://mirror:5000",
                "--log-opt=max-file=2",
                "--log-opt=max-size=25m",
                "--insecure-registry=r.local:5000",
                "--userland-proxy=false",
                "--mtu=1400",
                "--debug",
                "--ip-forward=true",
            ]
        );
        assert_eq!(
            d.env,
            [("HTTP_PROXY".to_string(), "http://p:3128".to_string())]
        );
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn tls_args_only_with_tls() {
        let off = dockerd(&docker("tls: false\ntls_args: [--tlsverify]")).unwrap();
        assert!(off.args.is_empty());
        let on = dockerd(&docker(
            "tls: true\ntls_args: [--tlsverify, -H=0.0.0.0:2376]",
        ))
        .unwrap();
        assert_eq!(on.args, ["--tlsverify", "-H=0.0.0.0:2376"]);
    }

    #[test]
    fn problems_name_their_key_and_all_are_reported() {
        let errors = dockerd(&docker(
            "graph: /srv/docker\nenvironment: [NOEQUALS, \"1BAD=x\", GOOD=1]",
        ))
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("rancher.docker.graph: /srv/docker is not under"));
        assert!(errors[1].contains("rancher.docker.environment: \"NOEQUALS\""));
        assert!(errors[2].contains("\"1BAD=x\""));
        // A data root that escapes its prefix is not under it.
        assert!(dockerd(&docker("data_root: /opt/../etc")).is_err());
        // The state disk's mount point is not bound into the engine.
        assert!(dockerd(&docker("data_root: /mnt/state/docker")).is_err());
        assert!(dockerd(&docker("data_root: /var/lib/dockerx")).is_err());
        assert!(dockerd(&docker("data_root: /var/lib/docker")).is_ok());
    }

    #[test]
    fn settings_without_effect_are_warned_about() {
        let d = dockerd(&docker("engine: docker-24.0.7\nrestart: true\nexec: true")).unwrap();
        assert_eq!(d.warnings.len(), 3, "{:?}", d.warnings);
        assert!(dockerd(&docker("engine: docker"))
            .unwrap()
            .warnings
            .is_empty());
    }
}
