//! Synthetic agents built from `foureyes-agent` itself: the real enrollment client, sealed state
//! dir, disk spool (numbering and ed25519 signing of each batch) and the mTLS gRPC link with its
//! window and acks. Only the probes are missing: records are handed to the spooler as a node's
//! probes (or a listener's sessions) would hand them.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Result, bail};
use foureyes_agent::{
    enroll,
    link::{self, LinkOptions, Shared},
    spool::Spool,
    state::StateDir,
};
use foureyes_proto::v1::record;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Records a synthetic agent's spooler takes before its producer waits.
const QUEUE: usize = 20_000;

pub struct Agent {
    pub id: String,
    pub connected: watch::Receiver<bool>,
    pub shared: Shared,
}

/// Enrolls an agent with `token` into `dir` through the real enrollment RPC.
pub async fn enroll(collector: &str, token: &str, dir: &Path) -> Result<String> {
    let state = StateDir::open(dir, true)?;
    let e = enroll::enroll(collector, token, &state, "loadgen").await?;
    Ok(e.agent_id)
}

/// Runs an enrolled agent's link and spooler until `shutdown`; returns it with the sender its
/// records go into. Batches hold at most `max` records, and the first waits at most `delay`.
pub fn run<T: Send + 'static>(
    dir: &Path,
    kind: fn(T) -> record::Kind,
    max: usize,
    delay: Duration,
    shutdown: &CancellationToken,
) -> Result<(Agent, mpsc::Sender<T>)> {
    let state = Arc::new(StateDir::open(dir, false)?);
    let identity = state.identity()?;
    let creds = state.credentials()?;
    let spool = Spool::open(&state.spool_path(), 5_000_000)?;
    let (assign_tx, _) = watch::channel(Default::default());
    let shared = Shared::new(creds.signing_key()?, spool, assign_tx, None);
    let connected = shared.connected.subscribe();
    tokio::spawn(link::run(
        state,
        shared.clone(),
        LinkOptions {
            hostname: "loadgen".into(),
            ..Default::default()
        },
        shutdown.clone(),
    ));
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(link::spool_from(shared.clone(), rx, kind, max, delay));
    Ok((
        Agent {
            id: identity.agent_id,
            connected,
            shared,
        },
        tx,
    ))
}

/// Waits until every agent's link is up.
pub async fn all_connected(agents: &mut [Agent], within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    for a in agents {
        let wait = a.connected.wait_for(|c| *c);
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(_)) => {}
            _ => bail!("agent {} did not connect within {within:?}", a.id),
        }
    }
    Ok(())
}

/// Records spooled but not yet acknowledged by the collector, over all agents.
pub fn backlog(agents: &[Agent]) -> u64 {
    agents
        .iter()
        .map(|a| link::lock(&a.shared.spool).records())
        .sum()
}
