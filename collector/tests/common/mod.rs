//! Harness for end-to-end tests: the real `foureyes-collector` and `foureyes-node` binaries as
//! separate processes, real sockets, real SQLite files in temp dirs.
#![allow(dead_code, clippy::unwrap_used, clippy::print_stdout)]

pub mod bird;
pub mod hook;
pub mod netns;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod routed_lab;
pub mod web;

pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test> -> target/debug/<name>
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` before the tests (cargo xtask ci does)",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process killed when dropped, with its stderr captured to a file for post-mortems.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let f = std::fs::File::create(&log).unwrap();
        cmd.stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null());
        let child = cmd.spawn().unwrap();
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Collector {
    pub data_dir: PathBuf,
    pub proc: Proc,
    pub api: String,
    pub node_addr: String,
}

impl Collector {
    pub fn config(dir: &Path, extra: &str) -> PathBuf {
        let p = dir.join("collector.toml");
        std::fs::write(&p, extra).unwrap();
        p
    }

    /// Starts a collector on `node_port` (0 = any) with the API on a loopback port.
    pub fn start(root: &Path, node_port: u16, config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_api(root, node_port, "127.0.0.1:0", config, env)
    }

    pub fn start_api(
        root: &Path,
        node_port: u16,
        api_addr: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_args(root, node_port, api_addr, config, env, &[])
    }

    /// Like [`Collector::start_api`], with extra `serve` arguments (e.g. `--rules FILE`).
    pub fn start_args(
        root: &Path,
        node_port: u16,
        api_addr: &str,
        config: &str,
        env: &[(&str, &str)],
        serve_args: &[&str],
    ) -> Self {
        Self::start_in(root, node_port, api_addr, config, env, serve_args, None)
    }

    /// Like [`Collector::start`], in a mount namespace of its own where `/etc/hosts` is `hosts`
    /// (host names for tests' targets without touching the machine's resolver; needs root and
    /// util-linux's `unshare`).
    pub fn start_with_hosts(root: &Path, config: &str, env: &[(&str, &str)], hosts: &str) -> Self {
        Self::start_in(root, 0, "127.0.0.1:0", config, env, &[], Some(hosts))
    }

    fn start_in(
        root: &Path,
        node_port: u16,
        api_addr: &str,
        config: &str,
        env: &[(&str, &str)],
        serve_args: &[&str],
        hosts: Option<&str>,
    ) -> Self {
        let data_dir = root.join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let _ = std::fs::remove_file(data_dir.join("collector.addr.json"));
        let cfg = Self::config(root, config);
        let mut cmd = match hosts {
            None => Command::new(bin("foureyes-collector")),
            Some(text) => {
                let file = root.join("hosts");
                std::fs::write(&file, text).unwrap();
                // `unshare` makes mounts private by default: the bind mount stays in there.
                let mut c = Command::new("unshare");
                c.args([
                    "-m",
                    "--",
                    "sh",
                    "-c",
                    "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
                ])
                .arg(&file)
                .arg(bin("foureyes-collector"));
                c
            }
        };
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .arg("--node-addr")
            .arg(format!("127.0.0.1:{node_port}"))
            .arg("--api-addr")
            .arg(api_addr)
            .args(serve_args)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let n = std::fs::read_dir(root).map(|d| d.count()).unwrap_or(0);
        let mut proc = Proc::spawn(cmd, root.join(format!("collector-{n}.log")));
        let addr: Value = wait_until("collector to listen", Duration::from_secs(30), || {
            if !proc.is_running() {
                panic!("collector exited early:\n{}", proc.log_text());
            }
            let t = std::fs::read_to_string(data_dir.join("collector.addr.json")).ok()?;
            serde_json::from_str(&t).ok()
        });
        Self {
            data_dir,
            api: addr["api_url"].as_str().unwrap().to_string(),
            node_addr: addr["node_addr"].as_str().unwrap().to_string(),
            proc,
        }
    }

    /// Runs an admin command against this collector's data dir; returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        admin(&self.data_dir, args)
    }

    pub fn tenant(&self, org: &str, team: &str) -> String {
        self.admin(&["org", "create", org]);
        self.admin(&["team", "create", org, team]);
        self.admin(&["apitoken", "create", "--org", org, "--name", "test"])
    }

    pub fn enrollment_token(&self, org: &str, team: &str, ttl: &str) -> String {
        self.admin(&[
            "token", "create", "--org", org, "--team", team, "--ttl", ttl,
        ])
    }
}

/// Runs an admin command against a data dir (a collector need not run yet); returns stdout.
pub fn admin(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(bin("foureyes-collector"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Fails when any SQLite file in `data_dir` (database, WAL, shared memory) holds `secret` in
/// plaintext.
pub fn assert_not_in_database(data_dir: &Path, secret: &str) {
    let mut seen = 0;
    for f in std::fs::read_dir(data_dir).unwrap().flatten() {
        if f.file_name()
            .to_string_lossy()
            .starts_with("foureyes.sqlite")
        {
            seen += 1;
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{:?} holds the secret in plaintext",
                f.path()
            );
        }
    }
    assert!(seen > 0, "no database file in {}", data_dir.display());
}

pub fn enroll(collector_addr: &str, token: &str, state: &Path) -> std::process::Output {
    Command::new(bin("foureyes-node"))
        .arg("enroll")
        .arg("--collector")
        .arg(collector_addr)
        .arg("--state-dir")
        .arg(state)
        .env("FOUREYES_ENROLL_TOKEN", token)
        .output()
        .unwrap()
}

/// Enrolls a node into `org`/`team` with a fresh token, into `root/node`; returns the state dir.
pub fn enroll_node(c: &Collector, root: &Path, org: &str, team: &str) -> PathBuf {
    let state = root.join("node");
    let out = enroll(&c.node_addr, &c.enrollment_token(org, team, "10m"), &state);
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    state
}

/// Waits until the tenant's first agent is connected; returns its id.
pub fn wait_connected(api: &Api) -> String {
    wait_until("the node to connect", Duration::from_secs(20), || {
        let a = api.get("/api/v1/agents");
        (a["agents"][0]["connected"] == serde_json::json!(true))
            .then(|| a["agents"][0]["id"].as_str().unwrap().to_string())
    })
}

pub fn run_node(state: &Path, log: PathBuf) -> Proc {
    let mut cmd = Command::new(bin("foureyes-node"));
    cmd.arg("run")
        .arg("--state-dir")
        .arg(state)
        .env("RUST_LOG", "info");
    Proc::spawn(cmd, log)
}

/// Minimal JSON API client.
pub struct Api {
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.to_string(),
            token: token.to_string(),
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = ureq::request(method, &format!("{}{}", self.base, path))
            .set("Authorization", &format!("Bearer {}", self.token))
            .timeout(Duration::from_secs(10));
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub fn get(&self, path: &str) -> Value {
        let (s, v) = self.call("GET", path, None);
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.call("POST", path, Some(body));
        assert!(s == 200 || s == 201, "POST {path}: {s} {v}");
        v
    }
}

/// Every socket of a process, from /proc: (proto, local address, state).
pub fn sockets_of(pid: u32) -> Vec<(String, String, String)> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy().to_string();
                if let Some(i) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(i.to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    for proto in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6", "icmp", "icmp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && inodes.contains(f[9]) {
                out.push((proto.to_string(), f[1].to_string(), f[3].to_string()));
            }
        }
    }
    out
}

/// A listening TCP socket, or a UDP socket bound to the wildcard address: what an outbound-only
/// agent must never have.
pub fn listening_sockets(pid: u32) -> Vec<(String, String, String)> {
    sockets_of(pid)
        .into_iter()
        .filter(|(proto, local, state)| {
            let wildcard = local.starts_with("00000000:")
                || local.starts_with("00000000000000000000000000000000:");
            match proto.as_str() {
                "tcp" | "tcp6" => state == "0A",
                "udp" | "udp6" => wildcard,
                _ => false,
            }
        })
        .collect()
}

/// Enrolls a BGP listener into `org`/`team` (a `--kind listener` token) and runs it with the
/// `listener.toml` text given; its state and config live under `root/listener`.
pub fn start_listener(c: &Collector, root: &Path, org: &str, team: &str, config: &str) -> Proc {
    let token = c.admin(&[
        "token", "create", "--org", org, "--team", team, "--ttl", "10m", "--kind", "listener",
    ]);
    let state = root.join("listener");
    let out = Command::new(bin("foureyes-bgp-listener"))
        .args(["enroll", "--collector", &c.node_addr, "--state-dir"])
        .arg(&state)
        .env("FOUREYES_ENROLL_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "listener enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = root.join("listener.toml");
    std::fs::write(&conf, config).unwrap();
    let mut cmd = Command::new(bin("foureyes-bgp-listener"));
    cmd.args(["run", "--config"])
        .arg(&conf)
        .arg("--state-dir")
        .arg(&state)
        .env("RUST_LOG", "info");
    Proc::spawn(cmd, root.join("listener.log"))
}
