//! The tokio driver on loopback against a scripted peer (no root): it keeps accepting while a
//! session is up, so a second connection from the peer is a contender. A graceful-restart peer
//! that reconnects replaces its old session (RFC 4724 §4.2: routes go stale, one Down event, the
//! End-of-RIB of the new session sweeps what was not re-announced); without graceful restart the
//! new connection gets a Cease 6/7 and the old session carries on (RFC 4271 §6.8). Also the
//! active (dialling) mode and its redial.

mod common;

use std::time::Duration;

use common::*;
use foureyes_bgp_listener::driver::{self, Connection};
use foureyes_bgp_listener::event::{DownReason, Event, RouteChange, SessionEvent};
use foureyes_bgp_listener::session::SessionConfig;
use foureyes_bgp_listener::wire::{Family, Framer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

const WAIT: Duration = Duration::from_secs(20);

/// MP v4, 4-octet AS 65001, and graceful restart with the F bit for IPv4 when `gr`.
fn caps(gr: bool) -> Vec<u8> {
    let mut c = vec![1, 4, 0, 1, 0, 1, 65, 4];
    c.extend_from_slice(&65001u32.to_be_bytes());
    if gr {
        c.extend_from_slice(&[64, 6, 0, 120, 0, 1, 1, 0x80]);
    }
    c
}

/// Reads messages until one of type `want` arrives; returns the types seen (empty on close).
async fn read_until(s: &mut TcpStream, framer: &mut Framer, want: u8) -> Vec<(u8, Vec<u8>)> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(f) = framer.next_frame().expect("valid frames") {
            let done = f.kind == want;
            seen.push((f.kind, f.body));
            if done {
                return seen;
            }
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("peer read in time")
            .unwrap_or(0);
        if n == 0 {
            return seen;
        }
        framer.push(&buf[..n]);
    }
}

/// Connects, exchanges OPEN/KEEPALIVE, and returns the stream.
async fn open_session(addr: std::net::SocketAddr, gr: bool) -> (TcpStream, Framer) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut f = Framer::new();
    s.write_all(&open_with(65001, 90, [127, 0, 0, 1], &caps(gr)))
        .await
        .expect("write");
    let seen = read_until(&mut s, &mut f, 4).await;
    assert_eq!(
        seen.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![1, 4],
        "OPEN then KEEPALIVE"
    );
    s.write_all(&keepalive()).await.expect("write");
    (s, f)
}

async fn next_event(rx: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("event in time")
        .expect("driver alive")
}

/// Skips events until one matches.
async fn wait_for(rx: &mut mpsc::Receiver<Event>, what: &str, f: impl Fn(&Event) -> bool) -> Event {
    loop {
        let ev = next_event(rx).await;
        if f(&ev) {
            return ev;
        }
        assert!(
            !matches!(ev, Event::Session(SessionEvent::Down { .. })),
            "unexpected Down while waiting for {what}: {ev:?}"
        );
    }
}

