//! A tiny authoritative DNS responder over UDP.
//!
//! Exists so DNS executor tests and the collector's `--dev` mode have a resolver that answers
//! exactly what they configure, without a system resolver or any traffic leaving the host. It
//! answers A/AAAA for configured names, an empty NOERROR for other types of a known name, and
//! NXDOMAIN for unknown names; anything it cannot decode is dropped (never a panic, never a reply
//! that could be used for amplification).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// TTL of the answers: short, dev data changes.
const TTL: u32 = 5;

/// Serves `records` on `socket` until `shutdown` completes.
pub async fn serve(
    socket: tokio::net::UdpSocket,
    records: Vec<(String, IpAddr)>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let zone = Zone::new(records);
    tokio::pin!(shutdown);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors from earlier replies surface here on some kernels: not fatal.
                Err(e) => {
                    tracing::debug!(error = %e, "dev_dns: recv error");
                    continue;
                }
            },
        };
        let Some(reply) = zone.answer(&buf[..n]) else {
            continue;
        };
        if let Err(e) = socket.send_to(&reply, peer).await {
            tracing::debug!(error = %e, %peer, "dev_dns: send error");
        }
    }
}

struct Zone {
    records: Vec<(Name, IpAddr)>,
}

impl Zone {
    fn new(records: Vec<(String, IpAddr)>) -> Self {
        let records = records
            .into_iter()
            .filter_map(|(name, ip)| match Name::from_utf8(&name) {
                Ok(mut n) => {
                    n.set_fqdn(true);
                    Some((n, ip))
                }
                Err(e) => {
                    tracing::warn!(%name, error = %e, "dev_dns: skipping invalid name");
                    None
                }
            })
            .collect();
        Self { records }
    }

    /// The reply to one datagram, or `None` to stay silent (garbage, responses, non-queries).
    fn answer(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        let query = Message::from_vec(datagram).ok()?;
        if query.message_type() != MessageType::Query {
            return None;
        }
        let mut reply = Message::new();
        reply
            .set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_op_code(query.op_code())
            .set_authoritative(true)
            .set_recursion_desired(query.recursion_desired())
            .add_queries(query.queries().iter().cloned());
        let rcode = match (query.op_code(), query.queries()) {
            (OpCode::Query, [q]) => {
                let mut known = false;
                for (name, ip) in &self.records {
                    if name != q.name() {
                        continue;
                    }
                    known = true;
                    let rdata = match (q.query_type(), ip) {
                        (RecordType::A | RecordType::ANY, IpAddr::V4(v4)) => RData::A(A(*v4)),
                        (RecordType::AAAA | RecordType::ANY, IpAddr::V6(v6)) => {
                            RData::AAAA(AAAA(*v6))
                        }
                        _ => continue,
                    };
                    reply.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
                }
                if known {
                    ResponseCode::NoError
                } else {
                    ResponseCode::NXDomain
                }
            }
            (OpCode::Query, _) => ResponseCode::FormErr,
            _ => ResponseCode::NotImp,
        };
        reply.set_response_code(rcode);
        reply.to_vec().ok()
    }
}

/// Convenience for tests and `--dev`: binds `addr`, then serves.
pub async fn bind_and_serve(
    addr: SocketAddr,
    records: Vec<(String, IpAddr)>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve(tokio::net::UdpSocket::bind(addr).await?, records, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_dropped() {
        let zone = Zone::new(vec![("a.test".into(), "192.0.2.1".parse().expect("ip"))]);
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 91 + 7) as u8).collect();
            let _ = zone.answer(&junk);
        }
    }
}
