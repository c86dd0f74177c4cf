//! Which services should run: built-in definitions, `rancher.services` from the config,
//! and `rancher.services_include` (names from the shipped service index, or paths to
//! YAML files), minus what the config disables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ros_config::service::{load_service_file, service_files};
use ros_config::{CloudConfig, ServiceSpec};

use crate::supervisor::StartOrder;

/// The desired services and the problems found while collecting them.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Service name -> definition, for every service that should run.
    pub services: BTreeMap<String, ServiceSpec>,
    /// One line per problem (file or include that couldn't be used), for the console.
    pub problems: Vec<String>,
}

/// Collect the desired services. `builtin` holds the always-on definitions, `index`
/// the optional ones (`<index>/<name>.yml`) that `services_include` can turn on.
pub fn desired(builtin: &Path, index: &Path, config: &CloudConfig) -> Catalog {
    let mut cat = Catalog::default();
    let load = |cat: &mut Catalog, path: &Path| match load_service_file(path) {
        Ok(defs) => cat.services.extend(defs),
        // One bad file must not stop the others.
        Err(e) => cat.problems.push(format!("{e} (file skipped)")),
    };
    for file in service_files(builtin) {
        load(&mut cat, &file);
    }
    for (key, on) in &config.rancher.services_include {
        if !on {
            continue;
        }
        let path = if key.starts_with('/') {
            PathBuf::from(key)
        } else {
            index.join(format!("{key}.yml"))
        };
        if path.exists() {
            load(&mut cat, &path);
        } else {
            cat.problems.push(format!(
                "service {key}: enabled in rancher.services_include but {} does not exist",
                path.display()
            ));
        }
    }
    for (name, spec) in &config.rancher.services {
        cat.services.insert(name.clone(), spec.clone());
    }
    for (key, on) in &config.rancher.services_include {
        if !on {
            cat.services.remove(key);
        }
    }
    for spec in cat.services.values_mut() {
        resolve_environment(spec, config);
    }
    cat
}

/// Give bare `NAME` entries of a service's environment their value from
/// `rancher.environment`, as RancherOS did; names it doesn't set stay bare.
pub fn resolve_environment(spec: &mut ServiceSpec, config: &CloudConfig) {
    use ros_config::service::Environment;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn config(yaml: &str) -> CloudConfig {
        let layer = ros_config::Layer::parse("test.yml", yaml).unwrap();
        ros_config::resolve(vec![layer], ros_config::Mode::Strict).config
    }

    #[test]
    fn builtin_index_config_and_disable_combine() {
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
        let own = dir.path().join("own.yml");
        fs::write(&own, "mine:\n  image: m\n").unwrap();
        let cfg = config(&format!(
            "rancher:\n  environment:\n    PROXY: http://p:3128\n  services_include:\n    extra: true\n    acpid: false\n    {}: true\n    missing: true\n  services:\n    inline:\n      image: i\n",
            own.display()
        ));
        let cat = desired(&builtin, &index, &cfg);
        let names: Vec<&str> = cat.services.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["console", "extra", "inline", "mine"]);
        assert_eq!(cat.problems.len(), 1, "{:?}", cat.problems);
        assert!(cat.problems[0].contains("missing"));
        assert_eq!(
            cat.services["extra"].environment,
            ros_config::service::Environment::List(vec![
                "PROXY=http://p:3128".into(),
                "UNSET".into()
            ])
        );
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
}

/// Order the catalog. Services with ordering errors (an unknown name, a cycle) are left
/// out and reported; the rest still start (the console must come up).
pub fn plan(catalog: Catalog) -> Plan {
    use ros_config::graph::{Graph, GraphError};
    let Catalog {
        mut services,
        mut problems,
    } = catalog;
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
                };
            }
            Err(errors) => {
                for e in errors {
                    problems.push(format!("{e} (not started)"));
                    match e {
                        GraphError::UnknownService { service, .. } => {
                            services.remove(&service);
                        }
                        GraphError::Cycle { path } => {
                            for s in path {
                                services.remove(&s);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

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
        let p = plan(Catalog {
            services,
            problems: vec![],
        });
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
    }
}
