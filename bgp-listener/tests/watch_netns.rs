//! `watch` as the issue runs it, in network namespaces (needs root, iproute2, tcpdump): the
//! issue's own example, `--listen 0.0.0.0:179` without `--router-id`, takes the BGP identifier
//! from the accepted connection's local address; `--multihop N` sends every segment with TTL N
//! (tcpdump on the veth, IPv4 header byte 8). Also the settings `watch` refuses up front.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::lab::{LISTENER_V4, Lab, ROUTER_V4, ip, tcp_stream_from};
use common::{full_caps, keepalive, open_with};
use foureyes_bgp_listener::wire::Framer;

/// The TTL of every IPv4 TCP segment from `src` in a pcap (Ethernet link type), RSTs left out:
/// while the test dials before the listener is up, the kernel answers with RSTs of its own (no
/// socket, so the namespace's default TTL).
fn ttls_from(pcap: &[u8], src: IpAddr) -> Vec<u8> {
    let rd32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    assert_eq!(pcap[..4], [0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    let mut ttls = Vec::new();
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let incl = rd32(&pcap[off + 8..off + 12]) as usize;
        let pkt = &pcap[off + 16..(off + 16 + incl).min(pcap.len())];
        off += 16 + incl;
        if pkt.len() >= 34 && pkt[12..14] == [0x08, 0x00] {
            let l3 = &pkt[14..];
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            let rst = l3.get(ihl + 13).is_some_and(|f| f & 0x04 != 0);
            if IpAddr::from([l3[12], l3[13], l3[14], l3[15]]) == src && l3[9] == 6 && !rst {
                ttls.push(l3[8]);
            }
        }
    }
    ttls
}

/// Plays the router: connects to the listener, sends OPEN, and reads until the listener's OPEN
/// and KEEPALIVE arrived.
fn router_session(lab: &Lab, to: SocketAddr) -> std::net::TcpStream {
    let mut s = lab.connect_from_router(to, Duration::from_secs(20));
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(&open_with(65001, 90, [198, 18, 0, 1], &full_caps(65001)))
        .expect("write OPEN");
    let mut framer = Framer::new();
    let mut kinds = Vec::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while !kinds.contains(&4) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no OPEN + KEEPALIVE from the listener: {kinds:?}"
        );
        match s.read(&mut buf) {
            Ok(0) => panic!("listener closed: {kinds:?}"),
            Ok(n) => framer.push(&buf[..n]),
            Err(_) => continue,
        }
        while let Some(f) = framer.next_frame().expect("valid") {
            kinds.push(f.kind);
        }
    }
    assert_eq!(kinds.first(), Some(&1), "OPEN first");
    s.write_all(&keepalive()).expect("KEEPALIVE");
    s
}

#[test]
fn listen_on_any_address_without_router_id_uses_the_connections_local_ipv4() {
    let mut lab = Lab::new("rid");
    lab.start_capture();
    let mut w = lab.watch(&[
        "--local-as",
        "65002",
        "--peer",
        ROUTER_V4,
        "--remote-as",
        "65001",
        "--listen",
        "0.0.0.0:179",
    ]);
    let _s = router_session(&lab, SocketAddr::new(ip(LISTENER_V4), 179));
    w.events
        .wait("session up", |e| e["type"] == "session_established");
    w.stop();
    let pcap = lab.stop_capture();
    let sent = tcp_stream_from(&pcap, ip(LISTENER_V4));
    let mut f = Framer::new();
    f.push(&sent);
    let open = f.next_frame().expect("frames").expect("an OPEN");
    assert_eq!(open.kind, 1);
    // Version, My AS, Hold Time, then the BGP Identifier: the address the router dialled.
    assert_eq!(open.body.get(5..9), Some(&[198, 18, 0, 2][..]));
}

#[test]
fn multihop_sends_every_segment_with_that_ttl() {
    let mut lab = Lab::new("mh");
    lab.start_capture();
    let mut w = lab.watch(&[
        "--local-as",
        "65002",
        "--peer",
        ROUTER_V4,
        "--remote-as",
        "65001",
        "--listen",
        LISTENER_V4,
        "--multihop",
        "7",
    ]);
    let _s = router_session(&lab, SocketAddr::new(ip(LISTENER_V4), 179));
    w.events
        .wait("session up", |e| e["type"] == "session_established");
    w.stop();
    let pcap = lab.stop_capture();
    let ttls = ttls_from(&pcap, ip(LISTENER_V4));
    // SYN-ACK, OPEN, KEEPALIVE, ACKs, the Cease: all of them.
    assert!(ttls.len() >= 3, "listener packets captured: {ttls:?}");
    assert!(ttls.iter().all(|t| *t == 7), "TTLs sent: {ttls:?}");
    // And the router's side is untouched (the OS default), so the capture can tell them apart.
    assert!(ttls_from(&pcap, ip(ROUTER_V4)).iter().all(|t| *t != 7));
}

/// Settings refused before any socket is opened: each exits non-zero naming the problem.
#[test]
fn impossible_settings_are_clear_errors_not_panics() {
    let base = [
        "watch",
        "--peer",
        "127.0.0.1",
        "--remote-as",
        "65001",
        "--listen",
        "127.0.0.1:0",
    ];
    for (extra, want) in [
        (
            &["--local-as", "65002", "--quiet-period", "inf"][..],
            "--quiet-period",
        ),
        (
            &["--local-as", "65002", "--quiet-period", "1e30"][..],
            "--quiet-period",
        ),
        (
            &["--local-as", "65002", "--no-ipv4", "--no-ipv6"][..],
            "address family",
        ),
        (
            &["--no-four-octet-as", "--local-as", "4200000000"][..],
            "4-octet AS",
        ),
    ] {
        let out = std::process::Command::new(common::lab::listener_bin())
            .args(base)
            .args(extra)
            .output()
            .expect("run the listener");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
    }
}
