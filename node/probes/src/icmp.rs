//! ICMP echo executor and the ICMP socket it (and traceroute) share.
//!
//! Prefers the unprivileged ICMP datagram socket ("ping socket") because the kernel then demuxes
//! replies to us and the node needs no privilege; falls back to a raw socket, which sees every
//! ICMP packet of the host, so replies are filtered by identifier, sequence and source.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use foureyes_proto::v1::{IcmpConfig, IcmpResult, Status, probe_result::Detail};
use socket2::{Domain, Protocol, Socket, Type};

use crate::packet::{self, Icmp};
use crate::{DEFAULT_ICMP_COUNT, Outcome, ProbeError, Settings};

/// Echo payload when the config leaves it at zero: the classic `ping` size.
pub const DEFAULT_PAYLOAD: u32 = 56;
/// Largest payload that still fits one IPv4 datagram with headers.
pub const MAX_PAYLOAD: u32 = 65_000;
/// Gap between echoes when the config leaves it at zero.
pub const DEFAULT_SPACING_MS: u32 = 10;
/// A gap longer than this makes a "run" span minutes; refuse it as a config mistake.
pub const MAX_SPACING_MS: u32 = 60_000;

/// Which kind of ICMP socket a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// Unprivileged ping socket (`SOCK_DGRAM`, allowed by `net.ipv4.ping_group_range`).
    Datagram,
    /// `SOCK_RAW`: needs root or CAP_NET_RAW.
    Raw,
}

/// The ICMP socket kind echo runs would use in this process and network namespace right now, for
/// diagnostics (a node logs it at start-up; tests assert which path they exercised).
pub fn available_kind(v6: bool) -> io::Result<SocketKind> {
    // Opens plain sockets only: callable outside a tokio runtime.
    match new_socket(v6, SocketKind::Datagram) {
        Ok(_) => Ok(SocketKind::Datagram),
        Err(_) => new_socket(v6, SocketKind::Raw).map(|_| SocketKind::Raw),
    }
}

fn new_socket(v6: bool, kind: SocketKind) -> io::Result<Socket> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let ty = match kind {
        SocketKind::Datagram => Type::DGRAM,
        SocketKind::Raw => Type::RAW,
    };
    Socket::new(domain, ty, Some(proto))
}

/// An ICMP socket in nonblocking mode, registered with tokio.
///
/// The fd is carried in a `tokio::net::UdpSocket` although it is an ICMP socket: that type gives
/// safe `recv_from` into an initialised `&mut [u8]` and readiness-driven `send_to`, and it only
/// issues protocol-generic syscalls (recvfrom, sendto, connect, setsockopt) on the fd. The other
/// safe routes are closed: socket2's `recv_from` fills `MaybeUninit` bytes that cannot be read back
/// without `unsafe`, and tokio 1.54 deprecated `AsyncFd::new` as unsound (its replacement,
/// `AsyncFd::register`, is `unsafe`), while the workspace forbids `unsafe_code`.
pub(crate) struct IcmpSocket {
    fd: tokio::net::UdpSocket,
    pub kind: SocketKind,
    pub v6: bool,
}

impl IcmpSocket {
    /// Datagram socket when the kernel allows it, raw otherwise.
    pub fn open(v6: bool) -> io::Result<Self> {
        match Self::open_kind(v6, SocketKind::Datagram) {
            Ok(s) => Ok(s),
            Err(dgram_err) => Self::open_kind(v6, SocketKind::Raw).map_err(|raw_err| {
                io::Error::new(
                    raw_err.kind(),
                    format!(
                        "cannot open an ICMP socket (datagram: {dgram_err}; raw: {raw_err}); \
                         widen net.ipv4.ping_group_range or grant CAP_NET_RAW"
                    ),
                )
            }),
        }
    }

    pub fn open_kind(v6: bool, kind: SocketKind) -> io::Result<Self> {
        let socket = new_socket(v6, kind)?;
        socket.set_nonblocking(true)?;
        let fd = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
        Ok(Self { fd, kind, v6 })
    }

    /// For datagram sockets: makes the kernel report ICMP errors for our echoes as a socket error
    /// (ping sockets only do so when connected) and filters replies to the target.
    pub async fn connect(&self, ip: IpAddr) -> io::Result<()> {
        self.fd.connect(SocketAddr::new(ip, 0)).await
    }

    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        let s = socket2::SockRef::from(&self.fd);
        if self.v6 {
            s.set_unicast_hops_v6(ttl)
        } else {
            s.set_ttl_v4(ttl)
        }
    }

    pub async fn send_to(&self, pkt: &[u8], ip: IpAddr) -> io::Result<()> {
        // Port 0: raw IPv6 sockets reject any other "port" than 0 or the protocol number.
        let dst = SocketAddr::new(ip, 0);
        self.fd.send_to(pkt, dst).await.map(drop)
    }

    /// Receives one packet; returns the sender and the ICMP message's byte range in `buf` (raw
    /// IPv4 sockets deliver the IP header too, which is skipped). `None` range: not ICMP we parse.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(IpAddr, Option<(usize, usize)>)> {
        let (n, from) = self.fd.recv_from(buf).await?;
        let data = &buf[..n];
        let range = if !self.v6 && self.kind == SocketKind::Raw {
            packet::strip_ipv4_header(data).map(|icmp| (n - icmp.len(), n))
        } else {
            Some((0, n))
        };
        Ok((from.ip(), range))
    }
}

