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
