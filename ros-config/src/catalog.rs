//! The one service catalog: every service that could run, where it is defined, whether the
//! config turns it on, and its definition. PID 1 starts what it says is enabled; `ros
//! service list`, `enable` and `disable` show and change the same thing, so the two can
//! never disagree about a service (a running one that nothing admits to owning).
//!
//! The rules, written once:
//! - built-in files (`/usr/share/ros/services/*.yml`) define services that run unless
//!   `rancher.services_include.NAME: false`;
//! - index files (`/usr/share/ros/service-index/NAME.yml`) run only with
//!   `rancher.services_include.NAME: true`; an include whose key is an absolute path runs
//!   the services that file defines;
//! - `rancher.services` defines services in the config itself (on unless disabled);
//! - **a file that is partly bad keeps its good services**: each service is checked on
//!   its own, and a broken one is reported (file, line, key) and left out, alone. A file
//!   that cannot be read or parsed at all contributes nothing and is reported.
//! - bare `NAME` entries of a service's environment take their value from
//!   `rancher.environment`, as in RancherOS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::collections::HashSet;

use crate::graph::{Graph, GraphError};
use crate::schema::CloudConfig;
use crate::service::LABEL_CONSOLE;
use crate::service::{check_service_path, service_files, Environment, ServiceSpec};

/// Where a service is defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file of the built-in services.
    Builtin(PathBuf),
    /// The service index (`rancher.services_include.NAME`).
    Index(PathBuf),
    /// `rancher.services` in the config.
    Config,
    /// A file enabled by its path in `rancher.services_include`.
    Include(PathBuf),
    /// A `rancher.services_include` entry that names nothing (no such index file or path).
    Missing,
}

/// One service of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its name (an index entry or a dangling include: the key that names it).
    pub name: String,
    /// Where it is defined.
    pub source: Source,
    /// Whether it should run.
    pub enabled: bool,
    /// Its definition, environment resolved (`None` for a missing include, or an index
    /// entry that is not enabled: its file is not read then).
    pub spec: Option<ServiceSpec>,
}

/// Every service, and every problem met while reading their definitions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// By name.
    pub entries: BTreeMap<String, Entry>,
    /// One line per problem (`FILE:LINE:COL: KEY: MESSAGE`, or a missing include).
    pub problems: Vec<String>,
}

impl Catalog {
    /// The services that should run, by name.
    pub fn enabled(&self) -> BTreeMap<String, ServiceSpec> {
        self.entries
            .values()
            .filter(|e| e.enabled)
            .filter_map(|e| e.spec.clone().map(|s| (e.name.clone(), s)))
            .collect()
    }
}

/// Read the catalog: built-in definitions in `builtin`, the index in `index`, and what
/// `config` says (see the module's rules).
pub fn read(builtin: &Path, index: &Path, config: &CloudConfig) -> Catalog {
    let include = &config.rancher.services_include;
    let disabled = |name: &str| include.get(name) == Some(&false);
    let mut cat = Catalog::default();
    // The good services of `path`; its problems are recorded.
    let read_file = |cat: &mut Catalog, path: &Path| -> BTreeMap<String, ServiceSpec> {
        let (defs, diagnostics) = check_service_path(path);
        cat.problems.extend(
            diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| format!("{d} (service left out)")),
        );
        defs
    };
    for file in service_files(builtin) {
        for (name, spec) in read_file(&mut cat, &file) {
            let enabled = !disabled(&name);
            cat.entries.insert(
                name.clone(),
                Entry {
                    name,
                    source: Source::Builtin(file.clone()),
                    enabled,
                    spec: Some(spec),
                },
            );
        }
    }
    for file in service_files(index) {
        let Some(stem) = file.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let enabled = include.get(&stem) == Some(&true);
        // An index file is read only when enabled (its services are optional).
        let defs = if enabled {
            read_file(&mut cat, &file)
        } else {
            BTreeMap::new()
        };
        cat.entries.insert(
            stem.clone(),
            Entry {
                name: stem.clone(),
                source: Source::Index(file.clone()),
                enabled: enabled && defs.contains_key(&stem),
                spec: defs.get(&stem).cloned(),
            },
        );
        for (name, spec) in defs.into_iter().filter(|(n, _)| *n != stem) {
            cat.entries.insert(
                name.clone(),
                Entry {
                    name: name.clone(),
                    source: Source::Index(file.clone()),
                    enabled: !disabled(&name),
                    spec: Some(spec),
                },
            );
        }
    }
    for (key, on) in include.iter().filter(|(k, _)| k.starts_with('/')) {
        let path = PathBuf::from(key);
        if !path.is_file() {
            continue;
        }
        let defs = if *on {
            read_file(&mut cat, &path)
        } else {
            BTreeMap::new()
        };
        for (name, spec) in defs {
            cat.entries.insert(
                name.clone(),
                Entry {
                    name: name.clone(),
                    source: Source::Include(path.clone()),
                    enabled: !disabled(&name),
                    spec: Some(spec),
                },
            );
        }
    }
    for (name, spec) in &config.rancher.services {
        cat.entries.insert(
            name.clone(),
            Entry {
                name: name.clone(),
                source: Source::Config,
                enabled: !disabled(name),
                spec: Some(spec.clone()),
            },
        );
    }
    for (key, on) in include {
        let names_something =
            cat.entries.contains_key(key) || (key.starts_with('/') && Path::new(key).is_file());
        if names_something {
            continue;
        }
        if *on {
            let path = if key.starts_with('/') {
                PathBuf::from(key)
            } else {
                index.join(format!("{key}.yml"))
            };
            cat.problems.push(format!(
                "service {key}: enabled in rancher.services_include but {} does not exist",
                path.display()
            ));
        }
        cat.entries.insert(
            key.clone(),
            Entry {
                name: key.clone(),
                source: Source::Missing,
                enabled: *on,
                spec: None,
            },
        );
    }
    for entry in cat.entries.values_mut() {
        if let Some(spec) = entry.spec.as_mut() {
            resolve_environment(spec, config);
        }
    }
    cat
}