/// Per-run bookkeeping shared by the sender and the receiver of one run.
struct Echoes {
    sent: Vec<Option<Instant>>,
    rtt: Vec<Option<f64>>,
    failed: Vec<bool>,
    /// Why the network refused our echoes (first ICMP error seen), if it did.
    unreachable: Option<String>,
    /// A local failure to send (not a network verdict).
    local_error: Option<String>,
    last_sent: Option<Instant>,
}

impl Echoes {
    fn new(n: usize) -> Self {
        Self {
            sent: vec![None; n],
            rtt: vec![None; n],
            failed: vec![false; n],
            unreachable: None,
            local_error: None,
            last_sent: None,
        }
    }

    fn settled(&self) -> bool {
        self.sent
            .iter()
            .zip(self.rtt.iter().zip(&self.failed))
            .all(|(s, (r, f))| s.is_some() && (r.is_some() || *f))
    }

    /// Oldest echo still waiting for an answer: a ping socket's error does not say which echo it
    /// was for, and the oldest is the best guess.
    fn oldest_outstanding(&self) -> Option<usize> {
        (0..self.sent.len())
            .find(|&i| self.sent[i].is_some() && self.rtt[i].is_none() && !self.failed[i])
    }
}

fn lock(m: &Mutex<Echoes>) -> std::sync::MutexGuard<'_, Echoes> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) async fn run(cfg: &IcmpConfig, settings: &Settings) -> Outcome {
    let mut detail = IcmpResult::default();
    match echo_run(cfg, settings, &mut detail).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::failed(e, Some(Detail::Icmp(detail))),
    }
}

async fn echo_run(
    cfg: &IcmpConfig,
    settings: &Settings,
    detail: &mut IcmpResult,
) -> Result<Outcome, ProbeError> {
    let count = match settings.count {
        0 => DEFAULT_ICMP_COUNT,
        n => n,
    };
    let payload = match cfg.payload_size {
        0 => DEFAULT_PAYLOAD,
        p if p > MAX_PAYLOAD => {
            return Err(ProbeError::Config(format!(
                "payload_size {p} is above the maximum of {MAX_PAYLOAD}"
            )));
        }
        p => p,
    };
    let spacing_ms = match cfg.spacing_ms {
        0 => DEFAULT_SPACING_MS,
        s if s > MAX_SPACING_MS => {
            return Err(ProbeError::Config(format!(
                "spacing_ms {s} is above the maximum of {MAX_SPACING_MS}"
            )));
        }
        s => s,
    };
    let family = crate::family(cfg.family)?;
    let target = crate::resolve(&cfg.host, 0, family, settings.timeout)
        .await?
        .ip();
    detail.address = target.to_string();
    detail.sent = count;

    let sock = IcmpSocket::open(target.is_ipv6()).map_err(|e| ProbeError::Io {
        context: "opening ICMP socket".into(),
        source: e,
    })?;
    if sock.kind == SocketKind::Datagram {
        sock.connect(target)
            .await
            .map_err(|e| ProbeError::from_io(e, target, "connecting ping socket to"))?;
    }
    tracing::debug!(%target, kind = ?sock.kind, count, "icmp echo run");

    let id: u16 = rand::random();
    let base_seq: u16 = rand::random();
    let n = count as usize;
    let state = Mutex::new(Echoes::new(n));
    let timeout = settings.timeout;
    // Scoped so the sender future (which borrows `state`) is gone before `state` is taken apart.
    {
        let lock = || lock(&state);
        let sender = async {
            for i in 0..n {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(u64::from(spacing_ms))).await;
                }
                let seq = base_seq.wrapping_add(i as u16);
                let pkt = packet::echo_request(sock.v6, id, seq, payload as usize);
                let now = Instant::now();
                {
                    let mut st = lock();
                    st.sent[i] = Some(now);
                    st.last_sent = Some(now);
                }
                if let Err(e) = sock.send_to(&pkt, target).await {
                    let mut st = lock();
                    st.failed[i] = true;
                    match ProbeError::from_io(e, target, "sending echo to") {
                        err @ (ProbeError::Unreachable { .. } | ProbeError::Refused { .. }) => {
                            st.unreachable.get_or_insert(err.to_string());
                        }
                        err => {
                            st.local_error.get_or_insert(err.to_string());
                        }
                    }
                }
            }
        };
        tokio::pin!(sender);

        let mut sending = true;
        let mut buf = vec![0u8; 65_536];
        let mut errors = 0usize;
        loop {
            let deadline = lock().last_sent.map_or_else(Instant::now, |t| t + timeout);
            tokio::select! {
                () = &mut sender, if sending => sending = false,
                r = sock.recv(&mut buf) => match r {
                    Ok((from, Some((start, end)))) => {
                        let now = Instant::now();
                        let Some(msg) = packet::parse(sock.v6, &buf[start..end]) else { continue };
                        let mut st = lock();
                        handle_message(&mut st, &sock, msg, from, target, id, base_seq, now, timeout);
                    }
                    Ok((_, None)) => {}
                    Err(e) => {
                        // A ping socket reports an ICMP error for our echoes as a socket error.
                        errors += 1;
                        let mut st = lock();
                        if let Some(i) = st.oldest_outstanding() {
                            st.failed[i] = true;
                        }
                        match ProbeError::from_io(e, target, "receiving from") {
                            err @ (ProbeError::Unreachable { .. } | ProbeError::Refused { .. }) => {
                                st.unreachable.get_or_insert(err.to_string());
                            }
                            err => {
                                st.local_error.get_or_insert(err.to_string());
                            }
                        }
                        if errors > n + 16 {
                            break;
                        }
                    }
                },
                () = tokio::time::sleep_until(deadline.into()), if !sending => break,
            }
            if !sending && lock().settled() {
                break;
            }
        }
    }

    let st = state.into_inner().unwrap_or_else(PoisonError::into_inner);
    detail.rtt_ms = st.rtt.iter().flatten().copied().collect();
    detail.received = detail.rtt_ms.len() as u32;
    detail.loss = f64::from(count - detail.received) / f64::from(count);
    let latency = crate::median(&detail.rtt_ms);
    let lost = count - detail.received;
    let (status, error) = if lost == 0 {
        (Status::Ok, String::new())
    } else if detail.received > 0 {
        let mut e = format!("{lost} of {count} echoes to {target} lost");
        if let Some(u) = &st.unreachable {
            e.push_str(&format!(" ({u})"));
        }
        (Status::Degraded, e)
    } else if let Some(u) = st.unreachable {
        (Status::Unreachable, u)
    } else if let Some(l) = st.local_error {
        (Status::Error, l)
    } else {
        (
            Status::Timeout,
            format!(
                "no echo reply from {target} within {} ms",
                settings.timeout_ms()
            ),
        )
    };
    Ok(Outcome {
        status,
        error,
        latency_ms: latency,
        loss: detail.loss,
        detail: Some(Detail::Icmp(std::mem::take(detail))),
    })
}

