//! Traceroute executor: ICMP echo (default) or UDP probes with rising TTL, answers read from a
//! raw ICMP socket and matched to our probes by what the ICMP error quotes of them.
//!
//! Probes of one hop go out together and the hop waits up to the timeout for them; hops are
//! probed one after another so routers' ICMP rate limits see at most `probes_per_hop` at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use foureyes_proto::v1::{
    Status, TracerouteConfig, TracerouteHop, TracerouteProtocol, TracerouteResult,
    probe_result::Detail,
};

use crate::icmp::{IcmpSocket, SocketKind};
use crate::packet::{self, Icmp};
use crate::{Outcome, ProbeError, Settings};

pub const DEFAULT_MAX_HOPS: u32 = 30;
pub const MAX_MAX_HOPS: u32 = 255;
pub const DEFAULT_PROBES_PER_HOP: u32 = 3;
pub const MAX_PROBES_PER_HOP: u32 = 10;
/// First UDP destination port, as classic traceroute: high, rarely listened on.
pub const UDP_BASE_PORT: u16 = 33434;
/// Payload of echo probes: small, the quoted header is all that matters.
const ECHO_PAYLOAD: usize = 32;

enum Sender {
    Icmp,
    Udp {
        sock: tokio::net::UdpSocket,
        port: u16,
    },
}

/// How one probe was answered.
enum Answer {
    /// A router on the way (time exceeded).
    Hop,
    /// The destination itself (echo reply, or port unreachable for UDP).
    Reached,
    /// Someone said the destination cannot be reached.
    Unreachable(&'static str),
}

pub(crate) async fn run(cfg: &TracerouteConfig, settings: &Settings) -> Outcome {
    let mut detail = TracerouteResult::default();
    match trace(cfg, settings, &mut detail).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::failed(e, Some(Detail::Traceroute(detail))),
    }
}

