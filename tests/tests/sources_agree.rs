//! Knowledge kept in two languages agrees (issue 23 item 8): reads the sources and runs
//! the bench helper; boots nothing.

use std::process::Command;

/// The benches (Python) boot the machine the tests (Rust) boot, so their ratios hold for
/// what the tests check.
#[test]
fn the_benches_boot_the_machine_the_tests_boot() {
    let vm_py = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/vm.py");
    let out = Command::new("python3")
        .args([vm_py, "--base-args", "768"])
        .output()
        .expect("python3 (make deps installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let benches: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(benches, boot_tests::qemu_base_args(768));
}

/// Every constant path (`const NAME: &str = "/..."`) declared in the crates' sources.
fn rust_path_constants() -> Vec<String> {
    let mut consts = Vec::new();
    let srcs = std::fs::read_dir(boot_tests::workspace_root())
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("src")))
        .filter(|p| p.is_dir());
    for p in srcs.flat_map(|src| boot_tests::rust_files(&src)) {
        let text = std::fs::read_to_string(&p).unwrap();
        for line in text.lines() {
            let Some((_, rest)) = line.split_once(": &str = \"/") else {
                continue;
            };
            if !line.trim_start().starts_with("pub const ")
                && !line.trim_start().starts_with("const ")
                && !line.trim_start().starts_with("pub(crate) const ")
            {
                continue;
            }
            if let Some((path, _)) = rest.split_once('"') {
                consts.push(format!("/{}", path.trim_end_matches('/')));
            }
        }
    }
    consts
}

/// The paths of rOS's own places (`/usr/share/ros`, `/usr/lib/ros`, `/run/ros`, ...) that
/// the image build and the service files spell out are declared in Rust: renaming one
/// there without the other fails here, not at boot.
#[test]
fn the_shell_and_yaml_paths_are_the_rust_constants() {
    let consts = rust_path_constants();
    assert!(consts.len() > 20, "{consts:?}");
    let root = boot_tests::workspace_root();
    let mut files = vec![root.join("initramfs/build.sh")];
    for e in std::fs::read_dir(root.join("services")).unwrap() {
        files.push(e.unwrap().path());
    }
    const OURS: [&str; 7] = [
        "/usr/share/ros",
        "/usr/lib/ros",
        "/run/ros",
        "/etc/ros",
        "/run/syslog",
        "/run/system-containerd",
        "/var/lib/system-containerd",
    ];
    let mut unknown = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, _) in text.match_indices('/') {
            let rest = &text[i..];
            if !OURS.iter().any(|p| {
                rest.starts_with(p)
                    && !rest[p.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '-')
            }) || text[..i].ends_with(|c: char| c.is_alphanumeric() || "/._-$}".contains(c))
            {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
                .collect();
            let path = path.trim_end_matches(['/', '.']);
            let known = consts.iter().any(|c| {
                path == c
                    || path.starts_with(&format!("{c}/"))
                    || c.starts_with(&format!("{path}/"))
            });
            if !known {
                unknown.push(format!("{}: {path}", file.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "paths no Rust constant declares: {unknown:#?}"
    );
}

/// Every crate's dependencies are named in its sources (an unused one costs build time and
/// supply chain for nothing). By name only, as cargo-machete checks: `foo-bar` must appear
/// as `foo_bar` somewhere under the crate.
#[test]
fn every_dependency_is_used() {
    let root = boot_tests::workspace_root();
    let mut unused = Vec::new();
    for e in std::fs::read_dir(&root).unwrap() {
        let dir = e.unwrap().path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        if manifest.contains("[workspace]") {
            continue;
        }
        let sources: String = boot_tests::rust_files(&dir)
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let mut section = "";
        for line in manifest.lines() {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            if section != "[dependencies]" && section != "[dev-dependencies]" {
                continue;
            }
            let Some((name, _)) = line.split_once('=') else {
                continue;
            };
            let name = name.trim();
            if name.is_empty() || name.starts_with('#') {
                continue;
            }
            let ident = name.replace('-', "_");
            let used = sources.match_indices(&ident).any(|(i, _)| {
                let before = sources[..i].chars().next_back();
                let after = sources[i + ident.len()..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !word(before) && !word(after)
            });
            if !used {
                unused.push(format!("{}: {name}", dir.display()));
            }
        }
    }
    assert!(
        unused.is_empty(),
        "dependencies no source names: {unused:#?}"
    );
}
