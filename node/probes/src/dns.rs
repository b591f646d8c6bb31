//! DNS executor: one query to one server, over UDP or TCP, with hickory-proto doing the wire format.
//!
//! `rtt_ms` is the time from sending the query to a matching response (for TCP, the connection
//! setup is not included: that is what the TCP executor measures).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use foureyes_proto::v1::{DnsConfig, DnsRecordType, DnsResult, IpFamily, probe_result::Detail};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Outcome, ProbeError, Settings};

/// EDNS UDP payload we advertise: the DNS-flag-day value that avoids fragmentation.
const EDNS_PAYLOAD: u16 = 1232;

pub(crate) async fn run(cfg: &DnsConfig, settings: &Settings) -> Outcome {
    let mut detail = DnsResult::default();
    let res = match tokio::time::timeout(settings.timeout, query(cfg, settings, &mut detail)).await
    {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout {
            target: if detail.server.is_empty() {
                cfg.server.clone()
            } else {
                detail.server.clone()
            },
            ms: settings.timeout_ms(),
        }),
    };
    let rtt = detail.rtt_ms;
    match res {
        Ok(()) => Outcome::ok(rtt, Detail::Dns(detail)),
        // The server answered: its verdict (NXDOMAIN, wrong answer) has a real latency.
        Err(e @ (ProbeError::Dns(_) | ProbeError::Mismatch(_))) => {
            Outcome::answered_wrong(e, rtt, Detail::Dns(detail))
        }
        Err(e) => Outcome::failed(e, Some(Detail::Dns(detail))),
    }
}

fn record_type(raw: i32) -> Result<RecordType, ProbeError> {
    Ok(
        match DnsRecordType::try_from(raw)
            .map_err(|_| ProbeError::Config(format!("unknown DNS record type {raw}")))?
        {
            DnsRecordType::A => RecordType::A,
            DnsRecordType::Aaaa => RecordType::AAAA,
            DnsRecordType::Cname => RecordType::CNAME,
            DnsRecordType::Mx => RecordType::MX,
            DnsRecordType::Txt => RecordType::TXT,
            DnsRecordType::Ns => RecordType::NS,
            DnsRecordType::Soa => RecordType::SOA,
        },
    )
}

async fn query(
    cfg: &DnsConfig,
    settings: &Settings,
    detail: &mut DnsResult,
) -> Result<(), ProbeError> {
    let port = match cfg.port {
        0 => 53,
        p => u16::try_from(p)
            .map_err(|_| ProbeError::Config(format!("port {p} is not a valid port")))?,
    };
    let rtype = record_type(cfg.record_type)?;
    let qname = cfg.query_name.trim();
    if qname.is_empty() {
        return Err(ProbeError::Config("query_name is empty".into()));
    }
    let mut name = Name::from_utf8(qname)
        .map_err(|e| ProbeError::Config(format!("query_name {qname:?} is not a DNS name: {e}")))?;
    name.set_fqdn(true);

    let server = crate::resolve(&cfg.server, port, IpFamily::Any, settings.timeout).await?;
    detail.server = server.to_string();

    let id: u16 = rand::random();
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    msg.set_edns(edns);
    let wire = msg.to_vec().map_err(|e| ProbeError::Io {
        context: "encoding DNS query".into(),
        source: std::io::Error::other(e),
    })?;

    let (response, rtt) = if cfg.tcp {
        exchange_tcp(server, &wire, id, settings).await?
    } else {
        exchange_udp(server, &wire, id).await?
    };
    detail.rtt_ms = crate::ms(rtt);
    let rcode = response.response_code();
    detail.rcode = u32::from(u16::from(rcode));
    detail.answers = response
        .answers()
        .iter()
        .map(|r| render(r.data()))
        .collect();

    if rcode != ResponseCode::NoError {
        return Err(ProbeError::Dns(format!(
            "{server} answered {} ({rcode}) for {qname} {rtype}",
            mnemonic(rcode)
        )));
    }
    let expect = cfg.expect_answer.trim();
    if !expect.is_empty() && !detail.answers.iter().any(|a| answer_matches(a, expect)) {
        return Err(ProbeError::Mismatch(format!(
            "no answer for {qname} {rtype} equals {expect:?} (got {:?})",
            detail.answers
        )));
    }
    Ok(())
}

/// The RFC 1035 mnemonic operators grep for, not hickory's prose.
fn mnemonic(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE {}", u16::from(other)),
    }
}

