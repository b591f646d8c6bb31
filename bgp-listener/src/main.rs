//! `foureyes-bgp-listener`: receive-only BGP listener and BMP station.
//!
//! Enrollment works through the shared agent runtime; `watch` runs one standalone receive-only
//! session (see `foureyes_bgp_listener::watch`). `run` (collector-connected) and `replay` (MRT)
//! arrive with the rest of the listener issue and exit non-zero until then.
#![allow(clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use foureyes_bgp_listener::driver::{BGP_PORT, Connection};
use foureyes_bgp_listener::session::{MaxPrefixes, SessionConfig};
use foureyes_bgp_listener::watch::{Format, WatchOptions};

#[derive(Parser)]
#[command(
    name = "foureyes-bgp-listener",
    version,
    about = "FourEyes receive-only BGP listener"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutFormat {
    Jsonl,
    Text,
    Summary,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enroll with a collector using a single-use listener token.
    Enroll {
        #[arg(long)]
        collector: String,
        #[arg(long, env = "FOUREYES_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(
            long,
            env = "FOUREYES_STATE_DIR",
            default_value = "/var/lib/foureyes/listener"
        )]
        state_dir: PathBuf,
    },
    /// Run the peers and BMP station of a config file (not built yet).
    Run {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// One standalone receive-only BGP session printing route events; no collector needed.
    Watch {
        /// Local AS number.
        #[arg(long)]
        local_as: u32,
        /// The peer's address; only connections from it are accepted.
        #[arg(long)]
        peer: IpAddr,
        /// The peer's AS number.
        #[arg(long)]
        remote_as: u32,
        /// Accept the peer's connection on this address (ADDR or ADDR:PORT, port 179 by default).
        /// Only this address is bound.
        #[arg(long, conflicts_with = "connect")]
        listen: Option<String>,
        /// Dial the peer on port 179 (or --peer-port) instead of listening.
        #[arg(long)]
        connect: bool,
        /// Port to dial with --connect.
        #[arg(long, default_value_t = BGP_PORT)]
        peer_port: u16,
        /// BGP identifier; defaults to the --listen address when it is a specific IPv4 address, and is
        /// required otherwise.
        #[arg(long)]
        router_id: Option<Ipv4Addr>,
        /// Proposed hold time in seconds (0 or 3..=65535).
        #[arg(long, default_value_t = 90)]
        hold_time: u16,
        #[arg(long, value_enum, default_value_t = OutFormat::Jsonl)]
        format: OutFormat,
        /// Exit once the initial transfer is complete (End-of-RIB for every negotiated family, or
        /// the quiet period when no End-of-RIB is expected); the last line gives prefix counts and
        /// seconds from Established.
        #[arg(long)]
        exit_on_eor: bool,
        /// Quiet period (seconds without UPDATE) that ends the transfer when the peer sends no
        /// End-of-RIB.
        #[arg(long, default_value_t = 2.0)]
        quiet_period: f64,
        /// Do not advertise graceful restart (then the peer may send no End-of-RIB).
        #[arg(long)]
        no_graceful_restart: bool,
        /// Do not advertise ADD-PATH receive.
        #[arg(long)]
        no_add_path: bool,
        /// Warn (a `prefix_limit` event) when the peer's routes in one family exceed N; again
        /// only after the count fell below 90 % of N.
        #[arg(long, value_name = "N")]
        max_prefixes: Option<u32>,
        /// With --max-prefixes: also tear the session down (Cease, subcode 1, RFC 4486).
        #[arg(long, requires = "max_prefixes")]
        max_prefixes_teardown: bool,
    },
    /// Replay MRT files as route events (not built yet).
    Replay {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn parse_listen(s: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .with_context(|| format!("--listen {s}: not an address or address:port"))?;
    Ok(SocketAddr::new(ip, BGP_PORT))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().cmd {
        Cmd::Enroll {
            collector,
            token,
            state_dir,
        } => {
            let state = foureyes_agent::state::StateDir::open(&state_dir, true)?;
            let e = foureyes_agent::enroll::enroll(
                &collector,
                &token,
                &state,
                &foureyes_agent::hostname(),
            )
            .await?;
            println!(
                "enrolled as {} in org {}; state in {}",
                e.agent_id,
                e.org,
                state_dir.display()
            );
            Ok(())
        }
        Cmd::Watch {
            local_as,
            peer,
            remote_as,
            listen,
            connect,
            peer_port,
            router_id,
            hold_time,
            format,
            exit_on_eor,
            quiet_period,
            no_graceful_restart,
            no_add_path,
            max_prefixes,
            max_prefixes_teardown,
        } => {
            if hold_time == 1 || hold_time == 2 {
                bail!("--hold-time must be 0 or at least 3");
            }
            let listen = listen.as_deref().map(parse_listen).transpose()?;
            let router_id = match (router_id, listen.map(|l| l.ip())) {
                (Some(id), _) => id,
                (None, Some(IpAddr::V4(ip))) if !ip.is_unspecified() => ip,
                _ => bail!("--router-id is required unless --listen names an IPv4 address"),
            };
            let mut cfg = SessionConfig::new(local_as, remote_as, router_id, peer);
            cfg.hold_time = hold_time;
            cfg.graceful_restart = !no_graceful_restart;
            cfg.add_path = !no_add_path;
            cfg.max_prefixes = max_prefixes.map(|limit| MaxPrefixes {
                limit,
                teardown: max_prefixes_teardown,
            });
            let conn = match (listen, connect) {
                (Some(addr), false) => {
                    let l = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("binding {addr}"))?;
                    tracing::info!(%addr, "listening for the peer");
                    Connection::Passive(l)
                }
                (None, true) => Connection::Active {
                    remote: SocketAddr::new(peer, peer_port),
                    retry: Duration::from_secs(5),
                },
                _ => bail!("give exactly one of --listen ADDR or --connect"),
            };
            let opts = WatchOptions {
                session: cfg,
                format: match format {
                    OutFormat::Jsonl => Format::Jsonl,
                    OutFormat::Text => Format::Text,
                    OutFormat::Summary => Format::Summary,
                },
                exit_on_eor,
                quiet_period: Duration::from_secs_f64(quiet_period.max(0.0)),
            };
            let mut out = std::io::stdout().lock();
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            foureyes_bgp_listener::watch::watch(opts, conn, &mut out, shutdown).await?;
            Ok(())
        }
        Cmd::Run { .. } | Cmd::Replay { .. } => {
            bail!(
                "`run` and `replay` are not built yet (see the listener issue); `enroll` and `watch` work in this version"
            )
        }
    }
}
