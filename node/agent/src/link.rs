//! The agent's side of the link: dial out, say hello, stream spooled batches, apply assignments,
//! renew the certificate at half-life, and reconnect with jittered exponential backoff.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use ed25519_dalek::SigningKey;
use foureyes_proto::v1::{
    AgentMessage, AssignmentSet, Hello, RenewRequest, agent_link_client::AgentLinkClient,
    agent_message, collector_message,
};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::{
    AgentError, channel, enroll,
    spool::Spool,
    state::{Credentials, StateDir},
    tls,
};

/// Batches sent but not yet acknowledged, at most.
const WINDOW: usize = 16;

/// Link state other tasks read: the key to sign new batches with, and the assignments.
#[derive(Clone)]
pub struct Shared {
    pub signing_key: Arc<Mutex<SigningKey>>,
    pub assignments: watch::Sender<AssignmentSet>,
    pub spool: Arc<Mutex<Spool>>,
    /// Poked when the spool has something new, so it goes out without waiting for a tick.
    pub spool_notify: Arc<tokio::sync::Notify>,
    /// Whether the link is up. Set with `send_replace`: a watch sender whose receivers are all
    /// gone stores nothing with `send`, and a reader subscribing later would see a stale value.
    pub connected: watch::Sender<bool>,
    /// A verified release waiting to replace this binary once the agent has drained its work.
    pub staged_update: Arc<Mutex<Option<std::path::PathBuf>>>,
    /// Where probe bursts go (nodes); `None` for agents that run no tests (listeners ignore them).
    pub bursts: Option<mpsc::Sender<foureyes_proto::v1::ProbeBurst>>,
}

impl Shared {
    /// The state every agent (node, listener, load generator) builds the same way; link down,
    /// nothing staged.
    pub fn new(
        signing_key: SigningKey,
        spool: Spool,
        assignments: watch::Sender<AssignmentSet>,
        bursts: Option<mpsc::Sender<foureyes_proto::v1::ProbeBurst>>,
    ) -> Self {
        Shared {
            signing_key: Arc::new(Mutex::new(signing_key)),
            assignments,
            spool: Arc::new(Mutex::new(spool)),
            spool_notify: Arc::new(tokio::sync::Notify::new()),
            connected: watch::channel(false).0,
            staged_update: Arc::new(Mutex::new(None)),
            bursts,
        }
    }
}

pub struct LinkOptions {
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub hostname: String,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            hostname: String::new(),
        }
    }
}

/// Moves what an agent produces (results, route events) from `rx` into the signed disk spool, in
/// batches of at most `max` records; the first record of a batch waits at most `delay` for
/// company. Runs until `rx` closes, then writes what is left. Shared by node and listener so both
/// number, sign and spool the same way.
pub async fn spool_from<T>(
    shared: Shared,
    mut rx: mpsc::Receiver<T>,
    kind: impl Fn(T) -> foureyes_proto::v1::record::Kind,
    max: usize,
    delay: Duration,
) {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.push(kind(first));
        let deadline = tokio::time::Instant::now() + delay;
        while buf.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => buf.push(kind(r)),
                _ => break,
            }
        }
        spool_batch(&shared, &mut buf);
    }
    spool_batch(&shared, &mut buf);
}

fn spool_batch(shared: &Shared, buf: &mut Vec<foureyes_proto::v1::record::Kind>) {
    if buf.is_empty() {
        return;
    }
    let key = lock(&shared.signing_key).clone();
    let items = std::mem::take(buf);
    let n = items.len();
    if let Err(e) = lock(&shared.spool).append(items, &key) {
        // A spool that cannot write is a disk problem: say so loudly. The sequence numbers were
        // not used, so the collector sees no hole; the records are lost.
        tracing::error!(error = %e, lost = n, "cannot write records to the spool");
    }
    shared.spool_notify.notify_one();
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the spool lock leaves it usable: SQLite keeps it consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs until `shutdown`. Errors inside one session only cause a reconnect.
pub async fn run(
    state: Arc<StateDir>,
    shared: Shared,
    opts: LinkOptions,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let mut backoff = opts.backoff_min;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let started = Instant::now();
        let outcome = session(&state, &shared, &opts, &shutdown).await;
        shared.connected.send_replace(false);
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = opts.backoff_min;
                }
                // Full jitter keeps a fleet from reconnecting in lockstep after a collector restart.
                let wait = rand::thread_rng().gen_range(backoff / 2..=backoff);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "link down");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(opts.backoff_max);
            }
        }
    }
}

fn half_life_reached(creds: &Credentials) -> bool {
    let Ok(f) = creds.facts() else { return true };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    now >= f.not_before_unix + (f.not_after_unix - f.not_before_unix) / 2
}

