//! Builds archives from temp-dir trees and reads them back independently of the crate's reader.

use flate2::read::GzDecoder;
use ros_image::{build_archive, inspect_archive, BuildError, BuiltImage, ImageSpec, InspectError};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const NAME: &str = "ros/console:0.1.0";

fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A tree with a plain file, a setuid executable, a symlink and a nested directory.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/share/doc/ros")).expect("mkdir nested");
    fs::create_dir_all(root.join("bin")).expect("mkdir bin");
    fs::create_dir_all(root.join("etc")).expect("mkdir etc");
    fs::write(root.join("etc/motd"), "welcome to ros\n").expect("write motd");
    fs::set_permissions(root.join("etc/motd"), fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(root.join("bin/hello"), "#!/bin/sh\necho hello\n").expect("write hello");
    fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    symlink("hello", root.join("bin/sh")).expect("symlink");
    fs::write(root.join("usr/share/doc/ros/README"), "docs\n").expect("write README");
}

fn spec(layers: Vec<PathBuf>) -> ImageSpec {
    ImageSpec {
        name: NAME.to_owned(),
        entrypoint: vec!["/bin/sh".to_owned(), "-c".to_owned()],
        cmd: vec!["echo hi".to_owned()],
        env: vec!["PATH=/bin:/usr/bin".to_owned(), "ROS=1".to_owned()],
        working_dir: Some("/etc".to_owned()),
        layers,
    }
}

/// Every regular file of the outer archive, by path.
fn outer_entries(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let file = fs::File::open(archive).expect("open archive");
    let mut tar = tar::Archive::new(file);
    let mut out = BTreeMap::new();
    for entry in tar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let header = entry.header();
        assert_eq!(header.mtime().expect("mtime"), 0);
        assert_eq!(header.uid().expect("uid"), 0);
        if !header.entry_type().is_file() {
            continue;
        }
        let path = entry.path().expect("path").display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read entry");
        out.insert(path, bytes);
    }
    out
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

fn blob<'a>(entries: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    entries
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("blob {digest} missing"))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).expect("gunzip");
    out
}

/// Walks index -> manifest -> config -> layers, checking every digest on the way, and returns
/// the uncompressed layer tars.
fn parse_back(archive: &Path, built: &BuiltImage) -> (Value, Vec<Vec<u8>>) {
    let entries = outer_entries(archive);
    for (path, bytes) in &entries {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256(bytes), format!("sha256:{hex}"), "blob {path}");
        }
    }
    assert_eq!(json(&entries["oci-layout"])["imageLayoutVersion"], "1.0.0");

    let index = json(&entries["index.json"]);
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().expect("manifests array");
    assert_eq!(manifests.len(), 1);
    let desc = &manifests[0];
    assert_eq!(
        desc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        desc["annotations"]["org.opencontainers.image.ref.name"],
        NAME
    );
    assert_eq!(desc["annotations"]["io.containerd.image.name"], NAME);
    assert_eq!(desc["digest"], built.manifest_digest.as_str());
    let manifest_bytes = blob(&entries, &built.manifest_digest);
    assert_eq!(desc["size"], manifest_bytes.len());

    let manifest = json(manifest_bytes);
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(manifest["config"]["digest"], built.config_digest.as_str());
    let config_bytes = blob(&entries, &built.config_digest);
    assert_eq!(manifest["config"]["size"], config_bytes.len());
    let config = json(config_bytes);
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["rootfs"]["type"], "layers");

    let layers = manifest["layers"].as_array().expect("layers array");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert_eq!(layers.len(), built.layer_digests.len());
    assert_eq!(diff_ids.len(), layers.len());
    let mut tars = Vec::new();
    for ((layer, diff_id), digest) in layers.iter().zip(diff_ids).zip(&built.layer_digests) {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(layer["digest"], digest.as_str());
        let compressed = blob(&entries, digest);
        assert_eq!(layer["size"], compressed.len());
        assert_eq!(&compressed[4..8], &[0, 0, 0, 0], "gzip mtime must be 0");
        let tar = gunzip(compressed);
        assert_eq!(diff_id, &sha256(&tar));
        tars.push(tar);
    }
    assert_eq!(
        built.archive_size,
        fs::metadata(archive).expect("stat archive").len()
    );
    (config, tars)
}

#[derive(Debug, PartialEq)]
struct LayerEntry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    link: Option<String>,
    content: Vec<u8>,
}

