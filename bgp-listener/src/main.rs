//! `foureyes-bgp-listener`: receive-only BGP listener and BMP station.
//!
//! Enrollment works through the shared agent runtime; `watch` runs one standalone receive-only
//! session (see `foureyes_bgp_listener::watch`); `bmp` runs a standalone BMP station
//! (`foureyes_bgp_listener::bmp_station`); `replay` prints MRT files as the same events
//! (`foureyes_bgp_listener::replay`); `run` is the collector-connected listener
//! (`foureyes_bgp_listener::run`).
#![allow(clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use foureyes_bgp_listener::bmp_station::BMP_PORT;
use foureyes_bgp_listener::driver::{BGP_PORT, Connection};
use foureyes_bgp_listener::session::{MaxPrefixes, SessionConfig};
use foureyes_bgp_listener::transport::{Md5Key, Transport, TtlPolicy};
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

impl From<OutFormat> for Format {
    fn from(f: OutFormat) -> Format {
        match f {
            OutFormat::Jsonl => Format::Jsonl,
            OutFormat::Text => Format::Text,
            OutFormat::Summary => Format::Summary,
        }
    }
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
    /// Run the peers (and BMP station) of a config file, streaming events to the collector.
    /// SIGHUP reloads the file: added peers start, removed ones stop (Cease), changed ones
    /// restart, the others keep their sessions; a file with an error changes nothing (logged).
    Run {
        #[arg(long)]
        config: PathBuf,
        #[arg(
            long,
            env = "FOUREYES_STATE_DIR",
            default_value = "/var/lib/foureyes/listener"
        )]
        state_dir: PathBuf,
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
        /// BGP identifier. Default: the --listen address when it is a specific IPv4 address;
        /// otherwise (e.g. --listen 0.0.0.0, or --connect) the local IPv4 address of the TCP
        /// connection with the peer, taken on connect before our OPEN. Required for an IPv6 peer.
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
        /// Graceful restart: how long the peer's stale routes wait for its End-of-RIB once it
        /// is back before they are withdrawn (RFC 4724 §4.2 leaves it to us; FRR and Junos use
        /// 360 s).
        #[arg(long, value_name = "SECS", default_value_t = 360)]
        stale_routes_time: u64,
        /// Do not advertise ADD-PATH receive.
        #[arg(long)]
        no_add_path: bool,
        /// Do not advertise Extended Messages (RFC 8654); UPDATEs are then bounded by 4096 octets.
        #[arg(long)]
        no_extended_messages: bool,
        /// Do not advertise IPv4 unicast (the peer's IPv4 routes are then ignored).
        #[arg(long)]
        no_ipv4: bool,
        /// Do not advertise IPv6 unicast (the peer's IPv6 routes are then ignored).
        #[arg(long)]
        no_ipv6: bool,
        /// Do not advertise 4-octet AS (RFC 6793): the peer then sends 2-octet AS_PATHs with
        /// AS4_PATH, merged back on receipt. Needs --local-as <= 65535.
        #[arg(long)]
        no_four_octet_as: bool,
        /// Warn (a `prefix_limit` event) when the peer's routes in one family exceed N; again
        /// only after the count fell below 90 % of N.
        #[arg(long, value_name = "N")]
        max_prefixes: Option<u32>,
        /// With --max-prefixes: also tear the session down (Cease, subcode 1, RFC 4486).
        #[arg(long, requires = "max_prefixes")]
        max_prefixes_teardown: bool,
        /// After a --max-prefixes-teardown, refuse the peer (Cease, subcode 5) and do not dial it
        /// for this many seconds (0: let it straight back).
        #[arg(
            long,
            value_name = "SECS",
            default_value_t = 300,
            requires = "max_prefixes_teardown"
        )]
        max_prefixes_idle_hold: u64,
        /// TCP MD5 signature (RFC 2385) with the password in this file (one line). The password
        /// is never given on the command line, where `ps` would show it.
        #[arg(long, value_name = "FILE")]
        md5_password_file: Option<PathBuf>,
        /// GTSM (RFC 5082): send with TTL 255 and drop segments from more than HOPS hops away
        /// (1 for a directly connected peer).
        #[arg(long, value_name = "HOPS", conflicts_with = "multihop")]
        ttl_security: Option<u8>,
        /// eBGP multihop: send with this TTL (the OS default TTL is used otherwise).
        #[arg(long, value_name = "TTL")]
        multihop: Option<u8>,
    },
    /// BMP station: accept BMP feeds from routers and print their events (no collector needed).
    /// Never sends a byte to a router.
    Bmp {
        /// Address and port to listen on (ADDR:PORT; port 11019 if only ADDR is given).
        #[arg(long)]
        listen: String,
        /// A router allowed to connect (repeat for more); connections from others are closed.
        #[arg(long = "allow", required = true)]
        allow: Vec<IpAddr>,
        #[arg(long, value_enum, default_value_t = OutFormat::Jsonl)]
        format: OutFormat,
    },
    /// Replay MRT files (RFC 6396; gzip and bzip2 found by their magic bytes) as the events
    /// `watch` prints. Exits non-zero if any file was unreadable, truncated or corrupt, after
    /// printing every good event.
    Replay {
        /// An MRT file; give several in order (e.g. a RIB dump, then update files).
        #[arg(long = "mrt", required = true)]
        mrt: Vec<PathBuf>,
        /// `summary` prints only totals: records per type, and events per peer and family.
        #[arg(long, value_enum, default_value_t = OutFormat::Jsonl)]
        format: OutFormat,
    },
}

