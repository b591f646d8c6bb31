//! The agent port: enrollment (token-authenticated) and the agent stream (certificate-authenticated).
//!
//! Authentication is decided per RPC: only `Enroll` runs without a client certificate, and on the
//! stream the agent's tenant and id come from its certificate alone. The stream registry lets a
//! revoke cut a live stream at once and lets test changes reach connected agents as deltas.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use foureyes_identity::{AgentIdentity, AgentKind, EnrollmentToken};
use foureyes_proto::v1::{
    self as pb, AgentMessage, AssignmentDelta, AssignmentSet, CollectorMessage, EnrollRequest,
    EnrollResponse, RecordBatch, agent_link_server::AgentLink, agent_message, collector_message,
    enrollment_server::Enrollment, record,
};
use foureyes_store::{NewAgent, RedeemError, Scope, SystemScope, ingest::IngestBatch};
use prost::Message;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::{server::now_ms, state::Collector};

/// Connected agents. A newer stream for the same agent replaces the older one.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<HashMap<String, Entry>>,
    next_conn: std::sync::atomic::AtomicU64,
    /// Tells the correlator which orgs' tests changed (see `correlator/targets.rs`).
    pub targets: Arc<crate::correlator::targets::TargetChanges>,
}

struct Entry {
    conn: u64,
    org: String,
    kind: AgentKind,
    cancel: CancellationToken,
    tests_changed: Arc<tokio::sync::Notify>,
    bursts: mpsc::Sender<pb::ProbeBurst>,
}

/// Probe bursts waiting to go down one stream; past this they are dropped (the next one will do).
const BURST_QUEUE: usize = 8;

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, agent_id: &str, org: &str, kind: AgentKind) -> (u64, Signals) {
        let conn = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let notify = Arc::new(tokio::sync::Notify::new());
        let (burst_tx, burst_rx) = mpsc::channel(BURST_QUEUE);
        let old = self.lock().insert(
            agent_id.to_string(),
            Entry {
                conn,
                org: org.to_string(),
                kind,
                cancel: cancel.clone(),
                tests_changed: notify.clone(),
                bursts: burst_tx,
            },
        );
        if let Some(old) = old {
            old.cancel.cancel();
        }
        (
            conn,
            Signals {
                cancel,
                tests_changed: notify,
                bursts: burst_rx,
            },
        )
    }

    /// Asks every connected node of `org` to run a burst of these tests now. Each node runs only
    /// the ones it is assigned. Returns how many streams it was queued on.
    pub fn burst(&self, org: &str, burst: &pb::ProbeBurst) -> usize {
        self.lock()
            .values()
            .filter(|e| e.org == org && e.kind == AgentKind::Node)
            .filter(|e| e.bursts.try_send(burst.clone()).is_ok())
            .count()
    }

    fn unregister(&self, agent_id: &str, conn: u64) {
        let mut g = self.lock();
        if g.get(agent_id).is_some_and(|e| e.conn == conn) {
            g.remove(agent_id);
        }
    }

    /// Cuts the agent's live stream, if any.
    pub fn cut(&self, agent_id: &str) {
        if let Some(e) = self.lock().remove(agent_id) {
            e.cancel.cancel();
        }
    }

    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.lock().contains_key(agent_id)
    }

    pub fn connected_count(&self) -> usize {
        self.lock().len()
    }

    /// Tells every connected agent to re-check its assignments and the published release.
    pub fn poke_all(&self) {
        for e in self.lock().values() {
            e.tests_changed.notify_one();
        }
    }

    /// Tells every connected agent of `org` to recompute its assignments.
    pub fn tests_changed(&self, org: &str) {
        self.targets.org_changed(org);
        for e in self.lock().values().filter(|e| e.org == org) {
            e.tests_changed.notify_one();
        }
    }
}

fn kind_to_pb(k: AgentKind) -> pb::AgentKind {
    match k {
        AgentKind::Node => pb::AgentKind::Node,
        AgentKind::Listener => pb::AgentKind::Listener,
    }
}

