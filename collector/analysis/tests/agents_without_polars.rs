//! Architecture Invariant: polars stays in the collector. The agents (node, BGP listener and the
//! crates they are built from) and the web app never link it, even transitively: it would more
//! than double their build time and binary size for code they never run.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const AGENTS: &[&str] = &[
    "foureyes-node",
    "foureyes-bgp-listener",
    "foureyes-agent",
    "foureyes-probes",
    "foureyes-proto",
    "foureyes-identity",
    "foureyes-sockopt",
    "foureyes-web",
];

/// Every package a workspace package needs to build and run (normal and build dependencies,
/// all targets), by name.
fn closure(meta: &Value, root: &str) -> BTreeSet<String> {
    let packages = meta["packages"].as_array().expect("packages");
    let name_of: HashMap<&str, &str> = packages
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let nodes = meta["resolve"]["nodes"].as_array().expect("resolve.nodes");
    let deps_of: HashMap<&str, Vec<&str>> = nodes
        .iter()
        .filter_map(|n| {
            let deps = n["deps"]
                .as_array()?
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .is_some_and(|ks| ks.iter().any(|k| k["kind"].as_str() != Some("dev")))
                })
                .filter_map(|d| d["pkg"].as_str())
                .collect();
            Some((n["id"].as_str()?, deps))
        })
        .collect();
    let start = name_of
        .iter()
        .find(|(_, n)| **n == root)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("{root} is not in the workspace"));
    let mut seen = BTreeSet::new();
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        todo.extend(deps_of.get(id).into_iter().flatten().copied());
    }
    seen.iter()
        .filter_map(|id| name_of.get(id).map(|n| n.to_string()))
        .collect()
}

#[test]
fn no_agent_crate_depends_on_polars() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(cargo)
        .current_dir(&root)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    // Positive control: the walk does find polars where it belongs.
    assert!(
        closure(&meta, "foureyes-collector").contains("polars"),
        "the collector should reach polars through foureyes-analysis"
    );
    for agent in AGENTS {
        let bad: Vec<String> = closure(&meta, agent)
            .into_iter()
            .filter(|n| n.starts_with("polars") || n == "foureyes-analysis")
            .collect();
        assert!(
            bad.is_empty(),
            "{agent} depends on {bad:?}: keep polars in the collector-only analysis crate"
        );
    }
}
