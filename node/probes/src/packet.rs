//! ICMP/ICMPv6 packet building and parsing.
//!
//! Hand-written on purpose: we need only echo request/reply, time exceeded and destination
//! unreachable with the quoted original header, and every byte read here comes from the network, so
//! a few bounds-checked slices are easier to audit than a general packet crate (pnet and
//! etherparse pull far more surface for these ~150 lines).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ICMP4_ECHO_REPLY: u8 = 0;
pub const ICMP4_UNREACHABLE: u8 = 3;
pub const ICMP4_ECHO_REQUEST: u8 = 8;
pub const ICMP4_TIME_EXCEEDED: u8 = 11;
pub const ICMP4_PORT_UNREACHABLE: u8 = 3;

pub const ICMP6_UNREACHABLE: u8 = 1;
pub const ICMP6_TIME_EXCEEDED: u8 = 3;
pub const ICMP6_ECHO_REQUEST: u8 = 128;
pub const ICMP6_ECHO_REPLY: u8 = 129;
pub const ICMP6_PORT_UNREACHABLE: u8 = 4;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Builds an echo request. The checksum is filled for IPv4; for ICMPv6 the kernel always computes
/// it (it needs the pseudo-header, which only the kernel knows for sure).
pub fn echo_request(v6: bool, id: u16, seq: u16, payload_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload_len);
    p.push(if v6 {
        ICMP6_ECHO_REQUEST
    } else {
        ICMP4_ECHO_REQUEST
    });
    p.push(0);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    // A recognisable pattern helps when someone looks at a capture.
    p.extend((0..payload_len).map(|i| (i % 256) as u8));
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// RFC 1071 Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What an ICMP error quotes of the packet that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    pub dst: IpAddr,
    pub proto: u8,
    /// First 8 bytes of the original transport header (ICMP echo header or UDP header).
    pub head: [u8; 8],
}

impl Quoted {
    /// (identifier, sequence) when the quoted packet was one of our echo requests.
    pub fn echo(&self) -> Option<(u16, u16)> {
        let is_echo = match self.proto {
            PROTO_ICMP => self.head[0] == ICMP4_ECHO_REQUEST,
            PROTO_ICMPV6 => self.head[0] == ICMP6_ECHO_REQUEST,
            _ => false,
        };
        is_echo.then(|| {
            (
                u16::from_be_bytes([self.head[4], self.head[5]]),
                u16::from_be_bytes([self.head[6], self.head[7]]),
            )
        })
    }

