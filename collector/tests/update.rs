//! Architecture Invariant: a node runs only binaries verified against the update key pinned at
//! build time. A release signed by any other key is refused and the node keeps running; a release
//! signed by the pinned key (debug builds pin `testbeds/keys/update-test`) replaces the binary and
//! the same process executes it.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use common::*;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::json;
use sha2::{Digest, Sha256};

fn sign(key: &SigningKey, version: &str, file: &Path) -> String {
    let digest = Sha256::digest(std::fs::read(file).unwrap());
    hex::encode(
        key.sign(&foureyes_identity::update_message(version, &digest))
            .to_bytes(),
    )
}

fn test_key() -> SigningKey {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testbeds/keys/update-test.key"
    ))
    .unwrap();
    SigningKey::from_bytes(&hex::decode(text.trim()).unwrap().try_into().unwrap())
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn only_a_release_signed_by_the_pinned_key_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::start(tmp.path(), 0, "", &[]);
    let api = Api::new(&c.api, &c.tenant("acme", "noc"));
    // The node runs from its own copy, which the update replaces.
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let node_bin = bin_dir.join("foureyes-node");
    std::fs::copy(bin("foureyes-node"), &node_bin).unwrap();
    let original = std::fs::read(&node_bin).unwrap();
    let state = enroll_node(&c, tmp.path(), "acme", "noc");
    let mut cmd = std::process::Command::new(&node_bin);
    cmd.arg("run").arg("--state-dir").arg(&state);
    let mut node = Proc::spawn(cmd, tmp.path().join("node.log"));
    let pid = node.pid();
    wait_until("the node to connect", Duration::from_secs(20), || {
        (api.get("/api/v1/agents")["agents"][0]["connected"] == json!(true)).then_some(())
    });

    // The "release" is a script: if it ever runs it leaves a marker and becomes `sleep`.
    let marker = tmp.path().join("ran");
    let release = tmp.path().join("release.sh");
    std::fs::write(
        &release,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\nexec sleep 300\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&release, std::fs::Permissions::from_mode(0o755)).unwrap();

    // 1. Signed by a key the node does not pin: refused, nothing runs, the node stays up.
    let stranger = SigningKey::generate(&mut rand::rngs::OsRng);
    let sig = sign(&stranger, "9.0.0-evil", &release);
    c.admin(&[
        "update",
        "publish",
        "--version",
        "9.0.0-evil",
        "--binary",
        release.to_str().unwrap(),
        "--signature",
        &sig,
    ]);
    wait_until(
        "the node to refuse the release",
        Duration::from_secs(20),
        || node.log_text().contains("update refused").then_some(()),
    );
    assert!(
        node.log_text().contains("does not verify"),
        "{}",
        node.log_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(node.is_running());
    assert!(!marker.exists(), "an unverified release ran");
    assert_eq!(
        std::fs::read(&node_bin).unwrap(),
        original,
        "the binary was replaced"
    );
    assert!(cmdline(pid).contains("foureyes-node"));

    // 2. Signed by the pinned key: the same process becomes the new binary.
    let sig = sign(&test_key(), "9.0.0", &release);
    c.admin(&[
        "update",
        "publish",
        "--version",
        "9.0.0",
        "--binary",
        release.to_str().unwrap(),
        "--signature",
        &sig,
    ]);
    let start = std::time::Instant::now();
    let args = loop {
        if let Ok(a) = std::fs::read_to_string(&marker) {
            break a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the verified release did not run; node log:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        args.contains("run --state-dir"),
        "the update runs with the node's arguments: {args}"
    );
    assert_eq!(
        std::fs::read(&node_bin).unwrap(),
        std::fs::read(&release).unwrap()
    );
    wait_until(
        "the node process to become the release",
        Duration::from_secs(5),
        || cmdline(pid).contains("sleep 300").then_some(()),
    );
    node.kill9();
}
