//! `replay` of bzip2 files through the parallel block decoder (`src/mrt/bzip2_par.rs`): files of
//! many blocks, as one stream (`bzip2`) and as concatenated streams (what `pbzip2` writes and
//! what `cat a.bz2 b.bz2` gives), must print exactly what the plain file prints; a corrupt block
//! in the middle and a truncated file must fail naming the file, after every event of the blocks
//! before. Compressed by the real `bzip2` tool (apt-get install bzip2); needs the built binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::lab::{listener_bin, need};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mrt");

struct Out {
    stdout: String,
    stderr: String,
    ok: bool,
}

fn replay(file: &Path) -> Out {
    let out = Command::new(listener_bin())
        .args(["replay", "--format", "jsonl", "--mrt"])
        .arg(file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run replay");
    Out {
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        ok: out.status.success(),
    }
}

/// `bzip2 -1` (100 kB blocks) of `data`.
fn bzip2(data: &[u8]) -> Vec<u8> {
    need("bzip2", "bzip2");
    let mut child = Command::new("bzip2")
        .args(["-1", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run bzip2");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&input).expect("write to bzip2");
    });
    let out = child.wait_with_output().expect("bzip2");
    writer.join().expect("writer");
    assert!(out.status.success(), "bzip2 failed");
    out.stdout
}

/// A plain MRT file of about 1.2 MB (a dozen 100 kB blocks): the GoBGP table dump and update
/// file, over and over (each copy starts with its peer index table).
fn plain(dir: &Path) -> (PathBuf, Vec<u8>, Out) {
    let table = std::fs::read(Path::new(DATA).join("gobgp-table.mrt")).expect("fixture");
    let updates = std::fs::read(Path::new(DATA).join("gobgp-updates.mrt")).expect("fixture");
    let mut raw = Vec::new();
    while raw.len() < 1_200_000 {
        raw.extend_from_slice(&table);
        raw.extend_from_slice(&updates);
    }
    let path = dir.join("plain.mrt");
    std::fs::write(&path, &raw).expect("write");
    let out = replay(&path);
    assert!(
        out.ok && out.stdout.lines().count() > 10_000,
        "{}",
        out.stderr
    );
    (path, raw, out)
}

#[test]
fn many_blocks_one_stream_or_many_replay_like_the_plain_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, raw, want) = plain(dir.path());
    let one = dir.path().join("one.mrt.bz2");
    std::fs::write(&one, bzip2(&raw)).expect("write");
    // Streams cut at arbitrary points (mid-record), like pbzip2's, plus an empty one.
    let mut many = Vec::new();
    for part in [
        &raw[..333_333],
        &raw[333_333..333_334],
        &[][..],
        &raw[333_334..],
    ] {
        many.extend(bzip2(part));
    }
    let many_path = dir.path().join("many.mrt.bz2");
    std::fs::write(&many_path, &many).expect("write");
    for f in [&one, &many_path] {
        let out = replay(f);
        assert!(out.ok, "{}: {}", f.display(), out.stderr);
        assert!(out.stdout == want.stdout, "{}: output differs", f.display());
    }
}

#[test]
fn a_corrupt_block_or_a_cut_keeps_the_events_before_it_and_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, raw, want) = plain(dir.path());
    let z = bzip2(&raw);
    let cases: [(&str, Vec<u8>, &str); 2] = [
        (
            "corrupt.mrt.bz2",
            {
                let mut c = z.clone();
                let mid = c.len() / 2;
                for b in &mut c[mid..mid + 16] {
                    *b ^= 0xa5;
                }
                c
            },
            "corrupt",
        ),
        ("cut.mrt.bz2", z[..z.len() * 3 / 5].to_vec(), "truncated"),
    ];
    for (name, bytes, why) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).expect("write");
        let out = replay(&path);
        assert!(!out.ok, "{name} must fail");
        assert!(
            out.stderr.contains(name)
                && out.stderr.contains("bzip2 stream 1")
                && out.stderr.contains(why),
            "{name}: {}",
            out.stderr
        );
        // Whole lines of the plain file's output, from its start, and a good part of it: every
        // block before the damage (about 40 % of the file) comes out.
        assert!(
            want.stdout.starts_with(&out.stdout),
            "{name}: output is not a prefix"
        );
        assert!(out.stdout.is_empty() || out.stdout.ends_with('\n'));
        assert!(
            out.stdout.len() > want.stdout.len() / 4,
            "{name}: only {} of {} bytes",
            out.stdout.len(),
            want.stdout.len()
        );
    }
}
