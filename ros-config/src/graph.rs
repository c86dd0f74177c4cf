//! The service dependency graph: which service starts after which, from the
//! `io.rancher.os.after` / `io.rancher.os.before` labels and `volumes_from`, grouped into
//! start *waves* (every service of a wave can start in parallel once the waves before it
//! are up). Owns ordering only, as a pure function of the definitions; readiness (what
//! "up" means, waiting for `network`) is PID 1's.
//!
//! Names that are not services but that PID 1 knows how to wait for (`network`: a default
//! route) are *virtual*: the caller lists them, and an `after:` naming one is then accepted.
//! A virtual name that is also a service is the service. Virtual names take no wave of their
//! own; [`Graph::virtual_prerequisites`] tells which of them a service waits for, and
//! a `before:` naming one makes the virtual name wait for that service (and so everything
//! after it).
//!
//! Every problem is reported at once: each unknown name, and one cycle per set of services
//! that wait for each other, shown as a path (`a -> b -> a`, each waits for the next).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::service::ServiceSpec;

/// How one service refers to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Relation {
    /// `io.rancher.os.after`.
    After,
    /// `io.rancher.os.before`.
    Before,
    /// `volumes_from`.
    VolumesFrom,
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Relation::After => crate::service::LABEL_AFTER,
            Relation::Before => crate::service::LABEL_BEFORE,
            Relation::VolumesFrom => "volumes_from",
        })
    }
}

/// A problem with the order of a set of services.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A service names a service that is not defined (and is not a virtual name).
    #[error("service {service}: {relation} names `{name}`, which is not a defined service")]
    UnknownService {
        /// The service whose definition holds the name.
        service: String,
        /// Where the name is.
        relation: Relation,
        /// The name that is not defined.
        name: String,
    },
    /// Services wait for each other. `path` starts and ends with the same name; each
    /// element waits for the next.
    #[error("services wait for each other in a cycle: {} (each waits for the next)", .path.join(" -> "))]
    Cycle {
        /// The cycle, e.g. `[a, b, a]`.
        path: Vec<String>,
    },
}

/// The ordering of one set of services.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Node -> what it waits for (services and virtual names).
    prerequisites: BTreeMap<String, BTreeSet<String>>,
    /// The virtual names that appear in the graph.
    virtual_names: BTreeSet<String>,
    waves: Vec<Vec<String>>,
}

impl Graph {
    /// Order `services`; names in `virtual_names` may be referred to without being defined.
    pub fn new(
        services: &BTreeMap<String, ServiceSpec>,
        virtual_names: &[&str],
    ) -> Result<Graph, Vec<GraphError>> {
        let mut errors = Vec::new();
        let mut prerequisites: BTreeMap<String, BTreeSet<String>> = services
            .keys()
            .map(|n| (n.clone(), BTreeSet::new()))
            .collect();
        let mut used_virtual = BTreeSet::new();
        let mut known = |service: &str, relation, name: &str| -> bool {
            if services.contains_key(name) {
                return true;
            }
            if virtual_names.contains(&name) {
                used_virtual.insert(name.to_string());
                return true;
            }
            errors.push(GraphError::UnknownService {
                service: service.to_string(),
                relation,
                name: name.to_string(),
            });
            false
        };
        let mut edges = Vec::new();
        for (name, spec) in services {
            for dep in spec.after() {
                if known(name, Relation::After, dep) {
                    edges.push((name.clone(), dep.to_string()));
                }
            }
            for v in &spec.volumes_from {
                if known(name, Relation::VolumesFrom, &v.service) {
                    edges.push((name.clone(), v.service.clone()));
                }
            }
            for later in spec.before() {
                if known(name, Relation::Before, later) {
                    edges.push((later.to_string(), name.clone()));
                }
            }
        }
        for v in &used_virtual {
            prerequisites.entry(v.clone()).or_default();
        }
        for (waiter, waited_for) in edges {
            prerequisites.entry(waiter).or_default().insert(waited_for);
        }
        errors.extend(cycles(&prerequisites));
        if !errors.is_empty() {
            return Err(errors);
        }
        let waves = waves(&prerequisites, &used_virtual);
        Ok(Graph {
            prerequisites,
            virtual_names: used_virtual,
            waves,
        })
    }

