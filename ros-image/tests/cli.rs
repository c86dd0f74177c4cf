//! Runs the real `ros-image` binary the way the Makefile does and checks what it prints.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn ros_image(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ros-image"))
        .args(args)
        .output()
        .expect("run ros-image");
    assert!(
        out.status.success(),
        "ros-image {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn build_prints_one_summary_line_and_inspect_reads_it_back() {
    let layer = tempfile::tempdir().expect("tempdir");
    fs::create_dir(layer.path().join("bin")).expect("mkdir");
    fs::write(layer.path().join("bin/tool"), vec![b'x'; 5000]).expect("write");
    let fifo = layer.path().join("pipe");
    let mkfifo = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(mkfifo.success());
    let out_dir = tempfile::tempdir().expect("tempdir");
    let archive = out_dir.path().join("tool.tar");

    let built = ros_image(&[
        "build",
        "--name",
        "ros/tool:0.1.0",
        "--layer",
        path_str(layer.path()),
        "--entrypoint",
        r#"["/bin/sh","-c"]"#,
        "--cmd",
        "/bin/tool",
        "--cmd",
        "--verbose",
        "--env",
        "A=1",
        "--workdir",
        "/bin",
        "--out",
        path_str(&archive),
    ]);
    let stdout = String::from_utf8(built.stdout).expect("utf-8 stdout");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    let size = fs::metadata(&archive).expect("archive exists").len();
    assert_eq!(
        fields[..4],
        [
            "ros/tool:0.1.0",
            path_str(&archive),
            &size.div_ceil(1024).to_string(),
            "KiB"
        ]
    );
    let manifest = fields[4]
        .strip_prefix("manifest=sha256:")
        .expect("manifest field");
    assert_eq!(manifest.len(), 64);
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(
        stderr.contains("pipe") && stderr.contains("skipped"),
        "{stderr}"
    );

    let inspected = ros_image(&["inspect", path_str(&archive)]);
    let report = String::from_utf8(inspected.stdout).expect("utf-8 stdout");
    for needle in [
        "name: ros/tool:0.1.0".to_owned(),
        format!("manifest: sha256:{manifest}"),
        r#"entrypoint: ["/bin/sh","-c"]"#.to_owned(),
        r#"cmd: ["/bin/tool","--verbose"]"#.to_owned(),
        "workdir: /bin".to_owned(),
        "layers: 1".to_owned(),
    ] {
        assert!(
            report.contains(&needle),
            "inspect output lacks {needle:?}:\n{report}"
        );
    }
}

#[test]
fn a_bad_layer_fails_with_the_path_in_the_message() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let archive = out_dir.path().join("x.tar");
    let out = Command::new(env!("CARGO_BIN_EXE_ros-image"))
        .args([
            "build",
            "--name",
            "ros/x:1",
            "--layer",
            "/nonexistent/layer",
            "--out",
        ])
        .arg(&archive)
        .output()
        .expect("run ros-image");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/layer"), "{stderr}");
    assert!(!archive.exists());
}
