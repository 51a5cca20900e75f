//! Architecture checks from `cargo metadata`:
//!
//! 1. every workspace package is classified: a library crate in [`LAYERS`], or a top-level
//!    package (binaries, xtask, benches, examples) that may use anything;
//! 2. a library crate's normal and build dependencies on workspace crates stay within what its
//!    row of the layer table (ARCHITECTURE.md, from DESIGN.md) allows; dev-dependencies may
//!    also use `mesh-sim`;
//! 3. `mesh-sim` is only ever a dev-dependency of library crates;
//! 4. protocol cores (consensus, learning, fault) reach no async runtime or socket library
//!    through their normal dependencies, directly or transitively.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util::cargo;

/// One row of the layer table.
pub(crate) struct Layer {
    pub(crate) name: &'static str,
    /// A protocol core: no runtime, no sockets, no clock.
    pub(crate) core: bool,
    /// Workspace crates it may depend on.
    pub(crate) may_use: &'static [&'static str],
}

const T: &str = "mesh-types";
const C: &str = "mesh-crypto";
const I: &str = "mesh-identity";
const S: &str = "mesh-store";

/// The layer table of DESIGN.md.
pub(crate) const LAYERS: &[Layer] = &[
    Layer {
        name: T,
        core: false,
        may_use: &[],
    },
    Layer {
        name: C,
        core: false,
        may_use: &[T],
    },
    Layer {
        name: I,
        core: false,
        may_use: &[T, C],
    },
    Layer {
        name: S,
        core: false,
        may_use: &[T],
    },
    Layer {
        name: "mesh-consensus",
        core: true,
        may_use: &[T, C, I, S],
    },
    Layer {
        name: "mesh-learning",
        core: true,
        may_use: &[T, C, I, S],
    },
    Layer {
        name: "mesh-memory",
        core: false,
        may_use: &[T, I, S],
    },
    Layer {
        name: "mesh-fault",
        core: true,
        may_use: &[T],
    },
    Layer {
        name: "mesh-transport",
        core: false,
        may_use: &[T, C, I, S],
    },
    Layer {
        name: "mesh-agent-runtime",
        core: false,
        may_use: &[T, C, I, S, "mesh-memory", "mesh-transport"],
    },
    Layer {
        name: "mesh-api",
        core: false,
        may_use: &[
            T,
            C,
            I,
            S,
            "mesh-consensus",
            "mesh-learning",
            "mesh-memory",
            "mesh-fault",
            "mesh-transport",
            "mesh-agent-runtime",
        ],
    },
    Layer {
        name: "mesh-driver",
        core: false,
        may_use: &[
            T,
            C,
            I,
            S,
            "mesh-consensus",
            "mesh-learning",
            "mesh-memory",
            "mesh-fault",
            "mesh-transport",
            "mesh-agent-runtime",
            "mesh-api",
        ],
    },
    Layer {
        name: "mesh-sim",
        core: false,
        may_use: &[
            T,
            C,
            I,
            S,
            "mesh-consensus",
            "mesh-learning",
            "mesh-memory",
            "mesh-fault",
            "mesh-transport",
        ],
    },
];

/// Packages above every layer: they may depend on anything.
const TOP_LEVEL: &[&str] = &["xtask", "mesh-benches", "mesh-examples"];
/// Binaries live under this directory and are top-level too.
const BINS_DIR: &str = "/bins/";
/// Crates a protocol core must never reach through normal dependencies.
const FORBIDDEN_IN_CORES: &[&str] = &["tokio", "async-std", "smol", "mio", "socket2", "libp2p"];

/// Runs `cargo metadata` and checks the workspace.
pub(crate) fn check_workspace() -> Result<String> {
    let out = cargo()
        .args(["metadata", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let (violations, report) = check(&meta)?;
    if !violations.is_empty() {
        bail!(
            "architecture violations:\n  - {}",
            violations.join("\n  - ")
        );
    }
    Ok(report)
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("metadata: missing string {key:?}"))
}

fn array<'a>(v: &'a Value, key: &str) -> Result<&'a Vec<Value>> {
    v.get(key)
        .and_then(Value::as_array)
        .with_context(|| format!("metadata: missing array {key:?}"))
}