/// Give bare `NAME` entries of a service's environment their value from
/// `rancher.environment`, as RancherOS did; names it doesn't set stay bare.
pub fn resolve_environment(spec: &mut ServiceSpec, config: &CloudConfig) {
    let value = |name: &str| config.rancher.environment.get(name).map(|v| v.0.clone());
    match &mut spec.environment {
        Environment::List(items) => {
            for item in items.iter_mut() {
                if !item.contains('=') {
                    if let Some(v) = value(item) {
                        *item = format!("{item}={v}");
                    }
                }
            }
        }
        Environment::Map(map) => {
            for (k, v) in map.iter_mut() {
                if v.is_none() {
                    *v = value(k);
                }
            }
        }
    }
}

/// In what order converging starts services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartOrder {
    /// Start waves, each after the ones before it (stop order is their reverse).
    pub waves: Vec<Vec<String>>,
    /// The services each service waits for directly: it starts once these are ready.
    pub after: BTreeMap<String, Vec<String>>,
}

impl StartOrder {
    /// Each service waits for every service of the wave before its own.
    pub fn from_waves(waves: Vec<Vec<String>>) -> Self {
        let mut after = BTreeMap::new();
        for pair in waves.windows(2) {
            for name in &pair[1] {
                after.insert(name.clone(), pair[0].clone());
            }
        }
        StartOrder { waves, after }
    }

    /// The services that hold up the console: the console services and, transitively,
    /// what they wait for.
    pub fn console_path(&self, desired: &BTreeMap<String, ServiceSpec>) -> HashSet<String> {
        let mut path = HashSet::new();
        let mut todo: Vec<&String> = desired
            .iter()
            .filter(|(_, spec)| spec.label(LABEL_CONSOLE).is_some())
            .map(|(name, _)| name)
            .collect();
        while let Some(name) = todo.pop() {
            if path.insert(name.clone()) {
                todo.extend(self.after.get(name).into_iter().flatten());
            }
        }
        path
    }
}

/// Names PID 1 can wait for without a service of that name (`network`: a default route).
pub const VIRTUAL_SERVICES: &[&str] = &["network"];

/// The desired services in start waves, with every problem found on the way.
#[derive(Debug, Default)]
pub struct Plan {
    /// What should run.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Start order: waves, and what each service waits for.
    pub order: StartOrder,
    /// Problems, one line each (file errors, unknown names, cycles).
    pub problems: Vec<String>,
    /// Enabled services left out, and why (an unknown name they wait for, a cycle).
    pub left_out: BTreeMap<String, String>,
}

impl Catalog {
    /// The enabled services in start order. Services with ordering errors (an unknown
    /// name, a cycle) are left out and reported; the rest still start (the console must
    /// come up). `ros service list` shows what was left out, and why.
    pub fn plan(&self) -> Plan {
        plan(self.enabled(), self.problems.clone())
    }
}