pub fn kind_from_pb(k: i32) -> AgentKind {
    if k == pb::AgentKind::Listener as i32 {
        AgentKind::Listener
    } else {
        AgentKind::Node
    }
}

#[derive(Clone)]
pub struct EnrollmentService(pub Arc<Collector>);

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let c = &self.0;
        let peer = request.remote_addr();
        let req = request.into_inner();
        let sys = SystemScope::collector_internal();
        let token = EnrollmentToken::parse(&req.token)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if token.ca_fingerprint != c.ca.fingerprint() {
            return Err(Status::permission_denied(
                "token was minted by another collector CA",
            ));
        }
        // Refuse a key that belongs to a revoked agent before spending the token on it.
        let csr_key = csr_public_key(&req.csr_der)
            .map_err(|e| Status::invalid_argument(format!("bad CSR: {e}")))?;
        if let Some((_, true)) = c
            .store
            .key_owner(&sys, &foureyes_identity::key_id(&csr_key))
            .map_err(internal)?
        {
            tracing::warn!(?peer, "enrollment with a revoked key refused");
            return Err(Status::permission_denied(
                "this key belongs to a revoked agent",
            ));
        }
        let binding = match c
            .store
            .redeem_enrollment_token(&sys, &token.secret_hash(), now_ms())
        {
            Ok(b) => b,
            Err(RedeemError::Unknown) => {
                return Err(Status::permission_denied("unknown enrollment token"));
            }
            Err(RedeemError::AlreadyUsed) => {
                return Err(Status::permission_denied(
                    "enrollment token was already used",
                ));
            }
            Err(RedeemError::Expired) => {
                return Err(Status::permission_denied("enrollment token has expired"));
            }
            Err(e) => return Err(internal(e)),
        };
        let kind = kind_from_pb(binding.kind as i32);
        let prefix = match kind {
            AgentKind::Node => "n",
            AgentKind::Listener => "l",
        };
        let identity = AgentIdentity {
            org: binding.org.clone(),
            team: binding.team.clone(),
            kind,
            id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
        };
        let cert =
            c.ca.issue_agent(&req.csr_der, &identity, c.cfg.agent_cert_lifetime)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (_, facts) = AgentIdentity::from_certificate(&cert).map_err(internal)?;
        let hostname: String = req.hostname.chars().take(253).collect();
        let version: String = req.version.chars().take(64).collect();
        c.store
            .create_agent(
                &sys,
                NewAgent {
                    id: identity.id.clone(),
                    org: identity.org.clone(),
                    team: identity.team.clone(),
                    kind: kind_to_pb(kind),
                    hostname,
                    version,
                    created_at_ms: now_ms(),
                },
            )
            .map_err(internal)?;
        c.store
            .add_agent_key(
                &sys,
                &identity.id,
                facts.key_id,
                facts.public_key.clone(),
                facts.serial.clone(),
                facts.not_after_unix * 1000,
            )
            .map_err(internal)?;
        tracing::info!(agent = %identity.id, org = %identity.org, kind = kind.as_str(), "agent enrolled");
        Ok(Response::new(EnrollResponse {
            agent_id: identity.id,
            certificate_der: cert,
            ca_certificate_der: c.ca.cert_der().to_vec(),
            org: identity.org,
            team: identity.team.unwrap_or_default(),
        }))
    }
}

fn csr_public_key(der: &[u8]) -> Result<Vec<u8>, String> {
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| e.to_string())?;
    Ok(csr
        .certification_request_info
        .subject_pki
        .subject_public_key
        .data
        .to_vec())
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal("internal error")
}

#[derive(Clone)]
pub struct LinkService(pub Arc<Collector>);

type SessionStream = ReceiverStream<Result<CollectorMessage, Status>>;

