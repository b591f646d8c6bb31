//! `foureyes-node`: an outbound-only probe agent. Flags in, library calls out.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

mod probe_cmd;

#[derive(Parser)]
#[command(
    name = "foureyes-node",
    version,
    about = "FourEyes probe node (outbound-only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enroll with a collector using a single-use token.
    Enroll {
        /// Collector agent port, HOST:PORT.
        #[arg(long)]
        collector: String,
        /// Enrollment token (or set FOUREYES_ENROLL_TOKEN, which keeps it out of `ps`).
        #[arg(long, env = "FOUREYES_ENROLL_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// File holding the enrollment token.
        #[arg(long, conflicts_with = "token")]
        token_file: Option<PathBuf>,
        #[arg(long, env = "FOUREYES_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Run assigned tests and stream results to the collector.
    Run {
        #[arg(long, env = "FOUREYES_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Results kept on disk while the collector is unreachable; the oldest are dropped past it
        /// (and reported as a gap).
        #[arg(long, default_value_t = 1_000_000)]
        spool_max_records: u64,
        /// Stop when standard input closes (used by `foureyes-collector serve --dev`).
        #[arg(long, hide = true)]
        exit_on_stdin_eof: bool,
    },
    /// Run one probe locally and print its result (diagnostics; no collector involved).
    Probe(probe_cmd::ProbeArgs),
}

fn default_state_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if root {
        PathBuf::from("/var/lib/foureyes/node")
    } else {
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".local/state/foureyes/node"))
            .unwrap_or_else(|| PathBuf::from("foureyes-node-state"))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,h2=warn,hyper=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Enroll {
            collector,
            token,
            token_file,
            state_dir,
        } => {
            let token = match (token, token_file) {
                (Some(t), _) => t,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("token file {}", f.display()))?,
                (None, None) => {
                    anyhow::bail!("give --token, --token-file or FOUREYES_ENROLL_TOKEN")
                }
            };
            let dir = state_dir.unwrap_or_else(default_state_dir);
            let state = foureyes_agent::state::StateDir::open(&dir, true)?;
            let e = foureyes_agent::enroll::enroll(
                &collector,
                &token,
                &state,
                &foureyes_agent::hostname(),
            )
            .await?;
            println!(
                "enrolled as {} in org {}{}; state in {}",
                e.agent_id,
                e.org,
                e.team.map(|t| format!(" team {t}")).unwrap_or_default(),
                dir.display()
            );
            Ok(())
        }
        Cmd::Run {
            state_dir,
            spool_max_records,
            exit_on_stdin_eof,
        } => {
            let dir = state_dir.unwrap_or_else(default_state_dir);
            let shutdown = CancellationToken::new();
            let sd = shutdown.clone();
            tokio::spawn(async move {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(t) => t,
                        Err(_) => return,
                    };
                let stdin_eof = async {
                    if exit_on_stdin_eof {
                        let mut buf = [0u8; 64];
                        let mut stdin = tokio::io::stdin();
                        use tokio::io::AsyncReadExt;
                        while let Ok(n) = stdin.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    } else {
                        std::future::pending::<()>().await
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    _ = stdin_eof => {}
                }
                sd.cancel();
            });
            let staged = foureyes_node::run(
                &dir,
                foureyes_node::NodeOptions {
                    spool_max_records,
                    hostname: foureyes_agent::hostname(),
                },
                shutdown,
            )
            .await?;
            if let Some(staged) = staged {
                // Returns only if the exec failed.
                return Err(foureyes_agent::update::exec_staged(&staged).into());
            }
            Ok(())
        }
        Cmd::Probe(args) => probe_cmd::run(args).await,
    }
}