    /// The start waves, first first; names sorted within a wave.
    pub fn start_waves(&self) -> &[Vec<String>] {
        &self.waves
    }

    /// The stop waves: the start waves reversed.
    pub fn stop_waves(&self) -> Vec<Vec<String>> {
        self.waves.iter().rev().cloned().collect()
    }

    /// What `name` (a service or a virtual name) waits for directly.
    pub fn prerequisites(&self, name: &str) -> impl Iterator<Item = &str> {
        self.prerequisites
            .get(name)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// The virtual names `service` waits for directly (PID 1 checks their readiness
    /// before starting it).
    pub fn virtual_prerequisites(&self, service: &str) -> Vec<&str> {
        self.prerequisites(service)
            .filter(|p| self.virtual_names.contains(*p))
            .collect()
    }

    /// Every service that waits, directly or not, for `name`: what has to stop (or
    /// restart) with it.
    pub fn dependents(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            for (waiter, prereqs) in &self.prerequisites {
                if prereqs.contains(&n) && out.insert(waiter.clone()) {
                    todo.push(waiter.clone());
                }
            }
        }
        out.retain(|n| !self.virtual_names.contains(n));
        out
    }
}

/// The start waves of `services` (see [`Graph`]).
pub fn start_order(
    services: &BTreeMap<String, ServiceSpec>,
    virtual_names: &[&str],
) -> Result<Vec<Vec<String>>, Vec<GraphError>> {
    Graph::new(services, virtual_names).map(|g| g.waves)
}

/// The stop waves of `services`: the start waves in reverse.
pub fn stop_order(
    services: &BTreeMap<String, ServiceSpec>,
    virtual_names: &[&str],
) -> Result<Vec<Vec<String>>, Vec<GraphError>> {
    Graph::new(services, virtual_names).map(|g| g.stop_waves())
}

/// Wave of each real node: 0 without prerequisites, else one more than the latest wave it
/// waits for. A virtual node is ready as soon as what it waits for is, so it adds no wave.
/// The graph must be acyclic.
fn waves(
    prerequisites: &BTreeMap<String, BTreeSet<String>>,
    virtual_names: &BTreeSet<String>,
) -> Vec<Vec<String>> {
    // ready[n]: the first wave that may start after n is up.
    fn ready(
        n: &str,
        prerequisites: &BTreeMap<String, BTreeSet<String>>,
        virtual_names: &BTreeSet<String>,
        memo: &mut BTreeMap<String, usize>,
    ) -> usize {
        if let Some(r) = memo.get(n) {
            return *r;
        }
        let start = prerequisites
            .get(n)
            .into_iter()
            .flatten()
            .map(|p| ready(p, prerequisites, virtual_names, memo))
            .max()
            .unwrap_or(0);
        let r = if virtual_names.contains(n) {
            start
        } else {
            start + 1
        };
        memo.insert(n.to_string(), r);
        r
    }
    let mut memo = BTreeMap::new();
    let mut out: Vec<Vec<String>> = Vec::new();
    for n in prerequisites.keys().filter(|n| !virtual_names.contains(*n)) {
        let wave = ready(n, prerequisites, virtual_names, &mut memo) - 1;
        if out.len() <= wave {
            out.resize(wave + 1, Vec::new());
        }
        out[wave].push(n.clone());
    }
    // A wave can only be empty when every node of it was virtual.
    out.retain(|w| !w.is_empty());
    out
}

/// One cycle per strongly connected component that has one (Tarjan), each as a path that
/// starts at the component's smallest name.
fn cycles(prerequisites: &BTreeMap<String, BTreeSet<String>>) -> Vec<GraphError> {
    struct Tarjan<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        components: Vec<Vec<&'a str>>,
    }
    impl<'a> Tarjan<'a> {
        // Recursion depth is bounded by the number of services (tens, not thousands).
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            let g = self.g;
            for w in g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                self.components.push(component);
            }
        }
    }
    let mut t = Tarjan {
        g: prerequisites,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in prerequisites.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    let mut out = Vec::new();
    for component in &t.components {
        let members: BTreeSet<&str> = component.iter().copied().collect();
        let start = *members.iter().next().expect("components are not empty");
        let self_loop = prerequisites.get(start).is_some_and(|p| p.contains(start));
        if members.len() == 1 && !self_loop {
            continue;
        }
        out.push(GraphError::Cycle {
            path: cycle_path(prerequisites, &members, start),
        });
    }
    out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    out
}

