//! `serve --dev`: a working FourEyes on one machine in one command.
//!
//! Creates org `dev` (team `noc`), mints a fresh dev API token (revoking the previous one), runs a
//! small DNS resolver on loopback, creates default tests against local targets, and enrolls and
//! runs a local `foureyes-node` as a separate process through the real `enroll` and `run` commands.
//! Starting again reuses the data dir and the enrolled node.

use std::{path::PathBuf, process::Stdio, sync::Arc, time::Duration};

use foureyes_identity::ApiToken;
use foureyes_proto::v1::{self as pb, probe_config::Kind};
use foureyes_store::{Scope, SystemScope, Tenant};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::{server::Running, state::Collector};

pub const DEV_ORG: &str = "dev";
pub const DEV_TEAM: &str = "noc";
const DEV_TOKEN_NAME: &str = "dev";
pub const DEV_DNS_NAME: &str = "collector.dev.foureyes.test";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("dev setup: {0}")]
    Setup(String),
    #[error("the local node failed: {0}")]
    Node(String),
}

fn setup(e: impl std::fmt::Display) -> DevError {
    DevError::Setup(e.to_string())
}

pub struct DevSession {
    pub api_token: String,
    pub node: Child,
    /// Held open for the node's lifetime: the dev node stops when it closes. Kept apart from
    /// `node` because `Child::wait` closes a child's stdin before waiting.
    pub node_stdin: Option<tokio::process::ChildStdin>,
    pub dns_addr: std::net::SocketAddr,
}

/// The node binary from the same build: `FOUREYES_NODE_BIN`, else next to this executable.
pub fn node_binary() -> Result<PathBuf, DevError> {
    if let Ok(p) = std::env::var("FOUREYES_NODE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(setup)?;
    let dir = exe
        .parent()
        .ok_or_else(|| setup("no executable directory"))?;
    // Integration tests run from target/debug/deps; the binaries sit one level up.
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join("foureyes-node");
        if p.exists() {
            return Ok(p);
        }
    }
    Err(setup(format!(
        "foureyes-node not found next to {} (build it with `cargo build --bins`, or set FOUREYES_NODE_BIN)",
        exe.display()
    )))
}

fn dev_tests(api_port: u16, dns: std::net::SocketAddr) -> Vec<pb::Test> {
    let t = |name: &str, interval_ms: u32, count: u32, kind: Kind| pb::Test {
        name: name.to_string(),
        interval_ms,
        timeout_ms: 2000,
        count,
        config: Some(pb::ProbeConfig { kind: Some(kind) }),
        ..Default::default()
    };
    vec![
        t(
            "dev: ping localhost",
            10_000,
            5,
            Kind::Icmp(pb::IcmpConfig {
                host: "127.0.0.1".into(),
                ..Default::default()
            }),
        ),
        t(
            "dev: collector API port (TCP)",
            10_000,
            1,
            Kind::Tcp(pb::TcpConfig {
                host: "127.0.0.1".into(),
                port: api_port.into(),
                ..Default::default()
            }),
        ),
        t(
            "dev: collector health (HTTP)",
            10_000,
            1,
            Kind::Http(pb::HttpConfig {
                url: format!("http://127.0.0.1:{api_port}/healthz"),
                expect_status: 200,
                ..Default::default()
            }),
        ),
        t(
            "dev: local resolver (DNS)",
            10_000,
            1,
            Kind::Dns(pb::DnsConfig {
                server: dns.ip().to_string(),
                port: dns.port().into(),
                query_name: DEV_DNS_NAME.into(),
                expect_answer: "127.0.0.1".into(),
                ..Default::default()
            }),
        ),
        t(
            "dev: traceroute localhost",
            30_000,
            1,
            Kind::Traceroute(pb::TracerouteConfig {
                host: "127.0.0.1".into(),
                max_hops: 5,
                ..Default::default()
            }),
        ),
    ]
}

