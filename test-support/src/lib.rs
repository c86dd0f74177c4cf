//! What the workspace's tests share (a dev-dependency only; nothing here ships).

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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

/// The host's static busybox, the one program in [`busybox_image`]'s layer.
pub const BUSYBOX: &str = "/bin/busybox";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// A one-layer OCI archive of image `name`, written to `out` (gzipped when asked): the
/// host's static busybox ([`BUSYBOX`]), a few applet links, and 3 MiB of incompressible
/// filler so the layer spans several write chunks. Returns the manifest digest.
pub fn busybox_image(out: &Path, name: &str, gzip_archive: bool) -> std::io::Result<String> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    layer.append_data(&mut dir, "bin/", std::io::empty())?;
    let busybox = std::fs::read(BUSYBOX)
        .map_err(|e| std::io::Error::new(e.kind(), format!("reading {BUSYBOX}: {e}")))?;
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o755);
    file.set_size(busybox.len() as u64);
    layer.append_data(&mut file, "bin/busybox", busybox.as_slice())?;
    for applet in ["sh", "echo", "sleep", "cat", "grep", "ls"] {
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_mode(0o777);
        link.set_size(0);
        layer.append_link(&mut link, format!("bin/{applet}"), "busybox")?;
    }
    // Incompressible filler so the layer blob spans several write chunks.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let filler: Vec<u8> = (0..3 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o644);
    file.set_size(filler.len() as u64);
    layer.append_data(&mut file, "filler", filler.as_slice())?;
    let layer_tar = layer.into_inner()?;
    let diff_id = sha256(&layer_tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer_tar)?;
    let layer_gz = gz.finish()?;
    let layer_digest = sha256(&layer_gz);

    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": match std::env::consts::ARCH { "aarch64" => "arm64", _ => "amd64" },
        "os": "linux",
        "config": { "Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    }))
    .map_err(std::io::Error::other)?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer_gz.len(),
        }],
    }))
    .map_err(std::io::Error::other)?;
    let manifest_digest = sha256(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": "1",
            },
        }],
    }))
    .map_err(std::io::Error::other)?;

    let file = std::fs::File::create(out)?;
    let writer: Box<dyn Write> = if gzip_archive {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Builder::new(writer);
    let mut add = |path: String, data: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        archive.append_data(&mut header, path, data)
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    // Layer before index.json, as a streaming writer would produce it.
    add(format!("blobs/sha256/{}", hex(&layer_digest)), &layer_gz)?;
    add(format!("blobs/sha256/{}", hex(&config_digest)), &config)?;
    add(format!("blobs/sha256/{}", hex(&manifest_digest)), &manifest)?;
    add("index.json".into(), &index)?;
    archive.into_inner()?.flush()?;
    Ok(manifest_digest)
}

/// Detach every mount below `dir`, deepest first: what a containerd killed under its
/// services leaves (snapshots, rootfs overlays).
pub fn unmount_below(dir: &Path) {
    let dir = dir.to_string_lossy().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(&dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for mount in mounts {
        // A test's process, not PID 1: nothing else reaps its children.
        #[allow(clippy::disallowed_methods)]
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&mount)
            .status();
    }
}

/// Remove the cgroup `parent` (`/name`, below the root) with the empty cgroups in it, in
/// every hierarchy: cgroup v2's, or each of v1's controllers.
pub fn remove_cgroup(parent: &str) {
    let parent = parent.trim_start_matches('/');
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .chain([PathBuf::from("/sys/fs/cgroup")]);
    for dir in hierarchies.map(|h| h.join(parent)) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
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
