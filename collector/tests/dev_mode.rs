//! `foureyes-collector serve --dev` as the README runs it: a node enrolls and probes, results come
//! back from the API within a minute, Ctrl-C stops everything, a restart reuses the data dir and
//! the enrolled node and revokes the previous dev token.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::json;

struct Dev {
    child: std::process::Child,
    api: String,
    token: String,
}

fn start_dev(dir: &std::path::Path) -> Dev {
    let mut child = Command::new(bin("foureyes-collector"))
        .current_dir(dir)
        .args([
            "serve",
            "--dev",
            "--node-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .env("FOUREYES_NODE_BIN", bin("foureyes-node"))
        .stdout(Stdio::piped())
        // Kept for the failure message: a dev collector that dies at start says why here.
        .stderr(std::fs::File::create(dir.join("collector.stderr")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut api, mut token) = (None, None);
    let start = Instant::now();
    while api.is_none() || token.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(60).saturating_sub(start.elapsed()))
            .unwrap_or_else(|e| {
                panic!(
                    "no dev banner ({e}); collector stderr:\n{}",
                    std::fs::read_to_string(dir.join("collector.stderr")).unwrap_or_default()
                )
            });
        if let Some(v) = line.trim().strip_prefix("Dashboard/API:") {
            api = Some(v.trim().trim_end_matches('/').to_string());
        }
        if let Some(v) = line.trim().strip_prefix("API token:") {
            token = Some(v.trim().to_string());
        }
    }
    Dev {
        child,
        api: api.unwrap(),
        token: token.unwrap(),
    }
}

fn interrupt(dev: &mut Dev) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .arg("-INT")
        .arg(dev.child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let start = Instant::now();
    loop {
        if let Some(s) = dev.child.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "collector did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pids of `foureyes-node run` processes whose parent is `collector_pid`.
fn node_children(collector_pid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .unwrap_or("");
            let cmd = std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            ppid == collector_pid.to_string()
                && cmd.contains("foureyes-node")
                && cmd.contains(" run ")
        })
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

fn alive(pid: &str) -> bool {
    // A zombie is dead for our purposes (its parent has not reaped it yet).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dev_mode_runs_end_to_end_and_restarts_with_the_same_node() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = start_dev(tmp.path());
    let api = Api::new(&dev.api, &dev.token);
    let agents = wait_until("the dev node", Duration::from_secs(30), || {
        let a = api.get("/api/v1/agents");
        (a["agents"][0]["connected"] == json!(true))
            .then(|| a["agents"].as_array().unwrap().clone())
    });
    assert_eq!(agents.len(), 1);
    let agent_id = agents[0]["id"].as_str().unwrap().to_string();
    let tests = api.get("/api/v1/tests");
    let tests = tests["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 5, "{tests:?}");
    for t in tests {
        let id = t["id"].as_str().unwrap();
        wait_until(
            &format!("an OK result for {}", t["name"]),
            Duration::from_secs(60),
            || {
                let v = api.get(&format!("/api/v1/results?test_id={id}&page_size=10"));
                v["results"]
                    .as_array()?
                    .iter()
                    .any(|r| r["status"] == "STATUS_OK")
                    .then_some(())
            },
        );
    }
    let nodes = node_children(dev.child.id());
    assert_eq!(nodes.len(), 1, "one local node process");
    let status = interrupt(&mut dev);
    assert!(status.success(), "collector exit status {status}");
    wait_until("the dev node to stop", Duration::from_secs(10), || {
        (!alive(&nodes[0])).then_some(())
    });

    // Second start: same data dir, same node, new token; the old token no longer works.
    let mut dev2 = start_dev(tmp.path());
    let (s, _) = Api::new(&dev2.api, &dev.token).call("GET", "/api/v1/agents", None);
    assert_eq!(s, 401, "the previous dev token must be revoked");
    let api2 = Api::new(&dev2.api, &dev2.token);
    let agents = wait_until(
        "the same node to reconnect",
        Duration::from_secs(30),
        || {
            let a = api2.get("/api/v1/agents");
            (a["agents"][0]["connected"] == json!(true))
                .then(|| a["agents"].as_array().unwrap().clone())
        },
    );
    assert_eq!(agents.len(), 1, "restart must not enroll a second node");
    assert_eq!(agents[0]["id"], json!(agent_id));
    assert_eq!(
        api2.get("/api/v1/tests")["tests"].as_array().unwrap().len(),
        5
    );
    interrupt(&mut dev2);
}
