//! The tokio driver and `watch` in-process against a scripted peer on loopback (no root, no BIRD):
//! passive accept, the peer-address check, exit on End-of-RIB, the quiet-period rule, and the
//! final line.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use foureyes_bgp_listener::driver::Connection;
use foureyes_bgp_listener::session::SessionConfig;
use foureyes_bgp_listener::watch::{DoneRule, Format, WatchOptions, watch};
use foureyes_bgp_listener::wire::Framer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn read_types(s: &mut TcpStream, framer: &mut Framer, want: u8) -> Vec<u8> {
    let mut types = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(f) = framer.next_frame().expect("listener frames are valid") {
            types.push(f.kind);
            if f.kind == want {
                return types;
            }
        }
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 {
            return types;
        }
        framer.push(&buf[..n]);
    }
}

/// A scripted peer: OPEN exchange, then `messages`, then read until the listener closes; returns
/// every message type the listener sent.
async fn peer(addr: SocketAddr, caps: Vec<u8>, messages: Vec<Vec<u8>>) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut framer = Framer::new();
    s.write_all(&open_with(65001, 90, [127, 0, 0, 1], &caps))
        .await
        .expect("write");
    let mut types = read_types(&mut s, &mut framer, 4).await;
    s.write_all(&keepalive()).await.expect("write");
    for m in messages {
        s.write_all(&m).await.expect("write");
    }
    types.extend(read_types(&mut s, &mut framer, 3).await);
    types
}

fn opts(graceful_restart: bool) -> WatchOptions {
    let mut cfg = SessionConfig::new(
        65002,
        65001,
        "198.18.0.2".parse().expect("id"),
        "127.0.0.1".parse().expect("peer"),
    );
    cfg.graceful_restart = graceful_restart;
    WatchOptions {
        session: cfg,
        format: Format::Jsonl,
        exit_on_eor: true,
        quiet_period: Duration::from_millis(500),
        transport: Default::default(),
    }
}

/// The JSON lines `watch` printed. Each must be exactly what serde_json writes for its value
/// (sorted keys, serde_json's number and string forms), as the reference `event_json` gives:
/// `watch` writes its lines by hand (`event_jsonl`).
fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            assert_eq!(v.to_string(), l, "not serde_json's form of its value");
            v
        })
        .collect()
}

#[tokio::test]
async fn watch_exits_after_end_of_rib_for_every_family_and_sends_only_open_keepalive_notification()
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let msgs = vec![
        update(
            &[],
            &base_attrs(&[65001], [127, 0, 0, 1]),
            &[24, 198, 19, 1, 24, 198, 19, 2],
        ),
        update(&[], &[], &[]),
        update(&[], &mp_unreach_v6(&[]), &[]),
    ];
    let p = tokio::spawn(peer(addr, full_caps(65001), msgs));
    let mut out = Vec::new();
    let rule = tokio::time::timeout(
        Duration::from_secs(10),
        watch(
            opts(true),
            Connection::Passive(l),
            &mut out,
            std::future::pending(),
        ),
    )
    .await
    .expect("in time")
    .expect("watch");
    assert_eq!(rule, Some(DoneRule::EndOfRib));
    let sent = p.await.expect("peer");
    assert_eq!(sent, vec![1, 4, 3], "OPEN, KEEPALIVE, Cease");
    let ev = lines(&out);
    let last = ev.last().expect("lines");
    assert_eq!(last["type"], "transfer_complete");
    assert_eq!(last["rule"], "end-of-rib");
    assert_eq!(
        last["prefixes"],
        serde_json::json!({"ipv4-unicast": 2, "ipv6-unicast": 0})
    );
    assert_eq!(ev.iter().filter(|e| e["type"] == "announce").count(), 2);
}

#[tokio::test]
async fn without_graceful_restart_the_quiet_period_ends_the_transfer() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let msgs = vec![update(
        &[],
        &base_attrs(&[65001], [127, 0, 0, 1]),
        &[24, 198, 19, 1],
    )];
    let p = tokio::spawn(peer(addr, full_caps(65001), msgs));
    let mut out = Vec::new();
    let rule = tokio::time::timeout(
        Duration::from_secs(10),
        watch(
            opts(false),
            Connection::Passive(l),
            &mut out,
            std::future::pending(),
        ),
    )
    .await
    .expect("in time")
    .expect("watch");
    assert_eq!(rule, Some(DoneRule::QuietPeriod));
    let _ = p.await;
    let last = lines(&out).pop().expect("lines");
    assert_eq!(last["rule"], "quiet-period");
    assert_eq!(last["prefixes"]["ipv4-unicast"], 1);
}

#[tokio::test]
async fn a_connection_from_another_address_is_closed_unanswered() {
    // The listener is bound on 127.0.0.1 but configured for peer 127.0.0.2: our connection from
    // 127.0.0.1 must be closed without an OPEN.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut o = opts(true);
    o.session.peer = "127.0.0.2".parse().expect("ip");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let w = tokio::spawn(async move {
        let mut out = Vec::new();
        let r = watch(o, Connection::Passive(l), &mut out, async {
            let _ = stop_rx.await;
        })
        .await;
        (r.map_err(|e| e.to_string()), out)
    });
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "no bytes (no OPEN) to a stranger");
    let _ = stop_tx.send(());
    let (r, out) = w.await.expect("join");
    assert_eq!(r, Ok(None));
    assert!(out.is_empty());
}

