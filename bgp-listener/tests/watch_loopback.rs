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
