//! TLS for the user Docker engine's TCP port (`rancher.docker.tls`): the CA and server
//! certificate from `rancher.docker.{ca_cert,server_cert,server_key}`, or, when none is
//! set, generated once and kept with rancher's state (RancherOS's `ros tls gen`), with a
//! client certificate for the `rancher` user.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use ros_config::schema::DockerConfig;

/// Where generated material is kept (on the state disk when there is one).
pub const STATE_DIR: &str = "/var/lib/rancher/tls";
/// Where dockerd reads it (`rancher.docker.tls_args`' default paths).
pub const DOCKER_DIR: &str = "/etc/docker/tls";

/// PEM texts dockerd needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMaterial {
    /// The CA that client certificates must chain to.
    pub ca: String,
    /// The server certificate.
    pub cert: String,
    /// The server's private key.
    pub key: String,
}

/// The names a server certificate is valid for: these, `localhost` and the loopback
/// addresses, sorted and without duplicates.
pub fn subject_names(hostname: &str, addresses: &[IpAddr]) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| s.to_string())
        .chain((!hostname.is_empty()).then(|| hostname.to_string()))
        .chain(addresses.iter().map(IpAddr::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The server material from the config, or generated under `state` (created 0700): the CA
/// once, the server certificate again whenever `names` change. A new CA also writes a
/// client certificate (`ca.pem`, `cert.pem`, `key.pem`) to `state`.
pub fn server_material(
    cfg: &DockerConfig,
    state: &Path,
    names: &[String],
) -> Result<ServerMaterial, String> {
    let given = [
        ("ca_cert", &cfg.ca_cert),
        ("server_cert", &cfg.server_cert),
        ("server_key", &cfg.server_key),
    ];
    let missing: Vec<&str> = given
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| *k)
        .collect();
    match missing.len() {
        0 => {
            let text = |v: &Option<ros_config::schema::Text>| {
                v.as_ref().map(|t| t.0.clone()).unwrap_or_default()
            };
            return Ok(ServerMaterial {
                ca: text(&cfg.ca_cert),
                cert: text(&cfg.server_cert),
                key: text(&cfg.server_key),
            });
        }
        3 => {}
        _ => {
            return Err(format!(
            "rancher.docker.tls: {} set but {} missing; set all three or none (to generate them)",
            given
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| format!("rancher.docker.{k}"))
                .collect::<Vec<_>>()
                .join(", "),
            missing
                .iter()
                .map(|k| format!("rancher.docker.{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        }
    }
    generate(state, names)
}

fn generate(state: &Path, names: &[String]) -> Result<ServerMaterial, String> {
    fn err(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
        move |e| format!("generating {what}: {e}")
    }
    fs::create_dir_all(state).map_err(|e| format!("creating {}: {e}", state.display()))?;
    fs::set_permissions(state, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("securing {}: {e}", state.display()))?;

    let ca_key_path = state.join("ca-key.pem");
    let (ca_key, ca_pem) = match (read(&ca_key_path), read(&state.join("ca.pem"))) {
        (Some(key), Some(pem)) => (KeyPair::from_pem(&key).map_err(err("the CA key"))?, pem),
        _ => {
            let key = KeyPair::generate().map_err(err("the CA key"))?;
            let pem = ca_params().self_signed(&key).map_err(err("the CA"))?.pem();
            write(state, "ca-key.pem", &key.serialize_pem(), 0o600)?;
            write(state, "ca.pem", &pem, 0o644)?;
            // A new CA: the old server and client certificates are worthless.
            let _ = fs::remove_file(state.join("server-names"));
            let client_key = KeyPair::generate().map_err(err("the client key"))?;
            let mut client = CertificateParams::new(Vec::<String>::new())
                .map_err(err("the client certificate"))?;
            client
                .distinguished_name
                .push(DnType::CommonName, "rOS docker client");
            client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let issuer = ca_params().self_signed(&key).map_err(err("the CA"))?;
            let cert = client
                .signed_by(&client_key, &issuer, &key)
                .map_err(err("the client certificate"))?;
            write(state, "cert.pem", &cert.pem(), 0o644)?;
            write(state, "key.pem", &client_key.serialize_pem(), 0o600)?;
            (key, pem)
        }
    };
    let names_text = names.join("\n");
    if read(&state.join("server-names")).as_deref() == Some(names_text.as_str()) {
        if let (Some(cert), Some(key)) = (
            read(&state.join("server-cert.pem")),
            read(&state.join("server-key.pem")),
        ) {
            return Ok(ServerMaterial {
                ca: ca_pem,
                cert,
                key,
            });
        }
    }
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(err("the server certificate"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "rOS docker");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    for name in names {
        params.subject_alt_names.push(match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(err("the server certificate"))?,
            ),
        });
    }
    let key = KeyPair::generate().map_err(err("the server key"))?;
    let issuer = ca_params().self_signed(&ca_key).map_err(err("the CA"))?;
    let cert = params
        .signed_by(&key, &issuer, &ca_key)
        .map_err(err("the server certificate"))?
        .pem();
    let key = key.serialize_pem();
    write(state, "server-cert.pem", &cert, 0o644)?;
    write(state, "server-key.pem", &key, 0o600)?;
    write(state, "server-names", &names_text, 0o644)?;
    Ok(ServerMaterial {
        ca: ca_pem,
        cert,
        key,
    })
}

/// The CA's fixed parameters: a re-created CA certificate with the kept key is the same
/// issuer (name and key) as the one clients hold.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "rOS docker CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().filter(|s| !s.is_empty())
}

/// Write `dir/name` atomically; `mode` applies to a new file.
pub fn write(dir: &Path, name: &str, text: &str, mode: u32) -> Result<(), String> {
    let path = dir.join(name);
    ros_config::write_atomic(&path, text.as_bytes(), mode)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Install `m` where dockerd reads it (`dir`, created 0700).
pub fn install(m: &ServerMaterial, dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("securing {}: {e}", dir.display()))?;
    write(dir, "ca.pem", &m.ca, 0o644)?;
    write(dir, "server-cert.pem", &m.cert, 0o644)?;
    write(dir, "server-key.pem", &m.key, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn names_are_sorted_unique_and_include_loopback() {
        let ips = ["10.0.2.15".parse().unwrap(), "10.0.2.15".parse().unwrap()];
        assert_eq!(
            subject_names("rancher", &ips),
            ["10.0.2.15", "127.0.0.1", "::1", "localhost", "rancher"]
        );
    }

    #[test]
    fn generated_once_private_keys_private_and_server_renewed_when_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("tls");
        let names = subject_names("h", &[]);
        let first = server_material(&DockerConfig::default(), &state, &names).unwrap();
        assert!(first.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(first.key.contains("PRIVATE KEY"));
        assert_eq!(mode(&state), 0o700);
        for key in ["ca-key.pem", "server-key.pem", "key.pem"] {
            assert_eq!(mode(&state.join(key)), 0o600, "{key}");
        }
        let client = fs::read_to_string(state.join("cert.pem")).unwrap();
        let again = server_material(&DockerConfig::default(), &state, &names).unwrap();
        assert_eq!(again, first);
        let moved = server_material(
            &DockerConfig::default(),
            &state,
            &subject_names("h", &["10.1.1.1".parse().unwrap()]),
        )
        .unwrap();
        assert_eq!(moved.ca, first.ca, "the CA is kept");
        assert_ne!(
            moved.cert, first.cert,
            "a new address needs a new server certificate"
        );
        assert_eq!(
            fs::read_to_string(state.join("cert.pem")).unwrap(),
            client,
            "client kept"
        );

        let installed = dir.path().join("etc");
        install(&moved, &installed).unwrap();
        assert_eq!(mode(&installed.join("server-key.pem")), 0o600);
        assert_eq!(
            fs::read_to_string(installed.join("ca.pem")).unwrap(),
            moved.ca
        );
    }

    #[test]
    fn configured_material_is_used_and_partial_material_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = |s: &str| Some(ros_config::schema::Text(s.into()));
        let mut cfg = DockerConfig {
            ca_cert: text("CA"),
            server_cert: text("CERT"),
            server_key: text("KEY"),
            ..Default::default()
        };
        let m = server_material(&cfg, dir.path(), &[]).unwrap();
        assert_eq!(
            (m.ca.as_str(), m.cert.as_str(), m.key.as_str()),
            ("CA", "CERT", "KEY")
        );
        cfg.server_key = None;
        let e = server_material(&cfg, dir.path(), &[]).unwrap_err();
        assert!(e.contains("rancher.docker.server_key missing"), "{e}");
        assert!(
            fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing generated"
        );
    }
}