fn start(
    conn: Connection,
) -> (
    mpsc::Receiver<Event>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), driver::DriverError>>,
) {
    let cfg = SessionConfig::new(
        65002,
        65001,
        "198.18.0.2".parse().expect("id"),
        "127.0.0.1".parse().expect("peer"),
    );
    let (tx, rx) = mpsc::channel(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(driver::run(cfg, conn, tx, stop_rx));
    (rx, stop_tx, task)
}

fn is_established(e: &Event) -> bool {
    matches!(e, Event::Session(SessionEvent::Established { .. }))
}

#[tokio::test]
async fn a_restarted_gr_peer_reconnecting_replaces_its_session_and_end_of_rib_sweeps_the_rest() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (mut rx, stop, task) = start(Connection::Passive(l));

    let (mut a, mut fa) = open_session(addr, true).await;
    wait_for(&mut rx, "Established", is_established).await;
    a.write_all(&update(
        &[],
        &base_attrs(&[65001], [127, 0, 0, 1]),
        &[24, 198, 19, 1, 24, 198, 19, 2],
    ))
    .await
    .expect("write");
    for _ in 0..2 {
        let ev = wait_for(&mut rx, "announce", |e| matches!(e, Event::Route(_))).await;
        assert!(matches!(ev, Event::Route(r) if matches!(r.change, RouteChange::Announce { .. })));
    }

    // The peer "restarts": a new connection while the old one is still open.
    let (mut b, _fb) = open_session(addr, true).await;
    let down = next_event(&mut rx).await;
    let Event::Session(SessionEvent::Down {
        reason,
        routes_lost,
        routes_stale,
        ..
    }) = &down
    else {
        panic!("want Down first, got {down:?}");
    };
    assert_eq!(*reason, DownReason::PeerRestarted);
    assert_eq!(
        (*routes_lost, *routes_stale),
        (0, 2),
        "one Down, both routes kept stale"
    );
    // The old connection is closed by the listener, without a NOTIFICATION.
    let rest = read_until(&mut a, &mut fa, 3).await;
    assert!(
        rest.iter().all(|(k, _)| *k == 4),
        "only KEEPALIVEs on the old connection, then close: {rest:?}"
    );
    wait_for(&mut rx, "Established again", is_established).await;

    // Re-announce one of the two, then End-of-RIB: the other is withdrawn, then End-of-RIB.
    b.write_all(&update(
        &[],
        &base_attrs(&[65001], [127, 0, 0, 1]),
        &[24, 198, 19, 1],
    ))
    .await
    .expect("write");
    b.write_all(&update(&[], &[], &[])).await.expect("write");
    let ev = wait_for(&mut rx, "withdraw", |e| matches!(e, Event::Route(_))).await;
    let Event::Route(r) = ev else { unreachable!() };
    assert!(
        matches!(&r.change, RouteChange::Withdraw { prefix, .. } if prefix.to_string() == "198.19.2.0/24"),
        "the stale route not re-announced is withdrawn, the re-announced one is silent: {r:?}"
    );
    let ev = next_event(&mut rx).await;
    assert!(
        matches!(&ev, Event::Route(r) if r.change == RouteChange::EndOfRib && r.family == Family::Ipv4Unicast),
        "{ev:?}"
    );
    let _ = stop.send(true);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("driver ends")
        .expect("join")
        .expect("driver ok");
}

#[tokio::test]
async fn without_graceful_restart_a_second_connection_gets_cease_7_and_the_session_carries_on() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (mut rx, stop, task) = start(Connection::Passive(l));
    let (mut a, _fa) = open_session(addr, false).await;
    wait_for(&mut rx, "Established", is_established).await;

    let mut b = TcpStream::connect(addr).await.expect("connect");
    let mut fb = Framer::new();
    b.write_all(&open_with(65001, 90, [127, 0, 0, 1], &caps(false)))
        .await
        .expect("write");
    let seen = read_until(&mut b, &mut fb, 3).await;
    let kinds: Vec<u8> = seen.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, vec![1, 3], "our OPEN, then a NOTIFICATION");
    assert_eq!(
        seen[1].1,
        vec![6, 7],
        "Cease, connection collision resolution"
    );
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, b.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the new connection is closed");

    // The first session still works.
    a.write_all(&update(
        &[],
        &base_attrs(&[65001], [127, 0, 0, 1]),
        &[24, 198, 19, 7],
    ))
    .await
    .expect("write");
    let ev = wait_for(&mut rx, "announce", |e| matches!(e, Event::Route(_))).await;
    assert!(
        matches!(&ev, Event::Route(r) if matches!(&r.change, RouteChange::Announce { prefix, .. } if prefix.to_string() == "198.19.7.0/24"))
    );
    let _ = stop.send(true);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("driver ends")
        .expect("join")
        .expect("driver ok");
}

#[tokio::test]
async fn active_mode_dials_and_dials_again_after_the_peer_closes() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let remote = l.local_addr().expect("addr");
    let (mut rx, stop, task) = start(Connection::Active {
        remote,
        retry: Duration::from_millis(200),
    });
    for round in 0..2 {
        let (mut s, _) = tokio::time::timeout(WAIT, l.accept())
            .await
            .expect("dialled in time")
            .expect("accept");
        let mut f = Framer::new();
        s.write_all(&open_with(65001, 90, [127, 0, 0, 1], &caps(true)))
            .await
            .expect("write");
        read_until(&mut s, &mut f, 4).await;
        s.write_all(&keepalive()).await.expect("write");
        wait_for(&mut rx, "Established", is_established).await;
        drop(s);
        let ev = next_event(&mut rx).await;
        assert!(
            matches!(
                &ev,
                Event::Session(SessionEvent::Down {
                    reason: DownReason::ConnectionClosed,
                    ..
                })
            ),
            "round {round}: {ev:?}"
        );
    }
    let _ = stop.send(true);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("driver ends")
        .expect("join")
        .expect("driver ok");
}