fn layer_entries(tar_bytes: &[u8]) -> Vec<LayerEntry> {
    let mut tar = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in tar.entries().expect("layer entries") {
        let mut entry = entry.expect("layer entry");
        let header = entry.header().clone();
        assert_eq!(header.mtime().expect("mtime"), 0);
        assert_eq!(
            (header.uid().expect("uid"), header.gid().expect("gid")),
            (0, 0)
        );
        assert_eq!(header.username().expect("uname"), Some(""));
        assert_eq!(header.groupname().expect("gname"), Some(""));
        let link = entry
            .link_name()
            .expect("link")
            .map(|l| l.display().to_string());
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("read");
        out.push(LayerEntry {
            path: entry.path().expect("path").display().to_string(),
            kind: header.entry_type(),
            mode: header.mode().expect("mode"),
            link,
            content,
        });
    }
    out
}

#[test]
fn archive_parses_back_with_config_and_layer_contents() {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("console.tar");

    let built = build_archive(&spec(vec![src.path().to_path_buf()]), &out).expect("build");
    let (config, tars) = parse_back(&out, &built);

    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/sh", "-c"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["echo hi"]));
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["PATH=/bin:/usr/bin", "ROS=1"])
    );
    assert_eq!(config["config"]["WorkingDir"], "/etc");

    let entries = layer_entries(&tars[0]);
    let summary: Vec<(&str, tar::EntryType, u32)> = entries
        .iter()
        .map(|e| (e.path.as_str(), e.kind, e.mode))
        .collect();
    let dir = tar::EntryType::Directory;
    let file = tar::EntryType::Regular;
    assert_eq!(
        summary,
        [
            ("bin/", dir, 0o755),
            ("bin/hello", file, 0o4755),
            ("bin/sh", tar::EntryType::Symlink, 0o777),
            ("etc/", dir, 0o755),
            ("etc/motd", file, 0o644),
            ("usr/", dir, 0o755),
            ("usr/share/", dir, 0o755),
            ("usr/share/doc/", dir, 0o755),
            ("usr/share/doc/ros/", dir, 0o755),
            ("usr/share/doc/ros/README", file, 0o644),
        ]
    );
    assert_eq!(entries[1].content, b"#!/bin/sh\necho hello\n");
    assert_eq!(entries[2].link.as_deref(), Some("hello"));
    assert_eq!(entries[4].content, b"welcome to ros\n");
}

#[test]
fn two_builds_are_byte_identical() {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let out_dir = tempfile::tempdir().expect("tempdir");
    let first = out_dir.path().join("a.tar");
    let second = out_dir.path().join("b.tar");
    let spec = spec(vec![src.path().to_path_buf()]);

    let a = build_archive(&spec, &first).expect("first build");
    let b = build_archive(&spec, &second).expect("second build");
    assert_eq!(a, b);
    assert_eq!(
        fs::read(&first).expect("read a"),
        fs::read(&second).expect("read b")
    );
}

#[test]
fn identical_trees_in_different_places_give_the_same_digest() {
    let one = tempfile::tempdir().expect("tempdir");
    let two = tempfile::tempdir().expect("tempdir");
    make_tree(one.path());
    make_tree(two.path());
    let out_dir = tempfile::tempdir().expect("tempdir");
    let a = build_archive(
        &spec(vec![one.path().into()]),
        &out_dir.path().join("a.tar"),
    )
    .expect("build a");
    let b = build_archive(
        &spec(vec![two.path().into()]),
        &out_dir.path().join("b.tar"),
    )
    .expect("build b");
    assert_eq!(a.manifest_digest, b.manifest_digest);
}