fn plan(mut services: BTreeMap<String, ServiceSpec>, mut problems: Vec<String>) -> Plan {
    let mut left_out = BTreeMap::new();
    // Each round removes at least one service, so this ends.
    loop {
        match Graph::new(&services, VIRTUAL_SERVICES) {
            Ok(graph) => {
                let after = services
                    .keys()
                    .map(|name| {
                        let real = graph
                            .prerequisites(name)
                            .filter(|p| services.contains_key(*p))
                            .map(str::to_string)
                            .collect();
                        (name.clone(), real)
                    })
                    .collect();
                return Plan {
                    order: StartOrder {
                        waves: graph.start_waves().to_vec(),
                        after,
                    },
                    services,
                    problems,
                    left_out,
                };
            }
            Err(errors) => {
                for e in errors {
                    problems.push(format!("{e} (not started)"));
                    let names = match &e {
                        GraphError::UnknownService { service, .. } => vec![service.clone()],
                        GraphError::Cycle { path } => path.clone(),
                    };
                    for name in names {
                        if services.remove(&name).is_some() {
                            left_out.insert(name, e.to_string());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn config(yaml: &str) -> CloudConfig {
        let layer = crate::Layer::parse("test.yml", yaml).unwrap();
        crate::resolve(vec![layer], crate::Mode::Strict).config
    }

    #[test]
    fn builtin_index_include_config_and_disable_combine() {
        let dir = tempfile::tempdir().unwrap();
        let builtin = dir.path().join("services");
        let index = dir.path().join("index");
        fs::create_dir_all(&builtin).unwrap();
        fs::create_dir_all(&index).unwrap();
        fs::write(
            builtin.join("a.yml"),
            "console:\n  image: c\nacpid:\n  image: a\n",
        )
        .unwrap();
        fs::write(
            index.join("extra.yml"),
            "extra:\n  image: e\n  environment:\n    - PROXY\n    - UNSET\n",
        )
        .unwrap();
        fs::write(index.join("off.yml"), "off:\n  image: o\n").unwrap();
        let own = dir.path().join("own.yml");
        fs::write(&own, "mine:\n  image: m\n").unwrap();
        let cfg = config(&format!(
            "rancher:\n  environment:\n    PROXY: http://p:3128\n  services_include:\n    \
             extra: true\n    acpid: false\n    {}: true\n    missing: true\n  services:\n    \
             inline:\n      image: i\n",
            own.display()
        ));
        let cat = read(&builtin, &index, &cfg);
        let enabled: Vec<String> = cat.enabled().into_keys().collect();
        assert_eq!(enabled, ["console", "extra", "inline", "mine"]);
        let listed: Vec<(&str, bool)> = cat
            .entries
            .values()
            .map(|e| (e.name.as_str(), e.enabled))
            .collect();
        assert_eq!(
            listed,
            [
                ("acpid", false),
                ("console", true),
                ("extra", true),
                ("inline", true),
                ("mine", true),
                ("missing", true),
                ("off", false)
            ]
        );
        assert_eq!(cat.entries["missing"].source, Source::Missing);
        assert_eq!(cat.entries["mine"].source, Source::Include(own.clone()));
        assert_eq!(cat.problems.len(), 1, "{:?}", cat.problems);
        assert!(cat.problems[0].contains("missing"));
        assert_eq!(
            cat.entries["extra"].spec.as_ref().unwrap().environment,
            Environment::List(vec!["PROXY=http://p:3128".into(), "UNSET".into()])
        );
    }

    #[test]
    fn a_partly_broken_file_keeps_its_good_services_and_names_the_broken_one() {
        // The same file PID 1 and `ros service list` both read: a good service that runs,
        // then a broken one added beside it. The good one stays defined and enabled.
        let dir = tempfile::tempdir().unwrap();
        let (builtin, index) = (dir.path().join("services"), dir.path().join("index"));
        fs::create_dir_all(&builtin).unwrap();
        fs::create_dir_all(&index).unwrap();
        let bars = dir.path().join("bars.yml");
        fs::write(
            &bars,
            "bars-good:\n  image: busybox\nbars-bad:\n  image: busybox\n  restart: sometimes\n",
        )
        .unwrap();
        let cfg = config(&format!(
            "rancher:\n  services_include:\n    {}: true\n",
            bars.display()
        ));
        let cat = read(&builtin, &index, &cfg);
        assert!(cat.enabled().contains_key("bars-good"), "{cat:?}");
        assert!(!cat.entries.contains_key("bars-bad"), "{cat:?}");
        assert_eq!(cat.problems.len(), 1, "{:?}", cat.problems);
        assert!(
            cat.problems[0].contains("bars.yml:5") && cat.problems[0].contains("bars-bad.restart"),
            "{:?}",
            cat.problems
        );
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use crate::service::ServiceSpec;

    fn svc(after: &str) -> ServiceSpec {
        let mut s = ServiceSpec {
            image: "x".into(),
            ..Default::default()
        };
        if !after.is_empty() {
            s.labels.insert("io.rancher.os.after".into(), after.into());
        }
        s
    }

    #[test]
    fn bad_services_are_dropped_and_the_rest_ordered() {
        let mut services = BTreeMap::new();
        services.insert("console".to_string(), svc("network"));
        services.insert("a".to_string(), svc("b"));
        services.insert("b".to_string(), svc("a"));
        services.insert("typo".to_string(), svc("nope"));
        services.insert("udev".to_string(), svc(""));
        services.insert("ntp".to_string(), svc("udev"));
        let p = plan(services, vec![]);
        assert_eq!(p.order.waves, vec![vec!["console", "udev"], vec!["ntp"]]);
        // `network` is virtual (a default route), not a service to wait for.
        assert_eq!(p.order.after["ntp"], vec!["udev"]);
        assert!(p.order.after["console"].is_empty());
        assert_eq!(p.problems.len(), 2, "{:?}", p.problems);
        assert!(p
            .problems
            .iter()
            .any(|m| m.contains("a -> b -> a") || m.contains("b -> a -> b")));
        assert!(p.problems.iter().any(|m| m.contains("nope")));
        let left_out: Vec<&str> = p.left_out.keys().map(String::as_str).collect();
        assert_eq!(left_out, ["a", "b", "typo"]);
        assert!(p.left_out["typo"].contains("nope"), "{:?}", p.left_out);
    }
}