/// Authenticates the stream from the client certificate alone.
fn authenticate(
    c: &Collector,
    certs: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
) -> Result<(AgentIdentity, foureyes_identity::CertFacts), Status> {
    let certs = certs.ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let (identity, facts) = AgentIdentity::from_certificate(leaf)
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
    let sys = SystemScope::collector_internal();
    match c.store.key_owner(&sys, &facts.key_id).map_err(internal)? {
        Some((owner, false)) if owner == identity.id => Ok((identity, facts)),
        Some((_, true)) => Err(Status::permission_denied("agent revoked")),
        _ => Err(Status::permission_denied("unknown agent key")),
    }
}

#[tonic::async_trait]
impl AgentLink for LinkService {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let c = self.0.clone();
        let (identity, _facts) = authenticate(&c, request.peer_certs())?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(30), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 30 s"))??;
        let Some(AgentMessage {
            msg: Some(agent_message::Msg::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message must be a hello",
            ));
        };
        if hello.agent_id != identity.id {
            tracing::warn!(cert = %identity.id, claimed = %hello.agent_id, "forged hello refused");
            return Err(Status::permission_denied(format!(
                "hello names agent {:?} but the certificate is for {:?}",
                hello.agent_id, identity.id
            )));
        }
        let sys = SystemScope::collector_internal();
        let now = now_ms();
        let offset = hello
            .clock
            .as_ref()
            .map(|t| foureyes_proto::timestamp_ms(t) - now)
            .unwrap_or(0);
        let hostname: String = hello.hostname.chars().take(253).collect();
        let version: String = hello.version.chars().take(64).collect();
        c.store
            .record_hello(&sys, &identity.id, &hostname, &version, offset, now)
            .map_err(internal)?;
        let agent = c
            .store
            .get_agent(&Scope::System(sys.clone()), &identity.id)
            .map_err(internal)?
            .ok_or_else(|| Status::permission_denied("unknown agent"))?;