/// Names compare without their trailing dot and case-insensitively (DNS names are); anything else
/// compares exactly.
fn answer_matches(answer: &str, expect: &str) -> bool {
    let a = answer.strip_suffix('.').unwrap_or(answer);
    let e = expect.strip_suffix('.').unwrap_or(expect);
    a == e || (a.eq_ignore_ascii_case(e) && !a.contains(' '))
}

fn name_text(n: &Name) -> String {
    let s = n.to_utf8();
    if s.len() > 1 {
        s.strip_suffix('.').map(str::to_string).unwrap_or(s)
    } else {
        s
    }
}

/// Answer text as operators write it: IPs for A/AAAA, names without the trailing dot, MX as
/// "preference exchange", TXT strings concatenated (how SPF and friends read them).
fn render(rdata: &RData) -> String {
    match rdata {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(n) => name_text(&n.0),
        RData::NS(n) => name_text(&n.0),
        RData::PTR(n) => name_text(&n.0),
        RData::MX(mx) => format!("{} {}", mx.preference(), name_text(mx.exchange())),
        RData::TXT(txt) => txt
            .txt_data()
            .iter()
            .map(|s| String::from_utf8_lossy(s))
            .collect(),
        RData::SOA(soa) => format!(
            "{} {} {} {} {} {} {}",
            name_text(soa.mname()),
            name_text(soa.rname()),
            soa.serial(),
            soa.refresh(),
            soa.retry(),
            soa.expire(),
            soa.minimum()
        ),
        other => other.to_string(),
    }
}

fn is_our_response(msg: &Message, id: u16) -> bool {
    msg.id() == id && msg.message_type() == MessageType::Response
}

async fn exchange_udp(
    server: SocketAddr,
    wire: &[u8],
    id: u16,
) -> Result<(Message, Duration), ProbeError> {
    let bind: IpAddr = if server.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let io_err = |e, what: &str| ProbeError::from_io(e, server, what);
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(bind, 0))
        .await
        .map_err(|e| io_err(e, "binding a UDP socket for"))?;
    // Connected: the kernel drops datagrams from anyone else and reports ICMP port unreachable
    // as ECONNREFUSED, which is the REFUSED kind.
    sock.connect(server)
        .await
        .map_err(|e| io_err(e, "connecting to"))?;
    let start = Instant::now();
    sock.send(wire)
        .await
        .map_err(|e| io_err(e, "sending a query to"))?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| io_err(e, "receiving from"))?;
        let took = start.elapsed();
        // Garbage or a stale answer to someone else's id: keep waiting within the timeout.
        match Message::from_vec(&buf[..n]) {
            Ok(msg) if is_our_response(&msg, id) => return Ok((msg, took)),
            Ok(_) => tracing::debug!(%server, "ignoring DNS message with another id"),
            Err(e) => tracing::debug!(%server, error = %e, "ignoring undecodable DNS message"),
        }
    }
}

async fn exchange_tcp(
    server: SocketAddr,
    wire: &[u8],
    id: u16,
    settings: &Settings,
) -> Result<(Message, Duration), ProbeError> {
    let (mut stream, _) = crate::tcp::connect(server, settings)
        .await
        .map_err(|e| match e {
            ProbeError::ResetAfterHandshake { .. } => ProbeError::Dns(e.to_string()),
            e => e,
        })?;
    let len = u16::try_from(wire.len())
        .map_err(|_| ProbeError::Config("DNS query too long for TCP framing".into()))?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    let io_err = |e, what: &str| ProbeError::from_io(e, server, what);
    let start = Instant::now();
    stream
        .write_all(&framed)
        .await
        .map_err(|e| io_err(e, "sending a query to"))?;
    loop {
        let len = stream
            .read_u16()
            .await
            .map_err(|e| io_err(e, "reading the answer length from"))?;
        let mut buf = vec![0u8; usize::from(len)];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| io_err(e, "reading the answer from"))?;
        let took = start.elapsed();
        match Message::from_vec(&buf) {
            Ok(msg) if is_our_response(&msg, id) => return Ok((msg, took)),
            Ok(_) => {}
            Err(e) => {
                return Err(ProbeError::Dns(format!(
                    "{server} sent an undecodable answer: {e}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_rules() {
        assert!(answer_matches("example.com", "example.com."));
        assert!(answer_matches("Example.COM", "example.com"));
        assert!(answer_matches("10 mx.example.com", "10 mx.example.com."));
        assert!(!answer_matches("192.0.2.1", "192.0.2.2"));
    }
}