/// A shortest cycle through `start` inside one strongly connected component (BFS), as
/// `[start, ..., start]`.
fn cycle_path(
    g: &BTreeMap<String, BTreeSet<String>>,
    members: &BTreeSet<&str>,
    start: &str,
) -> Vec<String> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !members.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![start.to_string()];
                let mut cur = v;
                let mut back = Vec::new();
                while cur != start {
                    back.push(cur.to_string());
                    cur = parent[cur];
                }
                path.extend(back.into_iter().rev());
                path.push(start.to_string());
                return path;
            }
            if !parent.contains_key(w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    // Unreachable for a real component; fall back to naming its members.
    let mut path: Vec<String> = members.iter().map(|s| s.to_string()).collect();
    path.push(start.to_string());
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{VolumesFrom, LABEL_AFTER, LABEL_BEFORE};

    /// `"a>b,c; d<e; f"`-free helper: each entry is (name, after, before).
    fn services(defs: &[(&str, &str, &str)]) -> BTreeMap<String, ServiceSpec> {
        defs.iter()
            .map(|(name, after, before)| {
                let mut spec = ServiceSpec {
                    image: "x".into(),
                    ..Default::default()
                };
                if !after.is_empty() {
                    spec.labels.insert(LABEL_AFTER.into(), after.to_string());
                }
                if !before.is_empty() {
                    spec.labels.insert(LABEL_BEFORE.into(), before.to_string());
                }
                (name.to_string(), spec)
            })
            .collect()
    }

    fn waves(defs: &[(&str, &str, &str)], virt: &[&str]) -> Result<Vec<Vec<String>>, Vec<String>> {
        start_order(&services(defs), virt)
            .map_err(|errs| errs.iter().map(ToString::to_string).collect())
    }

    fn w(waves: &[&[&str]]) -> Vec<Vec<String>> {
        waves
            .iter()
            .map(|w| w.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn start_order_table() {
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str, &'a str)],
            &'a [&'a [&'a str]],
        );
        let cases: &[Case] = &[
            ("empty", &[], &[]),
            (
                "independent services share one wave",
                &[("a", "", ""), ("b", "", ""), ("c", "", "")],
                &[&["a", "b", "c"]],
            ),
            (
                "chain",
                &[("c", "b", ""), ("b", "a", ""), ("a", "", "")],
                &[&["a"], &["b"], &["c"]],
            ),
            (
                "diamond",
                &[
                    ("top", "", ""),
                    ("left", "top", ""),
                    ("right", "top", ""),
                    ("bottom", "left, right", ""),
                ],
                &[&["top"], &["left", "right"], &["bottom"]],
            ),
            (
                "before and after combined",
                // udev before network; ntp after network; console after ntp and before docker.
                &[
                    ("udev", "", "network"),
                    ("network", "", ""),
                    ("ntp", "network", ""),
                    ("console", "ntp", "docker"),
                    ("docker", "", ""),
                ],
                &[&["udev"], &["network"], &["ntp"], &["console"], &["docker"]],
            ),
            (
                "a wave waits for its slowest prerequisite",
                &[
                    ("a", "", ""),
                    ("b", "a", ""),
                    ("c", "a,b", ""),
                    ("d", "a", ""),
                ],
                &[&["a"], &["b", "d"], &["c"]],
            ),
        ];
        for (what, defs, want) in cases {
            assert_eq!(waves(defs, &[]), Ok(w(want)), "{what}");
        }
    }

    #[test]
    fn errors_table() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                "cycle of 2",
                &[("a", "b", ""), ("b", "a", "")],
                &["services wait for each other in a cycle: a -> b -> a (each waits for the next)"],
            ),
            (
                "cycle of 3",
                &[("a", "c", ""), ("b", "a", ""), ("c", "b", ""), ("d", "a", "")],
                &["services wait for each other in a cycle: a -> c -> b -> a (each waits for the next)"],
            ),
            (
                "self-cycle",
                &[("a", "a", ""), ("b", "", "")],
                &["services wait for each other in a cycle: a -> a (each waits for the next)"],
            ),
            (
                "cycle through before",
                &[("a", "", "b"), ("b", "", "a")],
                &["services wait for each other in a cycle: a -> b -> a (each waits for the next)"],
            ),
            (
                "unknown names, all of them",
                &[("a", "nope, b", ""), ("b", "", "gone")],
                &[
                    "service a: io.rancher.os.after names `nope`, which is not a defined service",
                    "service b: io.rancher.os.before names `gone`, which is not a defined service",
                ],
            ),
            (
                "unknown name and two cycles at once",
                &[("a", "b", ""), ("b", "a", ""), ("c", "d", ""), ("d", "c,x", "")],
                &[
                    "service d: io.rancher.os.after names `x`, which is not a defined service",
                    "services wait for each other in a cycle: a -> b -> a (each waits for the next)",
                    "services wait for each other in a cycle: c -> d -> c (each waits for the next)",
                ],
            ),
        ];
        for (what, defs, want) in cases {
            assert_eq!(
                waves(defs, &[]),
                Err(want.iter().map(|s| s.to_string()).collect()),
                "{what}"
            );
        }
    }

    #[test]
    fn virtual_names() {
        let defs = [
            ("ntp", "network", ""),
            ("udev", "", ""),
            ("dhcp", "", "network"),
        ];
        // Without the virtual name, `network` is unknown.
        assert_eq!(
            waves(&defs, &[]),
            Err(vec![
                "service dhcp: io.rancher.os.before names `network`, which is not a defined service".to_string(),
                "service ntp: io.rancher.os.after names `network`, which is not a defined service".to_string(),
            ])
        );
        let g = Graph::new(&services(&defs), &["network"]).unwrap();
        // `network` takes no wave, but ntp still waits for dhcp through it.
        assert_eq!(g.start_waves(), w(&[&["dhcp", "udev"], &["ntp"]]));
        assert_eq!(g.virtual_prerequisites("ntp"), ["network"]);
        assert!(g.virtual_prerequisites("udev").is_empty());
        assert_eq!(g.prerequisites("network").collect::<Vec<_>>(), ["dhcp"]);
        assert_eq!(g.dependents("dhcp"), BTreeSet::from(["ntp".to_string()]));
        // A virtual name that is also a service is the service.
        let with_service = [("ntp", "network", ""), ("network", "", "")];
        let g = Graph::new(&services(&with_service), &["network"]).unwrap();
        assert_eq!(g.start_waves(), w(&[&["network"], &["ntp"]]));
        assert!(g.virtual_prerequisites("ntp").is_empty());
    }

    #[test]
    fn volumes_from_orders_and_must_exist() {
        let mut defs = services(&[("console", "", ""), ("user-volumes", "", "")]);
        let console = defs.get_mut("console").unwrap();
        console.volumes_from = vec![
            VolumesFrom {
                service: "user-volumes".into(),
                read_only: false,
            },
            VolumesFrom {
                service: "system-volumes".into(),
                read_only: true,
            },
        ];
        let errs = start_order(&defs, &[]).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "service console: volumes_from names `system-volumes`, which is not a defined service"
        );
        defs.get_mut("console").unwrap().volumes_from.pop();
        assert_eq!(
            start_order(&defs, &[]).unwrap(),
            w(&[&["user-volumes"], &["console"]])
        );
    }

    #[test]
    fn stop_order_is_start_order_reversed() {
        let defs = services(&[("c", "b", ""), ("b", "a", ""), ("a", "", ""), ("x", "", "")]);
        assert_eq!(
            stop_order(&defs, &[]).unwrap(),
            w(&[&["c"], &["b"], &["a", "x"]])
        );
        let g = Graph::new(&defs, &[]).unwrap();
        assert_eq!(
            g.dependents("a"),
            BTreeSet::from(["b".to_string(), "c".to_string()])
        );
    }
}
