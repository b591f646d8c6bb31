//! `foureyes-collector`: flags in, library calls out. Printing to stdout is this binary's job.
#![allow(clippy::print_stdout)]

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use foureyes_collector::{
    config::{Config, FileConfig},
    dev, server,
};
use foureyes_identity::ApiToken;
use foureyes_proto::v1 as pb;
use foureyes_store::{Scope, Store, SystemScope, Tenant};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "foureyes-collector",
    version,
    about = "FourEyes collector: CA, agent link, store, API"
)]
struct Cli {
    /// Collector config file (TOML).
    #[arg(long, global = true, env = "FOUREYES_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (database, CA); overrides the config file.
    #[arg(long, global = true, env = "FOUREYES_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the collector.
    Serve {
        /// Agent port (mTLS gRPC).
        #[arg(long)]
        node_addr: Option<SocketAddr>,
        /// API and dashboard port.
        #[arg(long)]
        api_addr: Option<SocketAddr>,
        /// Quickstart: org `dev`, a fresh API token, local DNS, default tests and a local node.
        #[arg(long)]
        dev: bool,
        /// Alert rules and notifiers (TOML); reloaded on SIGHUP.
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Enrollment tokens for agents.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Organisations.
    Org {
        #[command(subcommand)]
        cmd: OrgCmd,
    },
    /// Teams inside an organisation.
    Team {
        #[command(subcommand)]
        cmd: TeamCmd,
    },
    /// Enrolled agents (nodes and listeners).
    Agent {
        #[command(subcommand)]
        cmd: AgentCmd,
    },
    /// API tokens.
    Apitoken {
        #[command(subcommand)]
        cmd: ApiTokenCmd,
    },
    /// Signed node releases (self-update).
    Update {
        #[command(subcommand)]
        cmd: UpdateCmd,
    },
}

#[derive(Subcommand)]
enum UpdateCmd {
    /// Publish a node binary signed offline (`cargo xtask sign-update`); connected nodes of another
    /// version are offered it when they next connect.
    Publish {
        #[arg(long)]
        version: String,
        #[arg(long)]
        binary: PathBuf,
        /// ed25519 signature, hex (128 digits).
        #[arg(long)]
        signature: String,
    },
    /// Show the published release.
    Show,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Node,
    Listener,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint a single-use enrollment token (printed once).
    Create {
        #[arg(long)]
        org: String,
        #[arg(long)]
        team: Option<String>,
        /// Lifetime, e.g. 1h, 30m.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, value_enum, default_value = "node")]
        kind: Kind,
    },
}

#[derive(Subcommand)]
enum OrgCmd {
    Create { org: String },
    List,
}

#[derive(Subcommand)]
enum TeamCmd {
    Create { org: String, team: String },
}

#[derive(Subcommand)]
enum AgentCmd {
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke an agent and all its keys; its stream is cut and it cannot connect or re-enroll.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum ApiTokenCmd {
    /// Mint an API token for an org (and team), printed once.
    Create {
        #[arg(long)]
        org: String,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        name: String,
    },
    List {
        #[arg(long)]
        org: Option<String>,
    },
    Revoke {
        id: String,
        /// The token's org.
        #[arg(long)]
        org: String,
    },
}

fn init_tracing() {
    use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,h2=warn,hyper=warn,tower=warn".into());
    // The log filter applies to the log output only; the OTLP layer picks its own (ingest) spans.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        .with(foureyes_collector::otlp::span_layer())
        .init();
}

fn config(
    cli: &Cli,
    node_addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
    dev: bool,
) -> Result<Config> {
    let file = match &cli.config {
        Some(p) => FileConfig::load(p).map_err(anyhow::Error::msg)?,
        None => FileConfig::default(),
    };
    let data_dir = cli
        .data_dir
        .clone()
        .or_else(|| dev.then(|| PathBuf::from("foureyes-dev")));
    let (node_addr, api_addr) = if dev {
        (
            node_addr
                .or(file.node_addr)
                .or(Some(SocketAddr::from(([127, 0, 0, 1], 7443)))),
            api_addr.or(file.api_addr),
        )
    } else {
        (node_addr, api_addr)
    };
    Config::resolve(file, data_dir, node_addr, api_addr).map_err(anyhow::Error::msg)
}

fn sys() -> SystemScope {
    SystemScope::collector_internal()
}

fn tenant(org: &str, team: Option<&str>) -> Tenant {
    Tenant {
        org: org.to_string(),
        team: team.map(str::to_string),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    init_tracing();
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Serve {
            node_addr,
            api_addr,
            dev,
            rules,
        } => {
            let mut cfg = config(&cli, *node_addr, *api_addr, *dev)?;
            cfg.rules_file = rules.clone();
            serve(cfg, *dev).await
        }
        cmd => admin(&cli, cmd),
    }
}

async fn serve(cfg: Config, dev_mode: bool) -> Result<()> {
    let shutdown = CancellationToken::new();
    let running = server::start(cfg, shutdown.clone()).await?;
    let mut session = if dev_mode {
        let s = dev::start(&running, shutdown.clone()).await?;
        println!();
        println!(
            "FourEyes is running (dev mode, org `{}`, team `{}`).",
            dev::DEV_ORG,
            dev::DEV_TEAM
        );
        println!("  Dashboard/API:  {}/", running.api_url);
        println!("  API token:      {}", s.api_token);
        println!("  Agent port:     {}", running.node_addr);
        println!(
            "  Data dir:       {}",
            running.collector.cfg.data_dir.display()
        );
        println!();
        println!("Try:");
        println!("  export TOKEN={}", s.api_token);
        println!(
            "  curl -H \"Authorization: Bearer $TOKEN\" {}/api/v1/results?page_size=5",
            running.api_url
        );
        println!();
        println!("Ctrl-C stops the collector and the local node.");
        Some(s)
    } else {
        None
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        status = async { match session.as_mut() { Some(s) => s.node.wait().await, None => std::future::pending().await } } => {
            tracing::error!(?status, "the local node exited");
        }
    }
    tracing::info!("shutting down");
    if let Some(mut s) = session.take() {
        // Closing its stdin tells the dev node to stop; give it a moment, then make sure.
        drop(s.node_stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), s.node.wait())
            .await
            .is_err()
        {
            let _ = s.node.kill().await;
        }
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), running.done).await;
    Ok(())
}