/// Checks parsed metadata; returns the violations found and a short report.
pub(crate) fn check(meta: &Value) -> Result<(Vec<String>, String)> {
    let layers: HashMap<&str, &Layer> = LAYERS.iter().map(|l| (l.name, l)).collect();
    let members: HashSet<&str> = array(meta, "workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages = array(meta, "packages")?;
    let mut names_by_id = HashMap::new();
    let mut workspace = Vec::new();
    for p in packages {
        let id = str_field(p, "id")?;
        let name = str_field(p, "name")?;
        names_by_id.insert(id, name);
        if members.contains(id) {
            workspace.push(p);
        }
    }
    let workspace_names: HashSet<&str> = workspace
        .iter()
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .collect();

    let mut violations = Vec::new();
    let mut checked = BTreeSet::new();
    for p in &workspace {
        let name = str_field(p, "name")?;
        let manifest = str_field(p, "manifest_path")?;
        let top = TOP_LEVEL.contains(&name) || manifest.contains(BINS_DIR);
        let Some(layer) = layers.get(name) else {
            if !top {
                violations.push(format!(
                    "{name}: not in the layer table (xtask/src/layers.rs, ARCHITECTURE.md); \
                     classify it before adding it"
                ));
            }
            continue;
        };
        checked.insert(name);
        for dep in array(p, "dependencies")? {
            let dep_name = str_field(dep, "name")?;
            if !workspace_names.contains(dep_name) || dep_name == name {
                continue;
            }
            let kind = dep.get("kind").and_then(Value::as_str).unwrap_or("normal");
            let allowed =
                layer.may_use.contains(&dep_name) || (kind == "dev" && dep_name == "mesh-sim");
            if !allowed {
                let what = if dep_name == "mesh-sim" {
                    "mesh-sim may only be a dev-dependency".to_owned()
                } else {
                    format!("{name} may depend only on {:?}", layer.may_use)
                };
                violations.push(format!("{name} -> {dep_name} ({kind} dependency): {what}"));
            }
        }
    }

    // Core purity, over the resolved graph (normal edges only).
    let resolve = meta.get("resolve").filter(|r| !r.is_null());
    if let Some(resolve) = resolve {
        let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
        for node in array(resolve, "nodes")? {
            let id = str_field(node, "id")?;
            let mut out = Vec::new();
            for dep in array(node, "deps")? {
                let normal = array(dep, "dep_kinds")?
                    .iter()
                    .any(|k| k.get("kind").is_none_or(Value::is_null));
                if normal {
                    out.push(str_field(dep, "pkg")?);
                }
            }
            edges.insert(id, out);
        }
        for p in &workspace {
            let name = str_field(p, "name")?;
            if !layers.get(name).is_some_and(|l| l.core) {
                continue;
            }
            let start = str_field(p, "id")?;
            let mut seen = HashSet::from([start]);
            let mut stack = vec![(start, vec![name])];
            while let Some((id, path)) = stack.pop() {
                for &next in edges.get(id).map(Vec::as_slice).unwrap_or_default() {
                    if !seen.insert(next) {
                        continue;
                    }
                    let next_name = names_by_id.get(next).copied().unwrap_or(next);
                    let mut next_path = path.clone();
                    next_path.push(next_name);
                    if FORBIDDEN_IN_CORES
                        .iter()
                        .any(|f| next_name == *f || next_name.starts_with("libp2p"))
                    {
                        violations.push(format!(
                            "protocol core {name} reaches {next_name}: {}",
                            next_path.join(" -> ")
                        ));
                        continue;
                    }
                    stack.push((next, next_path));
                }
            }
        }
    } else {
        violations.push("cargo metadata has no resolve graph (was --no-deps used?)".into());
    }

    let mut report = String::new();
    let _ = write!(
        report,
        "layering ok: {} library crates checked ({}), {} workspace packages",
        checked.len(),
        checked.iter().copied().collect::<Vec<_>>().join(", "),
        workspace.len()
    );
    Ok((violations, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// (name, parent directory, dependencies as (name, kind)).
    type Crate<'a> = (&'a str, &'a str, &'a [(&'a str, Option<&'a str>)]);

    /// A tiny metadata document: `crates` are (name, manifest dir, deps as (name, kind)).
    fn meta(crates: &[Crate<'_>], extra_edges: &[(&str, &str)]) -> Value {
        let id = |n: &str| format!("path+file:///ws/{n}#0.1.0");
        let mut packages = Vec::new();
        let mut nodes = Vec::new();
        for (name, dir, deps) in crates {
            packages.push(json!({
                "id": id(name),
                "name": name,
                "manifest_path": format!("/ws/{dir}/{name}/Cargo.toml"),
                "dependencies": deps.iter().map(|(d, k)| json!({"name": d, "kind": k})).collect::<Vec<_>>(),
            }));
            let mut node_deps: Vec<Value> = deps
                .iter()
                .map(|(d, k)| json!({"name": d, "pkg": id(d), "dep_kinds": [{"kind": k, "target": null}]}))
                .collect();
            for (from, to) in extra_edges {
                if from == name {
                    node_deps.push(json!({"name": to, "pkg": id(to), "dep_kinds": [{"kind": null, "target": null}]}));
                }
            }
            nodes.push(json!({"id": id(name), "deps": node_deps}));
        }
        let external = ["tokio", "serde", "mio"];
        for name in external {
            packages.push(json!({"id": id(name), "name": name, "manifest_path": "/reg/x/Cargo.toml", "dependencies": []}));
            let deps: Vec<Value> = extra_edges
                .iter()
                .filter(|(f, _)| *f == name)
                .map(|(_, t)| json!({"name": t, "pkg": id(t), "dep_kinds": [{"kind": null, "target": null}]}))
                .collect();
            nodes.push(json!({"id": id(name), "deps": deps}));
        }
        json!({
            "packages": packages,
            "workspace_members": crates.iter().map(|(n, _, _)| id(n)).collect::<Vec<_>>(),
            "resolve": {"nodes": nodes},
        })
    }

    #[test]
    fn the_real_workspace_obeys_the_layers() {
        let report = check_workspace().unwrap();
        assert!(report.contains("mesh-store"), "{report}");
    }

    #[test]
    fn a_clean_graph_passes() {
        let m = meta(
            &[
                ("mesh-types", "crates", &[]),
                ("mesh-store", "crates", &[("mesh-types", None)]),
                (
                    "mesh-fault",
                    "crates",
                    &[
                        ("mesh-types", None),
                        ("mesh-sim", Some("dev")),
                        ("tokio", Some("dev")),
                    ],
                ),
                ("mesh-sim", "crates", &[("mesh-fault", None)]),
                (
                    "mesh-node",
                    "bins",
                    &[("mesh-store", None), ("tokio", None)],
                ),
            ],
            &[],
        );
        let (violations, _) = check(&m).unwrap();
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[test]
    fn an_upward_edge_is_caught() {
        let m = meta(
            &[
                ("mesh-types", "crates", &[]),
                (
                    "mesh-store",
                    "crates",
                    &[("mesh-types", None), ("mesh-consensus", None)],
                ),
                ("mesh-consensus", "crates", &[]),
            ],
            &[],
        );
        let (violations, _) = check(&m).unwrap();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].starts_with("mesh-store -> mesh-consensus"),
            "{violations:?}"
        );
    }

    #[test]
    fn sim_as_a_normal_dependency_is_caught() {
        let m = meta(
            &[
                ("mesh-fault", "crates", &[("mesh-sim", None)]),
                ("mesh-sim", "crates", &[]),
            ],
            &[],
        );
        let (violations, _) = check(&m).unwrap();
        assert!(
            violations.iter().any(|v| v.contains("dev-dependency")),
            "{violations:?}"
        );
    }

    #[test]
    fn a_core_reaching_tokio_transitively_is_caught() {
        let m = meta(
            &[
                ("mesh-types", "crates", &[("serde", None)]),
                ("mesh-fault", "crates", &[("mesh-types", None)]),
            ],
            &[("serde", "tokio")],
        );
        let (violations, _) = check(&m).unwrap();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].contains("mesh-fault -> mesh-types -> serde -> tokio"),
            "{violations:?}"
        );
    }

    #[test]
    fn an_unclassified_crate_is_caught() {
        let m = meta(&[("mesh-widgets", "crates", &[])], &[]);
        let (violations, _) = check(&m).unwrap();
        assert!(
            violations[0].contains("not in the layer table"),
            "{violations:?}"
        );
    }
}
