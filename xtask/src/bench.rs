//! `cargo xtask bench`: every benchmark behind the README's Performance table, or one by name.
//!
//! Two sorts: `cargo bench` targets (criterion-less `harness = false` programs that print their
//! figures) and the shell benchmarks in `benches/` that drive real processes (routers in network
//! namespaces, a collector under load). Both are listed here so the README, this file and
//! `cargo xtask bench list` name the same set.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{cargo, root, run, target_dir};

/// `cargo bench` targets: (package, bench target).
const CARGO_BENCHES: &[(&str, &str)] = &[
    ("foureyes-store", "ingest"),
    ("foureyes-probes", "probe_rate"),
    ("foureyes-collector", "rpki"),
    ("foureyes-analysis", "window_stats"),
    ("foureyes-notify", "notify"),
    ("foureyes-bgp-listener", "decode"),
    ("foureyes-bgp-listener", "bmp"),
];

/// Shell benchmarks: (name, script, what it needs beyond cargo).
const SCRIPTS: &[(&str, &str, &str)] = &[
    (
        "web",
        "benches/web_bundle.sh",
        "Chromium (cargo xtask ci installs it)",
    ),
    (
        "full_table",
        "benches/bgp_full_table.sh",
        "root, bird2, time (network namespaces)",
    ),
    (
        "mrt_replay",
        "benches/mrt_replay.sh",
        "bgpdump, gzip, bzip2, bc",
    ),
    ("ingest_load", "benches/ingest_load.sh", "nothing more"),
];

fn cargo_bench(package: &str, bench: &str) -> Result<()> {
    let mut c = cargo();
    c.args(["bench", "-p", package, "--bench", bench]);
    run(&format!("cargo bench -p {package} --bench {bench}"), c)
}

fn script(path: &str) -> Result<()> {
    let mut c = Command::new(root().join(path));
    // xtask itself runs under the global build lock (`flock ... cargo xtask bench`): the scripts
    // must not wait for it again.
    c.current_dir(root())
        .env("CARGO_TARGET_DIR", target_dir())
        .env("FOUREYES_LOCK_HELD", "1");
    run(path, c)
}

fn list() {
    println!("cargo bench targets (`cargo xtask bench TARGET`):");
    for (p, b) in CARGO_BENCHES {
        println!("  {b:<14} cargo bench -p {p} --bench {b}");
    }
    println!("benches/ scripts (`cargo xtask bench NAME`):");
    for (n, s, needs) in SCRIPTS {
        println!("  {n:<14} {s} (needs {needs})");
    }
}

/// `None`: all of them, cargo benches first; `list`: print the set; otherwise the one named.
pub fn bench(what: Option<&str>) -> Result<()> {
    match what {
        None => {
            for (p, b) in CARGO_BENCHES {
                cargo_bench(p, b)?;
            }
            for (_, s, _) in SCRIPTS {
                script(s)?;
            }
            Ok(())
        }
        Some("list") => {
            list();
            Ok(())
        }
        Some(name) => {
            if let Some((p, b)) = CARGO_BENCHES.iter().find(|(_, b)| *b == name) {
                return cargo_bench(p, b);
            }
            if let Some((_, s, _)) = SCRIPTS.iter().find(|(n, _, _)| *n == name) {
                return script(s);
            }
            list();
            bail!("bench {name:?}: not one of the benchmarks listed above")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every benchmark the repository has is in the lists: a new `[[bench]]` or `benches/*.sh`
    /// that is not fails here, so `cargo xtask bench` and the README cannot drift apart again.
    #[test]
    fn every_bench_target_and_script_is_listed() {
        let root = root();
        let mut found = Vec::new();
        for manifest in [
            "collector/store",
            "node/probes",
            "collector",
            "collector/analysis",
            "collector/notify",
            "bgp-listener",
            "node",
            "node/agent",
            "proto",
            "proto/identity",
            "collector/loadgen",
            "app-web",
            "app-desktop",
            "testbeds/netlab",
        ] {
            let text =
                std::fs::read_to_string(root.join(manifest).join("Cargo.toml")).unwrap_or_default();
            let mut in_bench = false;
            for line in text.lines() {
                let l = line.trim();
                if l.starts_with('[') {
                    in_bench = l == "[[bench]]";
                } else if in_bench && let Some(v) = l.strip_prefix("name") {
                    found.push(
                        v.trim_start_matches([' ', '='])
                            .trim_matches('"')
                            .to_string(),
                    );
                }
            }
        }
        for b in &found {
            assert!(
                CARGO_BENCHES.iter().any(|(_, x)| x == b),
                "bench target {b} is not in xtask's CARGO_BENCHES"
            );
        }
        assert_eq!(found.len(), CARGO_BENCHES.len(), "{found:?}");
        let scripts = std::fs::read_dir(root.join("benches"))
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .filter(|n| n.ends_with(".sh"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        assert!(!scripts.is_empty());
        for s in &scripts {
            assert!(
                SCRIPTS.iter().any(|(_, p, _)| *p == format!("benches/{s}")),
                "benches/{s} is not in xtask's SCRIPTS"
            );
        }
    }
}