#[test]
fn mtime_change_keeps_the_digest_but_content_change_does_not() {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("img.tar");
    let spec = spec(vec![src.path().to_path_buf()]);
    let before = build_archive(&spec, &out).expect("build");

    let later = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    for path in ["etc/motd", "etc", "bin/hello"] {
        let file = fs::File::open(src.path().join(path)).expect("open");
        file.set_modified(later).expect("set mtime");
    }
    // Ownership is dropped too; only root may chown, so this part is skipped otherwise.
    let chowned = std::os::unix::fs::chown(src.path().join("etc/motd"), Some(1000), Some(1000));
    let touched = build_archive(&spec, &out).expect("build after touch");
    assert_eq!(
        touched,
        before,
        "mtime (and owner, chown ok: {}) must not change the image",
        chowned.is_ok()
    );

    fs::write(src.path().join("etc/motd"), "changed\n").expect("rewrite motd");
    let changed = build_archive(&spec, &out).expect("build after edit");
    assert_ne!(changed.manifest_digest, before.manifest_digest);
    assert_ne!(changed.layer_digests, before.layer_digests);
    assert_ne!(
        changed.config_digest, before.config_digest,
        "diff_id must change"
    );

    fs::set_permissions(
        src.path().join("etc/motd"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let chmodded = build_archive(&spec, &out).expect("build after chmod");
    assert_ne!(chmodded.manifest_digest, changed.manifest_digest);
}

#[test]
fn layers_keep_their_order_and_identical_layers_share_one_blob() {
    let base = tempfile::tempdir().expect("tempdir");
    make_tree(base.path());
    let top = tempfile::tempdir().expect("tempdir");
    fs::write(top.path().join("extra"), "top layer\n").expect("write");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("img.tar");
    let layers = vec![base.path().into(), top.path().into(), base.path().into()];

    let built = build_archive(&spec(layers), &out).expect("build");
    assert_eq!(built.layer_digests.len(), 3);
    assert_eq!(built.layer_digests[0], built.layer_digests[2]);
    assert_ne!(built.layer_digests[0], built.layer_digests[1]);
    let (_, tars) = parse_back(&out, &built);
    let top_paths: Vec<String> = layer_entries(&tars[1])
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(top_paths, ["extra"]);
    let blob_count = outer_entries(&out)
        .keys()
        .filter(|p| p.starts_with("blobs/sha256/"))
        .count();
    assert_eq!(blob_count, 4, "config + manifest + two distinct layers");
}

#[test]
fn docker_manifest_points_at_the_same_blobs() {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("img.tar");
    let built = build_archive(&spec(vec![src.path().into()]), &out).expect("build");
    let entries = outer_entries(&out);
    let docker = json(&entries["manifest.json"]);
    let hex = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    assert_eq!(docker[0]["Config"], hex(&built.config_digest));
    assert_eq!(docker[0]["RepoTags"], serde_json::json!([NAME]));
    assert_eq!(
        docker[0]["Layers"],
        serde_json::json!([hex(&built.layer_digests[0])])
    );
}

#[test]
fn inspect_reports_what_was_built() {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("img.tar");
    let built = build_archive(&spec(vec![src.path().into()]), &out).expect("build");

    let report = inspect_archive(&out).expect("inspect");
    assert_eq!(report.name.as_deref(), Some(NAME));
    assert_eq!(report.manifest_digest, built.manifest_digest);
    assert_eq!(report.config_digest, built.config_digest);
    assert_eq!(report.archive_size, built.archive_size);
    let digests: Vec<&str> = report.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(digests, [built.layer_digests[0].as_str()]);
    assert!(report.layers[0].uncompressed_size > report.layers[0].size / 2);
}

#[test]
fn inspect_rejects_a_blob_whose_content_does_not_match_its_name() {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let out_dir = tempfile::tempdir().expect("tempdir");
    let good = out_dir.path().join("good.tar");
    let built = build_archive(&spec(vec![src.path().into()]), &good).expect("build");

    // Same archive, but the config blob's bytes are swapped for other valid JSON.
    let bad = out_dir.path().join("bad.tar");
    let config_path = format!(
        "blobs/sha256/{}",
        built.config_digest.trim_start_matches("sha256:")
    );
    let mut builder = tar::Builder::new(fs::File::create(&bad).expect("create bad"));
    for (path, bytes) in outer_entries(&good) {
        let bytes = if path == config_path {
            b"{}".to_vec()
        } else {
            bytes
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &path, bytes.as_slice())
            .expect("append");
    }
    builder.finish().expect("finish bad");

    let err = inspect_archive(&bad).expect_err("tampered archive must fail");
    assert!(
        matches!(&err, InspectError::DigestMismatch { entry, .. } if *entry == config_path),
        "{err}"
    );
}

#[test]
fn invalid_spec_lists_every_problem_and_writes_nothing() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("img.tar");
    let bad = ImageSpec {
        name: "ros/bad:1".to_owned(),
        env: vec!["NOEQUALS".to_owned()],
        working_dir: Some("relative".to_owned()),
        ..ImageSpec::default()
    };
    let err = build_archive(&bad, &out).expect_err("invalid spec");
    let BuildError::InvalidSpec { problems, .. } = &err else {
        panic!("expected InvalidSpec, got {err}");
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
    let text = err.to_string();
    for needle in ["ros/bad:1", "no layers", "NOEQUALS", "relative"] {
        assert!(text.contains(needle), "{text} lacks {needle}");
    }
    assert!(!out.exists());
}

#[test]
fn a_missing_layer_directory_is_named_and_leaves_no_archive() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("img.tar");
    let missing = out_dir.path().join("no-such-layer");
    let err = build_archive(&spec(vec![missing.clone()]), &out).expect_err("missing layer");
    let chain = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(chain.contains(&missing.display().to_string()), "{chain}");
    assert!(!out.exists());
    let leftovers: Vec<_> = fs::read_dir(out_dir.path()).expect("list").collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
}