fn admin(cli: &Cli, cmd: &Cmd) -> Result<()> {
    let cfg = config(cli, None, None, false)?;
    let store = server::open_store(&cfg.data_dir)?;
    match cmd {
        Cmd::Serve { .. } => unreachable!("handled in main"),
        Cmd::Org {
            cmd: OrgCmd::Create { org },
        } => {
            store.create_org(&sys(), org)?;
            println!("org {org} created");
        }
        Cmd::Org { cmd: OrgCmd::List } => {
            for o in store.list_orgs(&sys())? {
                println!("{o}");
            }
        }
        Cmd::Team {
            cmd: TeamCmd::Create { org, team },
        } => {
            store.create_team(&sys(), org, team)?;
            println!("team {org}/{team} created");
        }
        Cmd::Token {
            cmd:
                TokenCmd::Create {
                    org,
                    team,
                    ttl,
                    kind,
                },
        } => {
            check_tenant(&store, org, team.as_deref())?;
            let fp = server::ca_fingerprint(&cfg.data_dir)?;
            let kind = match kind {
                Kind::Node => pb::AgentKind::Node,
                Kind::Listener => pb::AgentKind::Listener,
            };
            let t = server::mint_token(&store, fp, &tenant(org, team.as_deref()), kind, *ttl)?;
            eprintln!(
                "Enrollment token (single use, shown once, expires in {}):",
                humantime::format_duration(*ttl)
            );
            println!("{}", t.token);
        }
        Cmd::Agent {
            cmd: AgentCmd::List { org },
        } => {
            let scope = match org {
                Some(o) => Scope::Tenant(tenant(o, None)),
                None => Scope::System(sys()),
            };
            println!(
                "{:<36} {:<10} {:<12} {:<9} {:<8} {:<24} HOSTNAME",
                "ID", "ORG", "TEAM", "KIND", "STATE", "LAST SEEN"
            );
            for a in store.list_agents(&scope)? {
                let state = if a.revoked { "revoked" } else { "active" };
                let seen = a.last_seen_ms.map(fmt_ms).unwrap_or_else(|| "never".into());
                let kind = if a.kind == pb::AgentKind::Listener {
                    "listener"
                } else {
                    "node"
                };
                println!(
                    "{:<36} {:<10} {:<12} {:<9} {:<8} {:<24} {}",
                    a.id,
                    a.org,
                    a.team.as_deref().unwrap_or("-"),
                    kind,
                    state,
                    seen,
                    a.hostname
                );
            }
        }
        Cmd::Agent {
            cmd: AgentCmd::Revoke { id },
        } => {
            if !store.revoke_agent(&Scope::System(sys()), id, server::now_ms())? {
                bail!("no agent {id}");
            }
            println!("agent {id} revoked (a running collector cuts its stream within a second)");
        }
        Cmd::Apitoken {
            cmd: ApiTokenCmd::Create { org, team, name },
        } => {
            check_tenant(&store, org, team.as_deref())?;
            let t = ApiToken::generate();
            let row = store.create_api_token(
                &Scope::Tenant(tenant(org, team.as_deref())),
                name,
                &t.secret_hash(),
            )?;
            eprintln!(
                "API token {} for {org}{} (shown once):",
                row.id,
                team.as_deref().map(|t| format!("/{t}")).unwrap_or_default()
            );
            println!("{}", t.reveal());
        }
        Cmd::Apitoken {
            cmd: ApiTokenCmd::List { org },
        } => {
            let scope = match org {
                Some(o) => Scope::Tenant(tenant(o, None)),
                None => Scope::System(sys()),
            };
            println!(
                "{:<20} {:<10} {:<12} {:<20} {:<8} CREATED",
                "ID", "ORG", "TEAM", "NAME", "STATE"
            );
            for t in store.list_api_tokens(&scope)? {
                println!(
                    "{:<20} {:<10} {:<12} {:<20} {:<8} {}",
                    t.id,
                    t.org,
                    t.team.as_deref().unwrap_or("-"),
                    t.name,
                    if t.revoked { "revoked" } else { "active" },
                    fmt_ms(t.created_at_ms)
                );
            }
        }
        Cmd::Update {
            cmd:
                UpdateCmd::Publish {
                    version,
                    binary,
                    signature,
                },
        } => {
            let r = foureyes_collector::update::publish(&cfg.data_dir, version, binary, signature)
                .map_err(anyhow::Error::msg)?;
            println!(
                "release {} published (sha256 {}); nodes get it at their next connect",
                r.version, r.sha256
            );
        }
        Cmd::Update {
            cmd: UpdateCmd::Show,
        } => match foureyes_collector::update::current(&cfg.data_dir) {
            Some(r) => println!("{} sha256 {}", r.version, r.sha256),
            None => println!("no release published"),
        },
        Cmd::Apitoken {
            cmd: ApiTokenCmd::Revoke { id, org },
        } => {
            if !store.revoke_api_token(&Scope::Tenant(tenant(org, None)), id)? {
                bail!("no API token {id} in org {org}");
            }
            println!("API token {id} revoked");
        }
    }
    Ok(())
}

fn check_tenant(store: &dyn Store, org: &str, team: Option<&str>) -> Result<()> {
    if !store.org_exists(&sys(), org)? {
        bail!("no org {org:?}: create it with `foureyes-collector org create {org}`");
    }
    if let Some(team) = team
        && !store.team_exists(&sys(), org, team)?
    {
        bail!(
            "no team {team:?} in org {org:?}: create it with `foureyes-collector team create {org} {team}`"
        );
    }
    Ok(())
}

fn fmt_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}