    /// (source port, destination port) when the quoted packet was UDP.
    pub fn udp_ports(&self) -> Option<(u16, u16)> {
        (self.proto == PROTO_UDP).then(|| {
            (
                u16::from_be_bytes([self.head[0], self.head[1]]),
                u16::from_be_bytes([self.head[2], self.head[3]]),
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Icmp {
    EchoReply {
        id: u16,
        seq: u16,
    },
    TimeExceeded(Quoted),
    Unreachable {
        code: u8,
        /// The destination itself said "port unreachable": for UDP traceroute that means "reached".
        port: bool,
        quoted: Quoted,
    },
}

/// Strips the IPv4 header a raw IPv4 socket delivers. `None` when it is not a sane IPv4/ICMP packet.
pub fn strip_ipv4_header(buf: &[u8]) -> Option<&[u8]> {
    let first = *buf.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || buf.len() < ihl || *buf.get(9)? != PROTO_ICMP {
        return None;
    }
    buf.get(ihl..)
}

/// Parses one ICMP (v6 = false) or ICMPv6 message, starting at its type byte. Anything we do not
/// care about (neighbour discovery, redirects, truncated junk) is `None`.
pub fn parse(v6: bool, icmp: &[u8]) -> Option<Icmp> {
    if icmp.len() < 8 {
        return None;
    }
    let (ty, code) = (icmp[0], icmp[1]);
    let (echo_reply, unreachable, time_exceeded, port_code) = if v6 {
        (
            ICMP6_ECHO_REPLY,
            ICMP6_UNREACHABLE,
            ICMP6_TIME_EXCEEDED,
            ICMP6_PORT_UNREACHABLE,
        )
    } else {
        (
            ICMP4_ECHO_REPLY,
            ICMP4_UNREACHABLE,
            ICMP4_TIME_EXCEEDED,
            ICMP4_PORT_UNREACHABLE,
        )
    };
    if ty == echo_reply && code == 0 {
        return Some(Icmp::EchoReply {
            id: u16::from_be_bytes([icmp[4], icmp[5]]),
            seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        });
    }
    if ty != unreachable && ty != time_exceeded {
        return None;
    }
    let quoted = if v6 {
        parse_quoted_v6(&icmp[8..])?
    } else {
        parse_quoted_v4(&icmp[8..])?
    };
    Some(if ty == time_exceeded {
        Icmp::TimeExceeded(quoted)
    } else {
        Icmp::Unreachable {
            code,
            port: code == port_code,
            quoted,
        }
    })
}

fn head8(b: &[u8]) -> Option<[u8; 8]> {
    b.get(..8)?.try_into().ok()
}

fn parse_quoted_v4(b: &[u8]) -> Option<Quoted> {
    let first = *b.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let dst: [u8; 4] = b.get(16..20)?.try_into().ok()?;
    Some(Quoted {
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        proto: *b.get(9)?,
        head: head8(b.get(ihl..)?)?,
    })
}

/// Assumes no extension headers in the quoted packet: our probes never carry any.
fn parse_quoted_v6(b: &[u8]) -> Option<Quoted> {
    if *b.first()? >> 4 != 6 {
        return None;
    }
    let dst: [u8; 16] = b.get(24..40)?.try_into().ok()?;
    Some(Quoted {
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        proto: *b.get(6)?,
        head: head8(b.get(40..)?)?,
    })
}

/// Human text for an ICMP unreachable code, for `ProbeResult.error`.
pub fn unreachable_reason(v6: bool, code: u8) -> &'static str {
    match (v6, code) {
        (false, 0) => "network unreachable",
        (false, 1) => "host unreachable",
        (false, 2) => "protocol unreachable",
        (false, 3) => "port unreachable",
        (false, 9 | 10 | 13) => "administratively prohibited",
        (true, 0) => "no route to destination",
        (true, 1) => "administratively prohibited",
        (true, 3) => "address unreachable",
        (true, 4) => "port unreachable",
        (true, 5 | 6) => "rejected by policy",
        _ => "destination unreachable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let p = echo_request(false, 0x1234, 7, 56);
        assert_eq!(p.len(), 64);
        assert_eq!(checksum(&p), 0);
        let odd = echo_request(false, 1, 2, 3);
        assert_eq!(checksum(&odd), 0);
    }

    #[test]
    fn parses_time_exceeded_quoting_echo() {
        let probe = echo_request(false, 0xbeef, 42, 8);
        let mut ip = vec![0x45, 0, 0, 36, 0, 0, 0, 0, 1, PROTO_ICMP, 0, 0];
        ip.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        ip.extend_from_slice(&probe[..8]);
        let mut icmp = vec![ICMP4_TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&ip);
        let Some(Icmp::TimeExceeded(q)) = parse(false, &icmp) else {
            panic!("not parsed");
        };
        assert_eq!(q.dst, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(q.echo(), Some((0xbeef, 42)));
        assert_eq!(q.udp_ports(), None);
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..80 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 3) as u8).collect();
            let _ = parse(false, &junk);
            let _ = parse(true, &junk);
            let _ = strip_ipv4_header(&junk);
            for ty in [0u8, 1, 3, 11, 129] {
                let mut j = junk.clone();
                if let Some(b) = j.first_mut() {
                    *b = ty;
                }
                let _ = parse(false, &j);
                let _ = parse(true, &j);
            }
        }
    }
}
