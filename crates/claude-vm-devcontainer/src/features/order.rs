//! The order features are installed in.
//!
//! The spec's rules, in decreasing precedence:
//! 1. `overrideFeatureInstallOrder` (devcontainer.json): the features it lists come first,
//!    in its order; each entry must name a feature in `features`.
//! 2. `installsAfter` (devcontainer-feature.json): soft dependencies, among the features
//!    that are used only (naming one that is not is fine); ignored for features listed in
//!    (1), whose order the user chose.
//! 3. `dependsOn`: hard dependencies, always honoured. claude-vm does not fetch and add a
//!    dependency itself, so it must be in `features` too.
//!
//! The rest installs in rounds, as the spec describes: each round takes every feature whose
//! dependencies are all installed, sorted by key (the features object is a map, so its
//! order carries no meaning and the result must not depend on it). A round with nothing
//! to take while features remain is a cycle, reported with its features; listing them in
//! `overrideFeatureInstallOrder` breaks a cycle of `installsAfter`.
//!
//! A reference matches a feature by its id without version (`ghcr.io/o/r/name`, `./path`),
//! case-insensitively, or, for a local feature, by the `id` of its metadata.

use crate::Error;
use crate::features::reference::FeatureRef;

/// What ordering needs of one feature.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The key in `features`.
    pub key: String,
    /// [`FeatureRef::id`].
    pub id: String,
    /// For a local feature: its metadata's `id`.
    pub local_id: Option<String>,
    /// `installsAfter`, as written.
    pub after: Vec<String>,
    /// The keys of `dependsOn`, as written.
    pub depends: Vec<String>,
}

impl Node {
    fn matches(&self, written: &str) -> bool {
        let id = FeatureRef::id_of(written);
        id.eq_ignore_ascii_case(&self.id)
            || self
                .local_id
                .as_deref()
                .is_some_and(|local| local == written.trim())
    }
}

fn find(nodes: &[Node], written: &str) -> Option<usize> {
    nodes.iter().position(|n| n.matches(written))
}