        if hello.last_acked_seq > agent.last_seq {
            // The agent deleted records this store does not hold: a restored or replaced database.
            tracing::error!(
                agent = %identity.id,
                agent_acked = hello.last_acked_seq,
                stored = agent.last_seq,
                "agent results were acknowledged but are missing from the store (database restored from an older copy?)"
            );
        }
        let (tx, rx) = mpsc::channel(64);
        let (conn, signals) = c
            .registry
            .register(&identity.id, &identity.org, identity.kind);
        tracing::info!(agent = %identity.id, clock_offset_ms = offset, "agent connected");
        let welcome = CollectorMessage {
            msg: Some(collector_message::Msg::Welcome(pb::Welcome {
                agent_id: identity.id.clone(),
                acked_seq: agent.last_seq,
                server_time: Some(foureyes_proto::timestamp(SystemTime::now())),
            })),
        };
        let running_version = version.clone();
        tokio::spawn(async move {
            let agent_id = identity.id.clone();
            let result = drive(
                &c,
                identity,
                inbound,
                &tx,
                welcome,
                running_version,
                signals,
            )
            .await;
            c.registry.unregister(&agent_id, conn);
            match result {
                Ok(()) => tracing::info!(agent = %agent_id, "agent disconnected"),
                Err(status) => {
                    tracing::info!(agent = %agent_id, reason = %status.message(), "agent stream ended");
                    let _ = tx.send(Err(status)).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn send(
    tx: &mpsc::Sender<Result<CollectorMessage, Status>>,
    msg: collector_message::Msg,
) -> Result<(), Status> {
    tx.send(Ok(CollectorMessage { msg: Some(msg) }))
        .await
        .map_err(|_| Status::cancelled("agent went away"))
}

/// How the registry reaches a live stream: cut it, or make it re-check assignments and releases.
struct Signals {
    cancel: CancellationToken,
    tests_changed: Arc<tokio::sync::Notify>,
    bursts: mpsc::Receiver<pb::ProbeBurst>,
}

async fn drive(
    c: &Arc<Collector>,
    identity: AgentIdentity,
    mut inbound: Streaming<AgentMessage>,
    tx: &mpsc::Sender<Result<CollectorMessage, Status>>,
    welcome: CollectorMessage,
    running_version: String,
    signals: Signals,
) -> Result<(), Status> {
    let Signals {
        cancel,
        tests_changed,
        mut bursts,
    } = signals;
    let sys = SystemScope::collector_internal();
    if let Some(m) = welcome.msg {
        send(tx, m).await?;
    }
    // Full set on connect; deltas afterwards.
    let mut current: Vec<pb::Test> = Vec::new();
    let mut version = 0;
    if identity.kind == AgentKind::Node {
        let (v, tests) = c
            .store
            .tests_for_agent(&sys, &identity.id)
            .map_err(internal)?;
        send(
            tx,
            collector_message::Msg::Assignments(AssignmentSet {
                version: v,
                tests: tests.clone(),
            }),
        )
        .await?;
        current = tests;
        version = v;
    }
    // Offer a signed release to nodes running another version (nodes verify it themselves);
    // checked at connect and whenever the registry pokes this stream.
    // What was last offered on this stream: (version, digest); both are signed.
    let mut offered: Option<(String, Vec<u8>)> = None;
    let offer_update = |offered: &mut Option<(String, Vec<u8>)>| {
        if identity.kind != AgentKind::Node {
            return None;
        }
        let base = c.update_base_url.get()?;
        let offer = crate::update::offer_for(&c.cfg.data_dir, base, &running_version)?;
        let key = (offer.version.clone(), offer.sha256.clone());
        if offered.as_ref() == Some(&key) {
            return None;
        }
        *offered = Some(key);
        Some(offer)
    };
    if let Some(offer) = offer_update(&mut offered) {
        tracing::info!(agent = %identity.id, version = %offer.version, "offering update");
        send(tx, collector_message::Msg::Update(offer)).await?;
    }
    let mut touch = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                return Err(Status::permission_denied("stream cut by the collector (agent revoked or replaced)"));
            }
            _ = tests_changed.notified(), if identity.kind == AgentKind::Node => {
                if let Some(offer) = offer_update(&mut offered) {
                    tracing::info!(agent = %identity.id, version = %offer.version, "offering update");
                    send(tx, collector_message::Msg::Update(offer)).await?;
                }
                let (v, tests) = c.store.tests_for_agent(&sys, &identity.id).map_err(internal)?;
                if v != version {
                    let removed: Vec<String> = current.iter().filter(|t| !tests.iter().any(|n| n.id == t.id)).map(|t| t.id.clone()).collect();
                    let upserted: Vec<pb::Test> = tests.iter().filter(|n| !current.contains(n)).cloned().collect();
                    version = v;
                    current = tests;
                    if !removed.is_empty() || !upserted.is_empty() {
                        send(tx, collector_message::Msg::Delta(AssignmentDelta { version, upserted, removed })).await?;
                    }
                }
            }
            Some(b) = bursts.recv() => {
                send(tx, collector_message::Msg::Burst(b)).await?;
            }
            _ = touch.tick() => {
                c.store.touch_agent(&sys, &identity.id, now_ms()).map_err(internal)?;
            }
            msg = inbound.message() => {
                let Some(msg) = msg? else { return Ok(()) };
                match msg.msg {
                    Some(agent_message::Msg::Batch(b)) => {
                        let watermark = ingest_batch(c, &identity, b).await?;
                        if identity.kind == AgentKind::Listener {
                            c.route_events_committed.notify_one();
                        }
                        send(tx, collector_message::Msg::Ack(pb::Ack { seq: watermark })).await?;
                    }
                    Some(agent_message::Msg::Renew(r)) => {
                        let cert = c.ca.issue_agent(&r.csr_der, &identity, c.cfg.agent_cert_lifetime)
                            .map_err(|e| Status::invalid_argument(e.to_string()))?;
                        let (_, facts) = AgentIdentity::from_certificate(&cert).map_err(internal)?;
                        if let Some((_, true)) = c.store.key_owner(&sys, &facts.key_id).map_err(internal)? {
                            return Err(Status::permission_denied("this key belongs to a revoked agent"));
                        }
                        c.store.add_agent_key(&sys, &identity.id, facts.key_id, facts.public_key, facts.serial, facts.not_after_unix * 1000).map_err(internal)?;
                        tracing::info!(agent = %identity.id, "certificate renewed");
                        send(tx, collector_message::Msg::Renewed(pb::RenewResponse { certificate_der: cert })).await?;
                    }
                    Some(agent_message::Msg::Hello(_)) => {
                        return Err(Status::invalid_argument("hello may only be sent once"));
                    }
                    None => {}
                }
            }
        }
    }
}

/// Verifies a batch's signature against the agent's keys (current or earlier) and hands it to
/// ingest; resolves with the watermark once the batch is committed.
async fn ingest_batch(
    c: &Arc<Collector>,
    identity: &AgentIdentity,
    b: pb::SignedBatch,
) -> Result<u64, Status> {
    use ed25519_dalek::Verifier;
    let sys = SystemScope::collector_internal();
    let keys = c.store.agent_keys(&sys, &identity.id).map_err(internal)?;
    let key = keys
        .iter()
        .find(|k| k.key_id.as_slice() == b.key_id.as_slice())
        .ok_or_else(|| Status::invalid_argument("batch signed with a key this agent never held"))?;
    let pk_bytes: [u8; 32] = key
        .public_key
        .as_slice()
        .try_into()
        .map_err(|_| Status::internal("stored key is not ed25519"))?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk_bytes).map_err(internal)?;
    let sig = ed25519_dalek::Signature::from_slice(&b.signature)
        .map_err(|_| Status::invalid_argument("malformed batch signature"))?;
    vk.verify(&b.body, &sig)
        .map_err(|_| Status::invalid_argument("batch signature does not verify"))?;
    let batch = RecordBatch::decode(b.body.as_slice())
        .map_err(|e| Status::invalid_argument(format!("batch body: {e}")))?;
    if !batch.records.windows(2).all(|w| w[0].seq < w[1].seq) {
        return Err(Status::invalid_argument(
            "batch records must ascend by sequence number",
        ));
    }
    // A node measures, a listener reports routes: each may only send its own kind of record, so a
    // compromised node cannot plant routes in its tenant's table (or a listener fake results).
    for r in &batch.records {
        let ok = matches!(
            (&r.kind, identity.kind),
            (None | Some(record::Kind::Gap(_)), _)
                | (Some(record::Kind::Result(_)), AgentKind::Node)
                | (Some(record::Kind::RouteEvent(_)), AgentKind::Listener)
        );
        if !ok {
            return Err(Status::invalid_argument(format!(
                "record {} is not a kind a {} may send",
                r.seq,
                identity.kind.as_str()
            )));
        }
    }
    c.ingest
        .submit(IngestBatch {
            agent_id: identity.id.clone(),
            org: identity.org.clone(),
            team: identity.team.clone().unwrap_or_default(),
            records: batch.records,
            body: b.body,
            signature: b.signature,
            key_id: b.key_id,
            received_ms: now_ms(),
        })
        .await
        .map_err(|e| Status::unavailable(format!("ingest: {e}")))
}

/// Accepts TCP connections, does the TLS handshake per connection (a slow client cannot hold the
/// accept loop), and serves enrollment and the agent stream until `shutdown`.
pub async fn serve(
    c: Arc<Collector>,
    listener: TcpListener,
    tls: rustls::ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let (conn_tx, conn_rx) = mpsc::channel(64);
    let accept_shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
                _ = accept_shutdown.cancelled() => return,
            };
            let acceptor = acceptor.clone();
            let conn_tx = conn_tx.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = conn_tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "agent TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "agent TLS handshake timed out"),
                }
            });
        }
    });
    let incoming = ReceiverStream::new(conn_rx);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(pb::enrollment_server::EnrollmentServer::new(
            EnrollmentService(c.clone()),
        ))
        .add_service(
            pb::agent_link_server::AgentLinkServer::new(LinkService(c))
                .max_decoding_message_size(64 << 20),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
