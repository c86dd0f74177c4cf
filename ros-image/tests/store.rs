//! Adds built archives to an unpacked image store and reads the store back.

use ros_image::{add_to_store, build_archive, layer_path, record_path, ImageSpec, StoreRecord};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

fn spec(name: &str, layers: Vec<PathBuf>) -> ImageSpec {
    ImageSpec {
        name: name.to_owned(),
        cmd: vec!["/bin/hello".to_owned()],
        env: vec!["PATH=/bin".to_owned()],
        layers,
        ..Default::default()
    }
}

fn tree(root: &Path, file: &str, content: &str, mode: u32) {
    let path = root.join(file);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(&path, content).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn layers_are_unpacked_once_and_records_name_them_base_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("base");
    tree(&base, "etc/os-release", "NAME=rOS\n", 0o644);
    tree(&base, "bin/hello", "#!/bin/sh\necho hi\n", 0o4755);
    symlink("hello", base.join("bin/sh")).expect("symlink");
    let one = tmp.path().join("one");
    tree(&one, "usr/share/one", "one\n", 0o600);
    let two = tmp.path().join("two");
    tree(&two, "usr/share/two", "two\n", 0o644);
    let store = tmp.path().join("store");

    let a = tmp.path().join("a.tar");
    build_archive(&spec("ros/one:1", vec![base.clone(), one]), &a).expect("build one");
    let first = add_to_store(&a, &store).expect("store one");
    assert_eq!(first.name, "ros/one:1");
    assert_eq!(first.unpacked.len(), 2);

    let b = tmp.path().join("b.tar");
    build_archive(&spec("ros/two:1", vec![base, two]), &b).expect("build two");
    let second = add_to_store(&b, &store).expect("store two");
    assert_eq!(
        second.unpacked.len(),
        1,
        "the shared base layer is stored once"
    );

    let record: StoreRecord =
        serde_json::from_slice(&fs::read(record_path(&store, "ros/two:1")).expect("record"))
            .expect("record parses");
    assert_eq!(record.name, "ros/two:1");
    assert_eq!(record.layers.len(), 2);
    assert_eq!(record.layers[0], first_layer(&store, "ros/one:1"));
    let cmd = record
        .config
        .config()
        .as_ref()
        .and_then(|c| c.cmd().clone());
    assert_eq!(cmd, Some(vec!["/bin/hello".to_owned()]));

    let base_dir = layer_path(&store, &record.layers[0]);
    let hello = fs::metadata(base_dir.join("bin/hello")).expect("hello");
    assert_eq!(hello.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(
        fs::read_link(base_dir.join("bin/sh")).expect("link"),
        Path::new("hello")
    );
    let top = layer_path(&store, &record.layers[1]);
    assert_eq!(
        fs::read_to_string(top.join("usr/share/two")).expect("two"),
        "two\n"
    );
    assert_eq!(
        fs::metadata(&top).expect("top").permissions().mode() & 0o777,
        0o755
    );
    // Nothing left behind from unpacking.
    let names: Vec<_> = fs::read_dir(store.join("layers"))
        .expect("layers")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.len() == 64), "{names:?}");

    // Adding again changes nothing and unpacks nothing.
    assert!(add_to_store(&a, &store).expect("again").unpacked.is_empty());
}

fn first_layer(store: &Path, name: &str) -> String {
    let record: StoreRecord =
        serde_json::from_slice(&fs::read(record_path(store, name)).expect("record"))
            .expect("record parses");
    record.layers[0].clone()
}

#[test]
fn a_corrupt_archive_adds_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layer = tmp.path().join("layer");
    tree(&layer, "bin/hello", "hi\n", 0o755);
    let archive = tmp.path().join("a.tar");
    build_archive(&spec("ros/bad:1", vec![layer]), &archive).expect("build");
    let mut bytes = fs::read(&archive).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    fs::write(&archive, bytes).expect("write");
    let store = tmp.path().join("store");
    let err = add_to_store(&archive, &store).expect_err("corrupt");
    assert!(err.to_string().contains("a.tar"), "{err}");
    assert!(!record_path(&store, "ros/bad:1").exists());
}