#[tokio::test]
async fn text_and_summary_formats_print_readable_lines_and_the_same_final_rule() {
    for format in [Format::Text, Format::Summary] {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let msgs = vec![
            update(
                &[],
                &base_attrs(&[65001, 65010], [127, 0, 0, 1]),
                &[24, 198, 19, 1],
            ),
            update(&[], &[], &[]),
            update(&[], &mp_unreach_v6(&[]), &[]),
        ];
        let p = tokio::spawn(peer(addr, full_caps(65001), msgs));
        let mut o = opts(true);
        o.format = format;
        let mut out = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            watch(o, Connection::Passive(l), &mut out, std::future::pending()),
        )
        .await
        .expect("in time")
        .expect("watch");
        let _ = p.await;
        let text = String::from_utf8_lossy(&out);
        let last = text.lines().last().expect("lines");
        assert!(
            last.starts_with(
                "transfer complete by end-of-rib: prefixes ipv4-unicast 1, ipv6-unicast 0;"
            ),
            "{format:?}: {last}"
        );
        assert!(text.contains("session Established"), "{text}");
        if format == Format::Text {
            assert!(
                text.contains("+ 198.19.1.0/24 via 127.0.0.1 path [65001 65010]"),
                "{text}"
            );
            assert!(text.contains("ipv6-unicast End-of-RIB"), "{text}");
        }
    }
}

/// Summary lines: `PEER STATE v4 N v6 M updates/s U routes/s R`, as fields.
fn summary_lines(out: &[u8]) -> Vec<(String, u64, u64, f64, f64)> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [
                    "127.0.0.1",
                    state,
                    "v4",
                    v4,
                    "v6",
                    v6,
                    "updates/s",
                    u,
                    "routes/s",
                    r,
                ] => Some((
                    (*state).to_owned(),
                    v4.parse().expect("v4"),
                    v6.parse().expect("v6"),
                    u.parse().expect("updates/s"),
                    r.parse().expect("routes/s"),
                )),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test]
async fn summary_prints_a_line_per_second_with_counts_update_messages_and_route_events() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    // 10 UPDATEs of 10 IPv4 prefixes each and one IPv6 UPDATE: 11 messages, 101 routes.
    let mut msgs: Vec<Vec<u8>> = (0..10u8)
        .map(|i| {
            let nlri: Vec<u8> = (0..10u8).flat_map(|j| [24, 198, 19, i * 10 + j]).collect();
            update(
                &[],
                &base_attrs(&[65001, 65010 + u32::from(i)], [127, 0, 0, 1]),
                &nlri,
            )
        })
        .collect();
    let mut nh = [0u8; 16];
    nh[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    nh[15] = 1;
    let mut v6 = base_attrs(&[65001], [127, 0, 0, 1]);
    v6.extend(mp_reach_v6(nh, &[32, 0x20, 0x01, 0x0d, 0xb8]));
    msgs.push(update(&[], &v6, &[]));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let p = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut framer = Framer::new();
        s.write_all(&open_with(65001, 90, [127, 0, 0, 1], &full_caps(65001)))
            .await
            .expect("write");
        read_types(&mut s, &mut framer, 4).await;
        s.write_all(&keepalive()).await.expect("write");
        for m in msgs {
            s.write_all(&m).await.expect("write");
        }
        // Quiet for a few summary periods (no End-of-RIB: the session stays up), then stop.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let _ = stop_tx.send(());
        s
    });
    let mut o = opts(true);
    o.format = Format::Summary;
    o.exit_on_eor = false;
    let mut out = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        watch(o, Connection::Passive(l), &mut out, async {
            let _ = stop_rx.await;
        }),
    )
    .await
    .expect("in time")
    .expect("watch");
    let _s = p.await.expect("peer");
    let lines = summary_lines(&out);
    let text = String::from_utf8_lossy(&out);
    assert!(lines.len() >= 2, "a line per second over 3.5 s: {text}");
    let (updates, routes) = lines
        .iter()
        .fold((0.0, 0.0), |(u, r), l| (u + l.3, r + l.4));
    assert!(updates >= 1.0, "UPDATE messages counted: {text}");
    // 101 routes in 11 messages: a rate of messages, not of prefixes.
    assert!(routes > 5.0 * updates, "{text}");
    let last = lines.last().expect("line");
    assert_eq!(
        last,
        &("established".to_owned(), 100, 1, 0.0, 0.0),
        "the quiet last second: {text}"
    );
}

#[tokio::test]
async fn without_a_router_id_the_open_carries_the_connections_local_ipv4() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut o = opts(true);
    // What `watch --listen 0.0.0.0` without --router-id configures.
    o.session.router_id = std::net::Ipv4Addr::UNSPECIFIED;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let w = tokio::spawn(async move {
        let mut out = Vec::new();
        watch(o, Connection::Passive(l), &mut out, async {
            let _ = stop_rx.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut framer = Framer::new();
    let mut buf = [0u8; 4096];
    let open = loop {
        if let Some(f) = framer.next_frame().expect("valid") {
            break f;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("OPEN in time")
            .expect("read");
        assert!(n > 0, "closed before an OPEN");
        framer.push(&buf[..n]);
    };
    assert_eq!(open.kind, 1);
    // Version, My AS, Hold Time, then the BGP Identifier.
    assert_eq!(open.body.get(5..9), Some(&[127, 0, 0, 1][..]));
    let _ = stop_tx.send(());
    assert_eq!(w.await.expect("join"), Ok(None));
}