#[allow(clippy::too_many_arguments)]
fn handle_message(
    st: &mut Echoes,
    sock: &IcmpSocket,
    msg: Icmp,
    from: IpAddr,
    target: IpAddr,
    id: u16,
    base_seq: u16,
    now: Instant,
    timeout: Duration,
) {
    let n = st.sent.len();
    let index = move |seq: u16| {
        let i = usize::from(seq.wrapping_sub(base_seq));
        (i < n).then_some(i)
    };
    match msg {
        Icmp::EchoReply { id: rid, seq } => {
            // A ping socket gets only its own replies, with the identifier the kernel chose.
            if from != target || (sock.kind == SocketKind::Raw && rid != id) {
                return;
            }
            let Some(i) = index(seq) else { return };
            let Some(sent) = st.sent[i] else { return };
            let rtt = now.saturating_duration_since(sent);
            if st.rtt[i].is_none() && !st.failed[i] && rtt <= timeout {
                st.rtt[i] = Some(crate::ms(rtt));
            }
        }
        Icmp::Unreachable { quoted, code, .. } => {
            let reason = packet::unreachable_reason(sock.v6, code);
            mark_error(st, &quoted, from, target, id, index, reason);
        }
        Icmp::TimeExceeded(quoted) => {
            mark_error(
                st,
                &quoted,
                from,
                target,
                id,
                index,
                "time to live exceeded",
            );
        }
    }
}

/// Marks the echo an ICMP error quotes as failed. Only raw sockets see these packets, so the
/// quoted identifier is ours as sent.
fn mark_error(
    st: &mut Echoes,
    quoted: &packet::Quoted,
    from: IpAddr,
    target: IpAddr,
    id: u16,
    index: impl Fn(u16) -> Option<usize>,
    reason: &str,
) {
    let Some((qid, qseq)) = quoted.echo() else {
        return;
    };
    if quoted.dst != target || qid != id {
        return;
    }
    let Some(i) = index(qseq) else { return };
    if st.rtt[i].is_none() && !st.failed[i] && st.sent[i].is_some() {
        st.failed[i] = true;
        st.unreachable
            .get_or_insert_with(|| format!("{target} is unreachable: {reason} (from {from})"));
    }
}