async fn session(
    state: &StateDir,
    shared: &Shared,
    opts: &LinkOptions,
    shutdown: &CancellationToken,
) -> Result<(), AgentError> {
    let identity = state.identity()?;
    let ca = state.ca_der()?;
    let creds = state.credentials()?;
    let cfg = tls::link_config(&ca, &creds.cert_der, &creds.key_pkcs8)
        .map_err(|e| AgentError::Connect(e.to_string()))?;
    let channel = channel::connect(&identity.collector, cfg).await?;
    let mut client = AgentLinkClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);

    let (tx, rx) = mpsc::channel::<AgentMessage>(WINDOW * 2);
    let acked_before = lock(&shared.spool).acked_upto()?;
    let assignment_version = shared.assignments.borrow().version;
    tx.send(AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            agent_id: identity.agent_id.clone(),
            last_acked_seq: acked_before,
            clock: Some(foureyes_proto::timestamp(SystemTime::now())),
            version: crate::VERSION.to_string(),
            hostname: opts.hostname.clone(),
            assignment_version,
        })),
    })
    .await
    .map_err(|_| AgentError::Connect("stream closed".into()))?;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| AgentError::Refused(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();

    let mut sent_upto: Option<u64> = None; // None until Welcome says where the collector stands
    let mut in_flight = 0usize;
    let mut pending_renewal: Option<(Zeroizing<Vec<u8>>, Vec<u8>)> = None;
    let mut creds = creds;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        // Send what the window allows.
        if let Some(upto) = sent_upto
            && in_flight < WINDOW
        {
            let batches = lock(&shared.spool).pending_after(upto, WINDOW - in_flight)?;
            for b in batches {
                sent_upto = Some(b.last_seq);
                in_flight += 1;
                tx.send(AgentMessage {
                    msg: Some(agent_message::Msg::Batch(b.batch)),
                })
                .await
                .map_err(|_| AgentError::Connect("stream closed".into()))?;
            }
        }
        if pending_renewal.is_none() && sent_upto.is_some() && half_life_reached(&creds) {
            let enroll::NewKey {
                pkcs8: key,
                csr_der: csr,
                public_key,
            } = enroll::new_key_and_csr()?;
            tx.send(AgentMessage {
                msg: Some(agent_message::Msg::Renew(RenewRequest { csr_der: csr })),
            })
            .await
            .map_err(|_| AgentError::Connect("stream closed".into()))?;
            tracing::info!("certificate at half-life: renewal requested");
            pending_renewal = Some((key, public_key));
        }

        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
            _ = shared.spool_notify.notified() => {}
            msg = inbound.next() => {
                let msg = match msg {
                    None => return Err(AgentError::Connect("collector closed the stream".into())),
                    Some(Err(s)) => return Err(AgentError::Refused(format!("{:?}: {}", s.code(), s.message()))),
                    Some(Ok(m)) => m,
                };
                match msg.msg {
                    Some(collector_message::Msg::Welcome(w)) => {
                        if w.agent_id != identity.agent_id {
                            return Err(AgentError::Refused("collector addressed another agent".into()));
                        }
                        lock(&shared.spool).ack(w.acked_seq)?;
                        sent_upto = Some(w.acked_seq);
                        in_flight = 0;
                        shared.connected.send_replace(true);
                        tracing::info!(acked = w.acked_seq, "link up");
                    }
                    Some(collector_message::Msg::Assignments(set)) => {
                        state.save_assignments(&set)?;
                        tracing::info!(version = set.version, tests = set.tests.len(), "assignment set received");
                        let _ = shared.assignments.send(set);
                    }
                    Some(collector_message::Msg::Delta(d)) => {
                        let mut set = shared.assignments.borrow().clone();
                        set.tests.retain(|t| !d.removed.contains(&t.id) && !d.upserted.iter().any(|u| u.id == t.id));
                        set.tests.extend(d.upserted);
                        set.version = d.version;
                        state.save_assignments(&set)?;
                        tracing::info!(version = set.version, tests = set.tests.len(), "assignment delta applied");
                        let _ = shared.assignments.send(set);
                    }
                    Some(collector_message::Msg::Burst(b)) => {
                        // Bounded: a collector asking faster than the node runs them loses bursts,
                        // never memory.
                        if let Some(tx) = &shared.bursts
                            && tx.try_send(b).is_err()
                        {
                            tracing::warn!("probe burst dropped: the node is busy with earlier ones");
                        }
                    }
                    Some(collector_message::Msg::Ack(a)) => {
                        lock(&shared.spool).ack(a.seq)?;
                        in_flight = in_flight.saturating_sub(1);
                    }
                    Some(collector_message::Msg::Renewed(r)) => {
                        let Some((key, public_key)) = pending_renewal.take() else {
                            tracing::warn!("unrequested certificate ignored");
                            continue;
                        };
                        let id = tls::validate_agent_certificate(&ca, &r.certificate_der, &public_key)
                            .map_err(AgentError::Refused)?;
                        if id.id != identity.agent_id {
                            return Err(AgentError::Refused("renewed certificate names another agent".into()));
                        }
                        let new = Credentials { key_pkcs8: key, cert_der: r.certificate_der };
                        let signing = new.signing_key()?;
                        state.save_credentials(&new)?;
                        *lock(&shared.signing_key) = signing;
                        creds = new;
                        tracing::info!("certificate renewed with a new key");
                    }
                    Some(collector_message::Msg::Update(offer)) => {
                        if offer.version == crate::VERSION {
                            continue;
                        }
                        tracing::info!(version = %offer.version, url = %offer.url, "update offered");
                        let exe = std::env::current_exe()?;
                        match crate::update::stage(&offer, &ca, &exe).await {
                            Ok(staged) => {
                                tracing::warn!(version = %offer.version, "update verified; restarting into it");
                                *lock(&shared.staged_update) = Some(staged);
                                shutdown.cancel();
                                return Ok(());
                            }
                            Err(e) => tracing::error!(error = %e, version = %offer.version, "update refused; keeping the running version"),
                        }
                    }
                    None => {}
                }
            }
        }
    }
}