/// The install order: indices into `nodes`.
pub(crate) fn install_order(nodes: &[Node], overrides: &[String]) -> Result<Vec<usize>, Error> {
    let mut hard: Vec<Vec<usize>> = Vec::with_capacity(nodes.len());
    let mut soft: Vec<Vec<usize>> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut deps = Vec::new();
        for written in &node.depends {
            match find(nodes, written) {
                Some(i) => deps.push(i),
                None => {
                    return Err(Error::MissingDependency {
                        key: node.key.clone(),
                        dependency: written.clone(),
                    });
                }
            }
        }
        hard.push(deps);
        soft.push(node.after.iter().filter_map(|w| find(nodes, w)).collect());
    }

    let mut placed = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    for written in overrides {
        let Some(i) = find(nodes, written) else {
            return Err(Error::OverrideUnknown {
                id: written.clone(),
            });
        };
        if placed[i] {
            continue;
        }
        if let Some(&dep) = hard[i].iter().find(|&&d| !placed[d]) {
            return Err(Error::OrderConflict {
                key: nodes[i].key.clone(),
                dependency: nodes[dep].key.clone(),
            });
        }
        placed[i] = true;
        order.push(i);
    }

    while order.len() < nodes.len() {
        let mut round: Vec<usize> = (0..nodes.len())
            .filter(|&i| !placed[i])
            .filter(|&i| hard[i].iter().chain(&soft[i]).all(|&d| placed[d] && d != i))
            .collect();
        if round.is_empty() {
            let mut features: Vec<String> = (0..nodes.len())
                .filter(|&i| !placed[i])
                .map(|i| nodes[i].key.clone())
                .collect();
            features.sort();
            return Err(Error::Cycle { features });
        }
        round.sort_by(|&a, &b| nodes[a].key.cmp(&nodes[b].key));
        for i in round {
            placed[i] = true;
            order.push(i);
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(key: &str, after: &[&str], depends: &[&str]) -> Node {
        let reference = FeatureRef::parse(key).unwrap();
        Node {
            key: key.to_owned(),
            id: reference.id(),
            local_id: match reference {
                FeatureRef::Local(p) => Some(p.trim_start_matches("./").to_owned()),
                _ => None,
            },
            after: after.iter().map(|s| s.to_string()).collect(),
            depends: depends.iter().map(|s| s.to_string()).collect(),
        }
    }

    const NODE: &str = "ghcr.io/devcontainers/features/node:1";
    const PYTHON: &str = "ghcr.io/devcontainers/features/python:1";
    const COMMON: &str = "ghcr.io/devcontainers/features/common-utils:2";

    type Case = (
        &'static str,
        Vec<Node>,
        Vec<&'static str>,
        Result<Vec<&'static str>, &'static str>,
    );

    /// (what, features, overrideFeatureInstallOrder, keys in order or a piece of the error)
    #[test]
    fn order_table() {
        let cases: Vec<Case> = vec![
            (
                "no constraints: by key",
                vec![
                    node("./b", &[], &[]),
                    node("./a", &[], &[]),
                    node(NODE, &[], &[]),
                ],
                vec![],
                Ok(vec!["./a", "./b", NODE]),
            ),
            (
                "installsAfter, matched without version",
                vec![
                    node(NODE, &["ghcr.io/devcontainers/features/python"], &[]),
                    node(PYTHON, &[], &[]),
                ],
                vec![],
                Ok(vec![PYTHON, NODE]),
            ),
            (
                "installsAfter a feature not used is ignored",
                vec![
                    node("./a", &["ghcr.io/x/y/absent"], &[]),
                    node("./b", &[], &[]),
                ],
                vec![],
                Ok(vec!["./a", "./b"]),
            ),
            (
                "rounds: a chain and a free feature",
                vec![
                    node("./c", &["./b"], &[]),
                    node("./b", &["./a"], &[]),
                    node("./a", &[], &[]),
                    node("./z", &[], &[]),
                ],
                vec![],
                Ok(vec!["./a", "./z", "./b", "./c"]),
            ),
            (
                "a local feature matched by its metadata id",
                vec![node("./x", &["y"], &[]), node("./y", &[], &[])],
                vec![],
                Ok(vec!["./y", "./x"]),
            ),
            (
                "overrides first, in their order",
                vec![
                    node("./a", &[], &[]),
                    node("./b", &[], &[]),
                    node("./c", &[], &[]),
                ],
                vec!["./c", "./b"],
                Ok(vec!["./c", "./b", "./a"]),
            ),
            (
                "overrides win over installsAfter",
                vec![
                    node(NODE, &["ghcr.io/devcontainers/features/common-utils"], &[]),
                    node(COMMON, &[], &[]),
                ],
                vec!["ghcr.io/devcontainers/features/node"],
                Ok(vec![NODE, COMMON]),
            ),
            (
                "overrides break a cycle of installsAfter",
                vec![node("./a", &["./b"], &[]), node("./b", &["./a"], &[])],
                vec!["./b"],
                Ok(vec!["./b", "./a"]),
            ),
            (
                "dependsOn is honoured",
                vec![node("./a", &[], &["./z"]), node("./z", &[], &[])],
                vec![],
                Ok(vec!["./z", "./a"]),
            ),
            (
                "a cycle",
                vec![
                    node("./a", &["./b"], &[]),
                    node("./b", &["./a"], &[]),
                    node("./c", &[], &[]),
                ],
                vec![],
                Err("features ./a, ./b must each be installed after another"),
            ),
            (
                "a feature after itself is a cycle",
                vec![node("./a", &["./a"], &[])],
                vec![],
                Err("features ./a must"),
            ),
            (
                "an override naming no feature",
                vec![node("./a", &[], &[])],
                vec!["./nope"],
                Err("overrideFeatureInstallOrder names \"./nope\""),
            ),
            (
                "a missing dependency",
                vec![node("./a", &[], &["ghcr.io/devcontainers/features/git:1"])],
                vec![],
                Err(
                    "depends on \"ghcr.io/devcontainers/features/git:1\", which is not in features",
                ),
            ),
            (
                "an override against dependsOn",
                vec![node("./a", &[], &["./b"]), node("./b", &[], &[])],
                vec!["./a"],
                Err("puts \"./a\" before \"./b\""),
            ),
        ];
        for (what, nodes, overrides, want) in cases {
            let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
            let got = install_order(&nodes, &overrides).map(|order| {
                order
                    .iter()
                    .map(|&i| nodes[i].key.clone())
                    .collect::<Vec<_>>()
            });
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{what}"),
                (Err(e), Err(piece)) => assert!(e.to_string().contains(piece), "{what}: {e}"),
                (got, want) => panic!("{what}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_order_does_not_depend_on_the_input_order() {
        let mut nodes = vec![
            node("./d", &["./a"], &[]),
            node("./c", &[], &[]),
            node("./b", &["./c"], &[]),
            node("./a", &[], &[]),
        ];
        let first: Vec<String> = install_order(&nodes, &[])
            .unwrap()
            .iter()
            .map(|&i| nodes[i].key.clone())
            .collect();
        nodes.reverse();
        let second: Vec<String> = install_order(&nodes, &[])
            .unwrap()
            .iter()
            .map(|&i| nodes[i].key.clone())
            .collect();
        assert_eq!(first, second);
        assert_eq!(first, ["./a", "./c", "./b", "./d"]);
    }
}
