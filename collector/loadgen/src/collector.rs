//! The collector under test: a real `foureyes-collector serve` child process, set up with its own
//! admin CLI and REST API, exactly as an operator would.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub struct CollectorProc {
    bin: PathBuf,
    data_dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    pub log: PathBuf,
    pub api: String,
    pub node_addr: String,
}

impl CollectorProc {
    /// Writes the config and prepares the data dir; nothing runs yet.
    pub fn new(bin: &Path, root: &Path, config: &str) -> Result<Self> {
        let data_dir = root.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let cfg = root.join("collector.toml");
        std::fs::write(&cfg, config)?;
        Ok(Self {
            bin: bin.to_path_buf(),
            data_dir,
            config: cfg,
            child: None,
            log: root.join("collector.log"),
            api: String::new(),
            node_addr: String::new(),
        })
    }

    /// Runs an admin command against the data dir; returns its trimmed stdout.
    pub fn admin(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "admin {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// Starts `serve` on loopback ports and waits until it listens.
    pub fn serve(&mut self, extra: &[&str]) -> Result<()> {
        let addr_file = self.data_dir.join("collector.addr.json");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::File::create(&self.log)?;
        let mut child = Command::new(&self.bin)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config)
            .args([
                "serve",
                "--node-addr",
                "127.0.0.1:0",
                "--api-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let start = Instant::now();
        let addr: Value = loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "collector exited ({status}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Some(v) = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
            {
                break v;
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("the collector did not listen within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.api = addr["api_url"]
            .as_str()
            .context("collector.addr.json: api_url")?
            .to_string();
        self.node_addr = addr["node_addr"]
            .as_str()
            .context("collector.addr.json: node_addr")?
            .to_string();
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `foureyes_ingest_rows_total` from `/metrics` (loopback needs no token).
    pub fn rows_committed(&self) -> Result<u64> {
        let text = ureq::get(&format!("{}/metrics", self.api))
            .timeout(Duration::from_secs(10))
            .call()?
            .into_string()?;
        text.lines()
            .find_map(|l| l.strip_prefix("foureyes_ingest_rows_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .context("/metrics has no foureyes_ingest_rows_total")
    }
}

impl Drop for CollectorProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal JSON client for the REST API.
pub struct Api {
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn post(&self, path: &str, body: Value) -> Result<Value> {
        let resp = ureq::post(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .timeout(Duration::from_secs(30))
            .send_json(body)
            .with_context(|| format!("POST {path}"))?;
        Ok(resp.into_json()?)
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
