//! What the workspace's tests share (a dev-dependency only; nothing here ships).

use std::path::{Path, PathBuf};

/// A test that cannot run here says why and returns, except under CI (`CI=true`), where
/// a skip is a failure: a package `make deps` forgot must not pass as green.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none_or(|v| v != "true"),
        "{test}: cannot run under CI: {why} (make deps installs what the tests need)"
    );
    eprintln!("skipped {test}: {why}");
}

/// A fresh CA, and a certificate it signs for `host` (an IP address): the CA's PEM, and
/// the server's certificate and key written to `dir` (`server.pem`, `server.key`).
pub fn private_ca(dir: &Path, host: &str) -> (String, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: a certificate whose issuer is its own subject is self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rOS test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![host.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, host);
    let server = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_file, server.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (ca.pem(), cert_file, key_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_certificate_is_signed_by_the_ca_not_by_itself() {
        let dir = std::env::temp_dir().join(format!("ros-test-support-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = private_ca(&dir, "127.0.0.1");
        let cert = std::fs::read_to_string(cert).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----") && cert != ca);
        assert!(std::fs::read_to_string(key)
            .unwrap()
            .contains("PRIVATE KEY"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