/// Makes the dev tenant, token, resolver, tests and node. The caller owns shutdown.
pub async fn start(running: &Running, shutdown: CancellationToken) -> Result<DevSession, DevError> {
    let c: &Arc<Collector> = &running.collector;
    let sys = SystemScope::collector_internal();
    if !c.store.org_exists(&sys, DEV_ORG).map_err(setup)? {
        c.store.create_org(&sys, DEV_ORG).map_err(setup)?;
    }
    if !c
        .store
        .team_exists(&sys, DEV_ORG, DEV_TEAM)
        .map_err(setup)?
    {
        c.store
            .create_team(&sys, DEV_ORG, DEV_TEAM)
            .map_err(setup)?;
    }
    let org_scope = Scope::Tenant(Tenant {
        org: DEV_ORG.into(),
        team: None,
    });
    let team = Tenant {
        org: DEV_ORG.into(),
        team: Some(DEV_TEAM.into()),
    };
    let team_scope = Scope::Tenant(team.clone());

    let revoked = c
        .store
        .revoke_api_tokens_named(&org_scope, DEV_TOKEN_NAME)
        .map_err(setup)?;
    if revoked > 0 {
        tracing::info!(revoked, "previous dev API token revoked");
    }
    let token = ApiToken::generate();
    c.store
        .create_api_token(&org_scope, DEV_TOKEN_NAME, &token.secret_hash())
        .map_err(setup)?;

    // Resolver for the DNS test: answers only for the dev name, on loopback.
    let dns_socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(setup)?;
    let dns_addr = dns_socket.local_addr().map_err(setup)?;
    let sd = shutdown.clone();
    tokio::spawn(async move {
        let records = vec![(
            DEV_DNS_NAME.to_string(),
            std::net::IpAddr::from([127, 0, 0, 1]),
        )];
        if let Err(e) =
            foureyes_probes::dev_dns::serve(dns_socket, records, sd.cancelled_owned()).await
        {
            tracing::error!(error = %e, "dev DNS resolver stopped");
        }
    });

    // Default tests: created once, then kept in step with this run's ports.
    let existing = c.store.list_tests(&team_scope, None, 1000).map_err(setup)?;
    for want in dev_tests(running.api_addr.port(), dns_addr) {
        match existing.iter().find(|t| t.name == want.name) {
            Some(have) => {
                if have.config != want.config {
                    let mut upd = want.clone();
                    upd.id = have.id.clone();
                    c.store.update_test(&team_scope, upd).map_err(setup)?;
                }
            }
            None => {
                c.store.create_test(&team_scope, want).map_err(setup)?;
            }
        }
    }
    c.registry.tests_changed(DEV_ORG);

    let node_bin = node_binary()?;
    let state_dir = c.cfg.data_dir.join("node");
    let collector_addr = format!("127.0.0.1:{}", running.node_addr.port());
    if !state_dir.join("identity.json").exists() {
        let tok = c
            .mint_enrollment_token(&team, pb::AgentKind::Node, Duration::from_secs(600))
            .map_err(setup)?;
        let status = Command::new(&node_bin)
            .arg("enroll")
            .arg("--collector")
            .arg(&collector_addr)
            .arg("--state-dir")
            .arg(&state_dir)
            .env("FOUREYES_ENROLL_TOKEN", &tok.token)
            .stdin(Stdio::null())
            .status()
            .await
            .map_err(|e| DevError::Node(format!("{}: {e}", node_bin.display())))?;
        if !status.success() {
            return Err(DevError::Node(format!("enroll exited with {status}")));
        }
    } else {
        // The collector address may have changed since the node enrolled (another --node-addr).
        update_collector_addr(&state_dir, &collector_addr).map_err(setup)?;
    }
    let mut node = Command::new(&node_bin)
        .arg("run")
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--exit-on-stdin-eof")
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| DevError::Node(format!("{}: {e}", node_bin.display())))?;
    let node_stdin = node.stdin.take();
    Ok(DevSession {
        api_token: token.reveal(),
        node,
        node_stdin,
        dns_addr,
    })
}

fn update_collector_addr(state_dir: &std::path::Path, addr: &str) -> Result<(), String> {
    let p = state_dir.join("identity.json");
    let text = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
    let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if v.get("collector").and_then(|c| c.as_str()) != Some(addr) {
        v["collector"] = serde_json::Value::String(addr.to_string());
        let out = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
        foureyes_identity::write_private(&p, &out).map_err(|e| e.to_string())?;
    }
    Ok(())
}
