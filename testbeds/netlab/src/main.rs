//! `foureyes-netlab`: deploy, use and destroy the `testbeds/` containerlab topologies with network
//! namespaces (no Docker engine needed). Needs root.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use foureyes_netlab::{Lab, Options};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Namespace names are PREFIX<lab>-<node>, like containerlab's container names.
    #[arg(long, default_value = "clab-", global = true)]
    prefix: String,
    /// Pid files and node logs.
    #[arg(long, default_value = "/run/foureyes-netlab", global = true)]
    state_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Deploy a topology and leave it running.
    Deploy {
        topology: PathBuf,
        /// Rewrite bind sources starting with FROM to start with TO (e.g. a target dir other
        /// than the clone's `target/`): FROM=TO, repeatable.
        #[arg(long = "bind-source", value_name = "FROM=TO")]
        bind_source: Vec<String>,
    },
    /// Kill every process of a deployed topology and delete its namespaces.
    Destroy { topology: PathBuf },
    /// Run a command in a node (like `docker exec`).
    Exec {
        topology: PathBuf,
        node: String,
        #[arg(trailing_var_arg = true, required = true)]
        argv: Vec<String>,
    },
    /// Print what a node's command printed.
    Logs { topology: PathBuf, node: String },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut opts = Options {
        prefix: cli.prefix,
        state_dir: cli.state_dir,
        ..Options::default()
    };
    match cli.cmd {
        Cmd::Deploy {
            topology,
            bind_source,
        } => {
            for m in bind_source {
                let (f, t) = m
                    .split_once('=')
                    .with_context(|| format!("--bind-source {m:?}: expected FROM=TO"))?;
                opts.bind_sources.push((abs(f)?, abs(t)?));
            }
            let lab = Lab::deploy(&topology, &opts)?;
            eprintln!("deployed {}", lab.name);
            lab.detach();
        }
        Cmd::Destroy { topology } => {
            for ns in foureyes_netlab::destroy(&topology, &opts)? {
                eprintln!("removed {ns}");
            }
        }
        Cmd::Exec {
            topology,
            node,
            argv,
        } => {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let err = foureyes_netlab::exec_command(&topology, &opts, &node, &argv)?.exec();
            return Err(err).context("running nsenter");
        }
        Cmd::Logs { topology, node } => {
            let topo = foureyes_netlab::topology::Topology::load(&topology)?;
            let ns = foureyes_netlab::ns_name(&opts, &topo.name, &node);
            let f = foureyes_netlab::log_file(&opts.state_dir, &ns);
            let text = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
            std::io::Write::write_all(&mut std::io::stdout(), &text)?;
        }
    }
    Ok(())
}

fn abs(p: &str) -> Result<PathBuf> {
    Ok(std::path::absolute(p)?)
}
