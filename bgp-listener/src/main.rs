//! `foureyes-bgp-listener`: receive-only BGP listener and BMP station.
//!
//! Enrollment works today through the shared agent runtime. Sessions, BMP, `watch` and `replay`
//! arrive with the listener issue; until then those commands say so and exit non-zero.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

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
    /// Standalone session printing route events (not built yet).
    Watch {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Replay MRT files as route events (not built yet).
    Replay {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let e = foureyes_agent::enroll::enroll(&collector, &token, &state, host.trim()).await?;
            println!(
                "enrolled as {} in org {}; state in {}",
                e.agent_id,
                e.org,
                state_dir.display()
            );
            Ok(())
        }
        Cmd::Run { .. } | Cmd::Watch { .. } | Cmd::Replay { .. } => {
            bail!(
                "BGP sessions, BMP, watch and replay are not built yet (see the listener issue); only `enroll` works in this version"
            )
        }
    }
}
