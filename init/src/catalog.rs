//! Which services should run (the one catalog in `ros_config::catalog`), and in which
//! order (start waves from the dependency graph).

use std::collections::BTreeMap;
use std::path::Path;

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

/// Collect the desired services: what the one catalog (`ros_config::catalog`, which `ros
/// service list` reads too) says is enabled. `builtin` holds the always-on definitions,
/// `index` the optional ones (`<index>/<name>.yml`) that `services_include` can turn on.
pub fn desired(builtin: &Path, index: &Path, config: &CloudConfig) -> Catalog {
    let cat = ros_config::catalog::read(builtin, index, config);
    Catalog {
        services: cat.enabled(),
        problems: cat.problems,
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
