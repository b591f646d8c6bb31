//! Every kept fuzz input (fuzz/regressions/<target>/: crashes once found, now fixed) and every
//! seed (fuzz/seeds/<target>/) goes through the very function its cargo-fuzz target calls
//! (`foureyes_bgp_listener::fuzzing`), on stable, in every test run: a fixed crash cannot come
//! back unnoticed, and the seeds stay inputs the targets accept without panicking.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use foureyes_bgp_listener::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of a corpus directory, dotfiles (`.gitkeep`) left out; a missing directory is an
/// error, so that a renamed target cannot silently lose its regressions.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_fuzz_target_is_a_shared_function() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let manifest: toml::Table = manifest.parse().expect("fuzz/Cargo.toml parses");
    let bins: BTreeSet<String> = manifest
        .get("bin")
        .and_then(|b| b.as_array())
        .expect("[[bin]] entries")
        .iter()
        .map(|b| {
            b.get("name")
                .and_then(|n| n.as_str())
                .expect("bin name")
                .to_owned()
        })
        .collect();
    let shared: BTreeSet<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(bins, shared, "fuzz targets and fuzzing::TARGETS differ");
    for name in &bins {
        let src = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs")))
            .expect("target source");
        assert!(
            src.contains(&format!("foureyes_bgp_listener::fuzzing::{name}(data)")),
            "fuzz_targets/{name}.rs must call fuzzing::{name} and nothing else"
        );
    }
}

#[test]
fn regressions_and_seeds_replay_without_panic() {
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, run) in TARGETS {
        let seeds = inputs(&fuzz_dir().join("seeds").join(name));
        assert!(!seeds.is_empty(), "fuzz/seeds/{name}/ has no seed");
        let regressions = inputs(&fuzz_dir().join("regressions").join(name));
        for path in seeds.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("read input");
            ran += 1;
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "fuzz inputs that panic: {failed:?}");
    assert!(ran >= TARGETS.len());
}