async fn trace(
    cfg: &TracerouteConfig,
    settings: &Settings,
    detail: &mut TracerouteResult,
) -> Result<Outcome, ProbeError> {
    let max_hops = match cfg.max_hops {
        0 => DEFAULT_MAX_HOPS,
        n if n > MAX_MAX_HOPS => {
            return Err(ProbeError::Config(format!(
                "max_hops {n} is above the maximum of {MAX_MAX_HOPS}"
            )));
        }
        n => n,
    };
    let per_hop = match cfg.probes_per_hop {
        0 => DEFAULT_PROBES_PER_HOP,
        n if n > MAX_PROBES_PER_HOP => {
            return Err(ProbeError::Config(format!(
                "probes_per_hop {n} is above the maximum of {MAX_PROBES_PER_HOP}"
            )));
        }
        n => n,
    };
    let protocol = TracerouteProtocol::try_from(cfg.protocol)
        .map_err(|_| ProbeError::Config(format!("unknown traceroute protocol {}", cfg.protocol)))?;
    let family = crate::family(cfg.family)?;
    let target = crate::resolve(&cfg.host, 0, family, settings.timeout)
        .await?
        .ip();
    detail.destination = target.to_string();
    let v6 = target.is_ipv6();

    let icmp = IcmpSocket::open_kind(v6, SocketKind::Raw).map_err(|e| ProbeError::Io {
        context: "traceroute needs a raw ICMP socket (root or CAP_NET_RAW)".into(),
        source: e,
    })?;
    let sender = match protocol {
        TracerouteProtocol::Icmp => Sender::Icmp,
        TracerouteProtocol::Udp => {
            let bind: IpAddr = if v6 {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            let sock = tokio::net::UdpSocket::bind(SocketAddr::new(bind, 0))
                .await
                .map_err(|e| ProbeError::Io {
                    context: "binding the UDP probe socket".into(),
                    source: e,
                })?;
            let port = sock
                .local_addr()
                .map_err(|e| ProbeError::Io {
                    context: "reading the UDP probe socket's port".into(),
                    source: e,
                })?
                .port();
            Sender::Udp { sock, port }
        }
    };
    let id: u16 = rand::random();
    let base_seq: u16 = rand::random();
    let per_hop_usize = per_hop as usize;
    let total_probes = (max_hops * per_hop) as usize;
    let mut buf = vec![0u8; 65_536];
    let mut unreachable: Option<String> = None;
    let mut reached = false;

    for ttl in 1..=max_hops {
        let first = ((ttl - 1) * per_hop) as usize;
        let mut sent_at = vec![None::<Instant>; per_hop_usize];
        let mut rtt = vec![None::<f64>; per_hop_usize];
        let mut hop = TracerouteHop {
            ttl,
            ..Default::default()
        };
        let send_err = |e: std::io::Error| ProbeError::from_io(e, target, "sending a probe to");
        match &sender {
            Sender::Icmp => icmp.set_ttl(ttl),
            Sender::Udp { sock, .. } => {
                let s = socket2::SockRef::from(sock);
                if v6 {
                    s.set_unicast_hops_v6(ttl)
                } else {
                    s.set_ttl_v4(ttl)
                }
            }
        }
        .map_err(|e| ProbeError::Io {
            context: format!("setting TTL {ttl}"),
            source: e,
        })?;
        for (j, slot) in sent_at.iter_mut().enumerate() {
            let idx = first + j;
            *slot = Some(Instant::now());
            let sent = match &sender {
                Sender::Icmp => {
                    let seq = base_seq.wrapping_add(idx as u16);
                    let pkt = packet::echo_request(v6, id, seq, ECHO_PAYLOAD);
                    icmp.send_to(&pkt, target).await
                }
                Sender::Udp { sock, .. } => {
                    let port = UDP_BASE_PORT.wrapping_add(idx as u16);
                    sock.send_to(&[0u8; ECHO_PAYLOAD], SocketAddr::new(target, port))
                        .await
                        .map(drop)
                }
            };
            if let Err(e) = sent {
                // No route at all: every later hop would fail the same way.
                return Err(send_err(e));
            }
        }
        let deadline = sent_at
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or_else(Instant::now)
            + settings.timeout;
        while rtt.iter().any(Option::is_none) {
            let received = tokio::select! {
                r = icmp.recv(&mut buf) => r,
                () = tokio::time::sleep_until(deadline.into()) => break,
            };
            let (from, range) = received.map_err(|e| ProbeError::Io {
                context: "receiving on the raw ICMP socket".into(),
                source: e,
            })?;
            let now = Instant::now();
            let Some((start, end)) = range else { continue };
            let Some(msg) = packet::parse(v6, &buf[start..end]) else {
                continue;
            };
            let Some((idx, answer)) = classify(&msg, &sender, from, target, id, base_seq) else {
                continue;
            };
            if idx >= total_probes || idx < first || idx >= first + per_hop_usize {
                continue; // a late answer to an earlier hop
            }
            let j = idx - first;
            let (Some(sent), None) = (sent_at[j], rtt[j]) else {
                continue;
            };
            rtt[j] = Some(crate::ms(now.saturating_duration_since(sent)));
            if hop.address.is_empty() {
                hop.address = from.to_string();
            }
            match answer {
                Answer::Hop => {}
                Answer::Reached => reached = true,
                Answer::Unreachable(reason) => {
                    unreachable.get_or_insert_with(|| {
                        format!("{target} is unreachable: {reason} (from {from})")
                    });
                }
            }
        }
        hop.rtt_ms = rtt.iter().flatten().copied().collect();
        detail.hops.push(hop);
        if reached || unreachable.is_some() {
            break;
        }
    }
    detail.reached = reached;
    let last = detail.hops.last();
    let (status, error, latency, loss) = if reached {
        let rtts = last.map(|h| h.rtt_ms.as_slice()).unwrap_or_default();
        let lost = per_hop as usize - rtts.len();
        (
            Status::Ok,
            String::new(),
            crate::median(rtts),
            lost as f64 / f64::from(per_hop),
        )
    } else if let Some(u) = unreachable {
        (Status::Unreachable, u, 0.0, 1.0)
    } else {
        (
            Status::Timeout,
            format!("{target} not reached within {max_hops} hops"),
            0.0,
            1.0,
        )
    };
    Ok(Outcome {
        status,
        error,
        latency_ms: latency,
        loss,
        detail: Some(Detail::Traceroute(std::mem::take(detail))),
    })
}

/// Which of our probes an ICMP message answers, and what it says; `None` for other traffic.
fn classify(
    msg: &Icmp,
    sender: &Sender,
    from: IpAddr,
    target: IpAddr,
    id: u16,
    base_seq: u16,
) -> Option<(usize, Answer)> {
    let v6 = target.is_ipv6();
    let probe_of = |q: &packet::Quoted| -> Option<usize> {
        if q.dst != target {
            return None;
        }
        match sender {
            Sender::Icmp => {
                let (qid, qseq) = q.echo()?;
                (qid == id).then(|| usize::from(qseq.wrapping_sub(base_seq)))
            }
            Sender::Udp { port, .. } => {
                let (sport, dport) = q.udp_ports()?;
                (sport == *port).then(|| usize::from(dport.wrapping_sub(UDP_BASE_PORT)))
            }
        }
    };
    match (msg, sender) {
        (Icmp::EchoReply { id: rid, seq }, Sender::Icmp) if *rid == id && from == target => {
            Some((usize::from(seq.wrapping_sub(base_seq)), Answer::Reached))
        }
        (Icmp::EchoReply { .. }, _) => None,
        (Icmp::TimeExceeded(q), _) => Some((probe_of(q)?, Answer::Hop)),
        (Icmp::Unreachable { code, port, quoted }, _) => {
            let idx = probe_of(quoted)?;
            let reached = *port && from == target && matches!(sender, Sender::Udp { .. });
            Some((
                idx,
                if reached {
                    Answer::Reached
                } else {
                    Answer::Unreachable(packet::unreachable_reason(v6, *code))
                },
            ))
        }
    }
}