fn parse_listen(s: &str) -> Result<SocketAddr> {
    parse_listen_port(s, BGP_PORT)
}

/// `ADDR` or `ADDR:PORT`, with `default_port` when none is given.
fn parse_listen_port(s: &str, default_port: u16) -> Result<SocketAddr> {
    let a = foureyes_bgp_listener::config::parse_listen(s)
        .map_err(|e| anyhow::anyhow!("--listen {e}"))?;
    if s.parse::<SocketAddr>().is_ok() {
        Ok(a)
    } else {
        Ok(SocketAddr::new(a.ip(), default_port))
    }
}

/// Ctrl-C or SIGTERM (what service managers send).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
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
            stale_routes_time,
            no_add_path,
            no_extended_messages,
            no_ipv4,
            no_ipv6,
            no_four_octet_as,
            max_prefixes,
            max_prefixes_teardown,
            max_prefixes_idle_hold,
            md5_password_file,
            ttl_security,
            multihop,
        } => {
            let transport = Transport {
                md5: md5_password_file
                    .as_deref()
                    .map(Md5Key::from_file)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                ttl: TtlPolicy::from_settings(ttl_security, multihop)
                    .map_err(anyhow::Error::msg)?,
            };
            if hold_time == 1 || hold_time == 2 {
                bail!("--hold-time must be 0 or at least 3");
            }
            let listen = listen.as_deref().map(parse_listen).transpose()?;
            let router_id = match (router_id, listen.map(|l| l.ip())) {
                (Some(id), _) => id,
                (None, Some(IpAddr::V4(ip))) if !ip.is_unspecified() => ip,
                // Unspecified: the driver takes the connection's local IPv4 address.
                (None, _) if peer.to_canonical().is_ipv4() => Ipv4Addr::UNSPECIFIED,
                _ => bail!(
                    "--router-id is required for an IPv6 peer unless --listen names an IPv4 address"
                ),
            };
            // Bounded so that no deadline computed from it can overflow a clock.
            const MAX_QUIET: f64 = 1e6;
            let quiet_period = Duration::try_from_secs_f64(quiet_period.max(0.0))
                .ok()
                .filter(|_| quiet_period <= MAX_QUIET)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--quiet-period must be a number of seconds from 0 to {MAX_QUIET}, got {quiet_period}"
                    )
                })?;
            let mut cfg = SessionConfig::new(local_as, remote_as, router_id, peer);
            cfg.hold_time = hold_time;
            cfg.graceful_restart = !no_graceful_restart;
            cfg.stale_routes_time = std::time::Duration::from_secs(stale_routes_time);
            cfg.add_path = !no_add_path;
            cfg.extended_message = !no_extended_messages;
            cfg.families = foureyes_bgp_listener::session::families(!no_ipv4, !no_ipv6);
            cfg.four_octet_as = !no_four_octet_as;
            cfg.check().map_err(anyhow::Error::msg)?;
            cfg.max_prefixes = max_prefixes.map(|limit| MaxPrefixes {
                limit,
                teardown: max_prefixes_teardown,
                idle_hold: std::time::Duration::from_secs(max_prefixes_idle_hold),
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
                format: format.into(),
                exit_on_eor,
                quiet_period,
                transport,
            };
            let mut out = std::io::stdout().lock();
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            foureyes_bgp_listener::watch::watch(opts, conn, &mut out, shutdown).await?;
            Ok(())
        }
        Cmd::Replay { mrt, format } => {
            let opts = foureyes_bgp_listener::replay::ReplayOptions {
                files: mrt,
                format: format.into(),
            };
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let report = foureyes_bgp_listener::replay::replay(
                &opts,
                &mut out,
                // Not locked for the whole run: the decoding thread logs to stderr too.
                &mut std::io::stderr(),
            );
            let report = match report {
                Ok(r) => r,
                // `replay ... | head` is normal use: stop quietly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e).context("writing output"),
            };
            if !report.errors.is_empty() {
                bail!(
                    "{} error(s) in the MRT input (each reported above)",
                    report.errors.len()
                );
            }
            Ok(())
        }
        Cmd::Bmp {
            listen,
            allow,
            format,
        } => {
            let addr = parse_listen_port(&listen, BMP_PORT)?;
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(%addr, routers = ?allow, "BMP station listening");
            let mut out = std::io::stdout().lock();
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            foureyes_bgp_listener::bmp_station::watch(l, allow, format.into(), &mut out, shutdown)
                .await?;
            Ok(())
        }
        Cmd::Run { config, state_dir } => {
            let cfg = foureyes_bgp_listener::config::ListenerConfig::load(&config)?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            let s = shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                s.cancel();
            });
            // SIGHUP reloads listener.toml (peers added, removed or changed; the rest stay up).
            let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("installing the SIGHUP handler")?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // A reload already pending covers this one too.
                    let _ = reload_tx.try_send(());
                }
            });
            foureyes_bgp_listener::run::run(
                cfg,
                &state_dir,
                foureyes_bgp_listener::run::RunOptions {
                    hostname: foureyes_agent::hostname(),
                    config_path: config.display().to_string(),
                    reload: Some(reload_rx),
                },
                shutdown,
            )
            .await?;
            Ok(())
        }
    }
}
