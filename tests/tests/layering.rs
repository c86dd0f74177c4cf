//! Inside each crate, modules import one way: no module reaches, through others, back to
//! itself (issue 23: cycles hid knowledge kept in the wrong module). Reads the sources;
//! boots nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Each top-level module of the crate whose `src` is `dir`, with the crate's modules its
/// non-test code names (`crate::x`, `crate::{x, y}`).
fn imports(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = boot_tests::rust_files(dir);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(dir).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" || module == "bin" {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        // Tests come last in a file, and may use anything.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let names = graph.entry(module.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let listed = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or_default(),
                    None => rest,
                };
                for item in listed.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        names.insert(name);
                    }
                }
            }
        }
    }
    // Only the crate's modules (not items re-exported at its root).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for names in graph.values_mut() {
        names.retain(|n| modules.contains(n));
    }
    graph
}

/// A cycle of `graph`, as `a -> b -> a`, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit(
        at: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<String> {
        if let Some(start) = path.iter().position(|p| p == at) {
            let mut ring = path[start..].to_vec();
            ring.push(at.to_string());
            return Some(ring.join(" -> "));
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_string());
        for next in graph.get(at).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(at.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

fn src(krate: &str) -> PathBuf {
    boot_tests::workspace_root().join(krate).join("src")
}

#[test]
fn modules_import_one_way_in_every_crate() {
    for krate in [
        "init",
        "ros-cli",
        "ros-config",
        "ros-runtime",
        "ros-cloudinit",
        "ros-control",
        "ros-image",
        "ros-os",
    ] {
        let graph = imports(&src(krate));
        assert!(graph.len() > 1, "{krate}: no modules found");
        if let Some(ring) = cycle(&graph) {
            panic!("{krate}: modules import each other in a cycle: {ring}");
        }
    }
}

#[test]
fn a_cycle_is_found_and_named() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycle(&graph).as_deref(), Some("a -> b -> c -> a"));
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&acyclic), None);
}

/// The YAML crate is deprecated upstream: replacing it must touch one module. Only
/// `ros-config/src/yaml.rs` may name it in code (comments may), and only ros-config's
/// manifest may depend on it; every other module works on `ros_config::Value`, our own tree.
#[test]
fn the_yaml_crate_is_named_by_one_module() {
    let name = concat!("serde", "_yaml");
    let root = boot_tests::workspace_root();
    let mut named = BTreeSet::new();
    for krate in fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()) {
        let manifest = krate.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        if fs::read_to_string(&manifest).unwrap().contains(name) {
            named.insert(manifest.strip_prefix(&root).unwrap().to_path_buf());
        }
        for dir in ["src", "tests", "benches"] {
            if !krate.join(dir).is_dir() {
                continue;
            }
            for file in boot_tests::rust_files(&krate.join(dir)) {
                let text = fs::read_to_string(&file).unwrap();
                let in_code = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .any(|l| l.contains(name));
                if in_code {
                    named.insert(file.strip_prefix(&root).unwrap().to_path_buf());
                }
            }
        }
    }
    let want: BTreeSet<PathBuf> = ["ros-config/Cargo.toml", "ros-config/src/yaml.rs"]
        .into_iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(named, want, "files naming {name} in code");
}
