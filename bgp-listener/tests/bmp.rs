//! BMP station on hand-built messages: every message type, the per-peer flags, framing errors,
//! RFC 7606 outcomes inside Route Monitoring, a random-input loop, and the tokio side on loopback.

mod common;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use common::{attr, base_attrs, mp_reach_v6, msg, open_with, update};
use foureyes_bgp_listener::bmp::{Input, MAX_MESSAGE_LEN, Output, Station};
use foureyes_bgp_listener::event::{
    BmpView, DownReason, Event, Peer, RouteChange, SessionEvent, Source,
};
use foureyes_bgp_listener::wire::{Family, Notification};

const ROUTER: &str = "192.0.2.1";
const PEER: &str = "198.18.0.1";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn bmp_msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![3];
    v.extend_from_slice(&u32::try_from(6 + body.len()).expect("len").to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

#[derive(Clone, Copy)]
struct Hdr {
    peer_type: u8,
    flags: u8,
    rd: u64,
    addr: IpAddr,
    asn: u32,
    secs: u32,
    micros: u32,
}

fn hdr() -> Hdr {
    Hdr {
        peer_type: 0,
        flags: 0,
        rd: 0,
        addr: ip(PEER),
        asn: 65001,
        secs: 1_700_000_000,
        micros: 250_000,
    }
}

impl Hdr {
    fn flags(self, flags: u8) -> Self {
        Hdr { flags, ..self }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = vec![self.peer_type, self.flags];
        v.extend_from_slice(&self.rd.to_be_bytes());
        match self.addr {
            IpAddr::V4(a) => {
                v.extend_from_slice(&[0; 12]);
                v.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => v.extend_from_slice(&a.octets()),
        }
        v.extend_from_slice(&self.asn.to_be_bytes());
        v.extend_from_slice(&[198, 18, 0, 1]);
        v.extend_from_slice(&self.secs.to_be_bytes());
        v.extend_from_slice(&self.micros.to_be_bytes());
        assert_eq!(v.len(), 42);
        v
    }
}

fn tlv(t: u16, v: &[u8]) -> Vec<u8> {
    let mut b = t.to_be_bytes().to_vec();
    b.extend_from_slice(&u16::try_from(v.len()).expect("len").to_be_bytes());
    b.extend_from_slice(v);
    b
}

fn initiation() -> Vec<u8> {
    let mut b = tlv(2, b"edge1");
    b.extend(tlv(1, b"Test Router OS 1.0"));
    bmp_msg(4, &b)
}

/// MP v4+v6, 4-octet AS, ADD-PATH for IPv4 with the given Send/Receive value.
fn caps(asn: u32, add_path_v4: Option<u8>) -> Vec<u8> {
    let mut c = vec![1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1, 65, 4];
    c.extend_from_slice(&asn.to_be_bytes());
    if let Some(sr) = add_path_v4 {
        c.extend_from_slice(&[69, 4, 0, 1, 1, sr]);
    }
    c
}

/// Peer Up: the router (AS 65010) sent `sent`, and received `received` from the peer.
fn peer_up_with(h: Hdr, sent: &[u8], received: &[u8]) -> Vec<u8> {
    let mut b = h.bytes();
    b.extend_from_slice(&[0; 12]);
    b.extend_from_slice(&[192, 0, 2, 1]);
    b.extend_from_slice(&179u16.to_be_bytes());
    b.extend_from_slice(&50000u16.to_be_bytes());
    b.extend_from_slice(sent);
    b.extend_from_slice(received);
    b.extend(tlv(0, b"info"));
    bmp_msg(3, &b)
}

fn peer_up(h: Hdr) -> Vec<u8> {
    peer_up_with(
        h,
        &open_with(65010, 90, [192, 0, 2, 1], &caps(65010, Some(1))),
        &open_with(65001, 90, [198, 18, 0, 1], &caps(65001, Some(2))),
    )
}

fn route_monitoring(h: Hdr, bgp: &[u8]) -> Vec<u8> {
    let mut b = h.bytes();
    b.extend_from_slice(bgp);
    bmp_msg(0, &b)
}

fn peer_down(h: Hdr, reason: u8, data: &[u8]) -> Vec<u8> {
    let mut b = h.bytes();
    b.push(reason);
    b.extend_from_slice(data);
    bmp_msg(2, &b)
}

/// With ADD-PATH (IPv4): path id, length, prefix.
fn nlri_path(id: u32, len: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.push(len);
    v.extend_from_slice(bytes);
    v
}

fn feed(st: &mut Station, bytes: Vec<u8>) -> Vec<Output> {
    st.handle(now(), Input::Received(bytes))
}

fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            Output::Close(_) => None,
        })
        .collect()
}

fn bmp_peer(view: BmpView) -> Peer {
    Peer {
        addr: ip(PEER),
        asn: 65001,
        source: Source::Bmp {
            router: ip(ROUTER),
            view,
            distinguisher: 0,
        },
    }
}

fn up_station() -> Station {
    let mut st = Station::new(ip(ROUTER));
    assert!(feed(&mut st, initiation()).is_empty());
    assert_eq!(st.info().sys_name.as_deref(), Some("edge1"));
    assert_eq!(st.info().sys_descr.as_deref(), Some("Test Router OS 1.0"));
    feed(&mut st, peer_up(hdr()));
    st
}

#[test]
fn peer_up_emits_established_with_what_the_two_opens_negotiated() {
    let mut st = Station::new(ip(ROUTER));
    feed(&mut st, initiation());
    let ev = events(&feed(&mut st, peer_up(hdr())));
    let [
        Event::Session(SessionEvent::Established {
            peer, negotiated, ..
        }),
    ] = ev.as_slice()
    else {
        panic!("one Established: {ev:?}");
    };
    assert_eq!(*peer, bmp_peer(BmpView::PrePolicy));
    assert_eq!(negotiated.peer_as, 65001);
    assert!(negotiated.four_octet_as);
    assert_eq!(negotiated.families, Family::ALL.to_vec());
    assert_eq!(
        negotiated.add_path,
        vec![Family::Ipv4Unicast],
        "peer sends (2), router receives (1)"
    );

    // The router advertises send only: no ADD-PATH on what it receives.
    let mut st = Station::new(ip(ROUTER));
    let ev = events(&feed(
        &mut st,
        peer_up_with(
            hdr(),
            &open_with(65010, 90, [192, 0, 2, 1], &caps(65010, Some(2))),
            &open_with(65001, 90, [198, 18, 0, 1], &caps(65001, Some(2))),
        ),
    ));
    let Some(Event::Session(SessionEvent::Established { negotiated, .. })) = ev.first() else {
        panic!("{ev:?}");
    };
    assert!(negotiated.add_path.is_empty());
}

#[test]
fn route_monitoring_announces_changes_and_withdraws_per_view_with_the_header_time() {
    let mut st = up_station();
    let nlri = nlri_path(7, 24, &[198, 19, 1]);
    let ev = events(&feed(
        &mut st,
        route_monitoring(
            hdr(),
            &update(&[], &base_attrs(&[65001], [198, 18, 0, 1]), &nlri),
        ),
    ));
    let [Event::Route(r)] = ev.as_slice() else {
        panic!("{ev:?}");
    };
    assert_eq!(r.peer, bmp_peer(BmpView::PrePolicy));
    assert_eq!(r.path_id, Some(7), "ADD-PATH from the Peer Up OPENs");
    assert_eq!(
        r.source_time,
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250))
    );
    assert_eq!(r.received, now());
    let RouteChange::Announce { prefix, route } = &r.change else {
        panic!("{r:?}");
    };
    assert_eq!(prefix.to_string(), "198.19.1.0/24");
    assert_eq!(route.attrs.as_path_string(), "65001");
    assert_eq!(route.next_hop, Some(ip("198.18.0.1")));

    // Post-policy (L flag): its first message brings the view up, then the route.
    let post = hdr().flags(0x40);
    let ev = events(&feed(
        &mut st,
        route_monitoring(
            post,
            &update(&[], &base_attrs(&[65001], [198, 18, 0, 1]), &nlri),
        ),
    ));
    assert!(
        matches!(&ev[..], [Event::Session(SessionEvent::Established { peer, .. }), Event::Route(r)]
            if *peer == bmp_peer(BmpView::PostPolicy) && r.peer == bmp_peer(BmpView::PostPolicy)),
        "{ev:?}"
    );

    // Attribute change in pre-policy only.
    let ev = events(&feed(
        &mut st,
        route_monitoring(
            hdr(),
            &update(&[], &base_attrs(&[65001, 65100], [198, 18, 0, 1]), &nlri),
        ),
    ));
    assert!(
        matches!(&ev[..], [Event::Route(r)] if matches!(&r.change, RouteChange::AttributeChange { changed, .. } if changed.iter().map(|c| c.name()).collect::<Vec<_>>() == ["as_path"])),
        "{ev:?}"
    );
    assert_eq!(st.routes(ip(PEER), BmpView::PrePolicy), 1);
    assert_eq!(st.routes(ip(PEER), BmpView::PostPolicy), 1);

    // Withdraw.
    let ev = events(&feed(
        &mut st,
        route_monitoring(hdr(), &update(&nlri, &[], &[])),
    ));
    assert!(
        matches!(&ev[..], [Event::Route(r)] if matches!(r.change, RouteChange::Withdraw { .. })),
        "{ev:?}"
    );
    assert_eq!(st.routes(ip(PEER), BmpView::PrePolicy), 0);
}

#[test]
fn a_flag_means_two_octet_as_path_and_v_flag_an_ipv6_peer() {
    let mut st = Station::new(ip(ROUTER));
    let h = Hdr {
        addr: ip("2001:db8::1"),
        flags: 0x80 | 0x20,
        secs: 0,
        micros: 0,
        ..hdr()
    };
    let mut a = attr(0x40, 1, &[0]);
    a.extend(attr(0x40, 2, &[2, 2, 0xfd, 0xe9, 0x01, 0x02]));
    a.extend(mp_reach_v6(
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .octets(),
        &[48, 0x20, 0x01, 0x0d, 0xb8, 0, 9],
    ));
    let ev = events(&feed(&mut st, route_monitoring(h, &update(&[], &a, &[]))));
    let route = ev
        .iter()
        .find_map(|e| match e {
            Event::Route(r) => Some(r),
            _ => None,
        })
        .expect("a route (accepted without Peer Up)");
    assert_eq!(route.peer.addr, ip("2001:db8::1"));
    assert_eq!(route.source_time, None, "zero timestamp means unknown");
    assert_eq!(route.family, Family::Ipv6Unicast);
    let RouteChange::Announce { prefix, route } = &route.change else {
        panic!()
    };
    assert_eq!(prefix.to_string(), "2001:db8:9::/48");
    assert_eq!(route.attrs.as_path_string(), "65001 258");
    assert_eq!(st.counters().without_peer_up, 1);
}

#[test]
fn loc_rib_peer_type_is_its_own_view_and_adj_rib_out_is_skipped() {
    let mut st = up_station();
    // RFC 9069: peer type 3, no address, A flag meaningless (always 4-octet).
    let loc = Hdr {
        peer_type: 3,
        flags: 0x20,
        addr: ip("0.0.0.0"),
        asn: 65010,
        ..hdr()
    };
    let ev = events(&feed(
        &mut st,
        route_monitoring(
            loc,
            &update(
                &[],
                &base_attrs(&[65001], [198, 18, 0, 1]),
                &[24, 198, 19, 5],
            ),
        ),
    ));
    assert!(
        matches!(&ev[..], [Event::Session(SessionEvent::Established { .. }), Event::Route(r)]
            if r.peer.source == Source::Bmp { router: ip(ROUTER), view: BmpView::LocRib, distinguisher: 0 }
               && matches!(&r.change, RouteChange::Announce { route, .. } if route.attrs.as_path_string() == "65001")),
        "{ev:?}"
    );
    // RFC 8671 Adj-RIB-Out (O flag): skipped and counted.
    let ev = events(&feed(
        &mut st,
        route_monitoring(
            hdr().flags(0x10),
            &update(
                &[],
                &base_attrs(&[65010, 65001], [192, 0, 2, 1]),
                &[24, 198, 19, 6],
            ),
        ),
    ));
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(st.counters().adj_rib_out_skipped, 1);
}

#[test]
fn peer_down_maps_reasons_and_reports_routes_lost_per_view() {
    let mut st = up_station();
    let nlri = nlri_path(1, 24, &[198, 19, 1]);
    let nlri2 = nlri_path(1, 24, &[198, 19, 2]);
    let attrs = base_attrs(&[65001], [198, 18, 0, 1]);
    feed(
        &mut st,
        route_monitoring(hdr(), &update(&[], &attrs, &[nlri.clone(), nlri2].concat())),
    );
    feed(
        &mut st,
        route_monitoring(hdr().flags(0x40), &update(&[], &attrs, &nlri)),
    );
    let notif = msg(3, &[6, 2]);
    let ev = events(&feed(&mut st, peer_down(hdr(), 3, &notif)));
    assert_eq!(ev.len(), 2, "{ev:?}");
    let mut lost = Vec::new();
    for e in &ev {
        let Event::Session(SessionEvent::Down {
            peer,
            reason,
            routes_lost,
            ..
        }) = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(*reason, DownReason::Received(Notification::new(6, 2)));
        lost.push((peer.source, *routes_lost));
    }
    assert!(
        lost.contains(&(bmp_peer(BmpView::PrePolicy).source, 2)),
        "{lost:?}"
    );
    assert!(
        lost.contains(&(bmp_peer(BmpView::PostPolicy).source, 1)),
        "{lost:?}"
    );
    assert_eq!(st.peer_count(), 0);

    // Local close with a NOTIFICATION, and without one (FSM event code).
    feed(&mut st, peer_up(hdr()));
    let ev = events(&feed(&mut st, peer_down(hdr(), 1, &msg(3, &[4, 0]))));
    assert!(
        matches!(&ev[..], [Event::Session(SessionEvent::Down { reason: DownReason::Sent(n), routes_lost: 0, .. })] if *n == Notification::new(4, 0)),
        "{ev:?}"
    );
    feed(&mut st, peer_up(hdr()));
    let ev = events(&feed(&mut st, peer_down(hdr(), 2, &[0, 18])));
    assert!(
        matches!(&ev[..], [Event::Session(SessionEvent::Down { reason: DownReason::Reported(s), .. })] if s.contains("FSM event 18")),
        "{ev:?}"
    );
    feed(&mut st, peer_up(hdr()));
    let ev = events(&feed(&mut st, peer_down(hdr(), 5, &[])));
    assert!(
        matches!(&ev[..], [Event::Session(SessionEvent::Down { reason: DownReason::Reported(s), .. })] if s.contains("de-configured")),
        "{ev:?}"
    );
}

#[test]
fn statistics_report_decodes_known_counters_and_keeps_unknown_ones() {
    let mut st = up_station();
    let mut b = hdr().bytes();
    b.extend_from_slice(&4u32.to_be_bytes());
    b.extend(tlv(0, &17u32.to_be_bytes()));
    b.extend(tlv(7, &1234u64.to_be_bytes()));
    let mut per_afi = vec![0, 2, 1];
    per_afi.extend_from_slice(&99u64.to_be_bytes());
    b.extend(tlv(9, &per_afi));
    b.extend(tlv(4242, &[1, 2, 3]));
    let ev = events(&feed(&mut st, bmp_msg(1, &b)));
    let [
        Event::Session(SessionEvent::Statistics {
            peer,
            stats,
            source_time,
            ..
        }),
    ] = ev.as_slice()
    else {
        panic!("{ev:?}");
    };
    assert_eq!(*peer, bmp_peer(BmpView::PrePolicy));
    assert!(source_time.is_some());
    assert_eq!(stats.len(), 4);
    assert_eq!((stats[0].stat_type, stats[0].value), (0, Some(17)));
    assert_eq!((stats[1].stat_type, stats[1].value), (7, Some(1234)));
    assert_eq!(stats[2].afi_safi, Some((2, 1)));
    assert_eq!(stats[2].value, Some(99));
    assert_eq!(stats[3].value, None);
    assert_eq!(stats[3].raw, vec![1, 2, 3]);
    let json = foureyes_bgp_listener::watch::event_json(&ev[0]);
    assert_eq!(json["type"], "statistics");
    assert_eq!(json["stats"][1]["name"], "adj_rib_in_routes");
    assert_eq!(json["stats"][3]["raw"], "010203");
}

#[test]
fn route_mirroring_and_unknown_types_are_skipped_and_counted() {
    let mut st = up_station();
    let mut b = hdr().bytes();
    b.extend(tlv(0, &update(&[], &[], &[])));
    assert!(feed(&mut st, bmp_msg(6, &b)).is_empty());
    assert!(feed(&mut st, bmp_msg(42, &[1, 2, 3])).is_empty());
    assert_eq!(st.counters().route_mirroring_skipped, 1);
    assert_eq!(st.counters().unknown_type_skipped, 1);
    assert!(!st.is_closed());
}

#[test]
fn termination_and_connection_end_take_every_peer_down() {
    let mut st = up_station();
    let other = Hdr {
        addr: ip("198.18.0.9"),
        asn: 65009,
        ..hdr()
    };
    feed(&mut st, peer_up(other));
    feed(
        &mut st,
        route_monitoring(
            other,
            &update(
                &[],
                &base_attrs(&[65009], [198, 18, 0, 9]),
                &nlri_path(1, 24, &[198, 19, 9]),
            ),
        ),
    );
    let out = feed(
        &mut st,
        bmp_msg(5, &[tlv(0, b"bye"), tlv(1, &[0, 0])].concat()),
    );
    let downs: Vec<(IpAddr, usize)> = events(&out)
        .iter()
        .map(|e| match e {
            Event::Session(SessionEvent::Down {
                peer, routes_lost, ..
            }) => (peer.addr, *routes_lost),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(downs, vec![(ip(PEER), 0), (ip("198.18.0.9"), 1)]);
    assert!(
        matches!(out.last(), Some(Output::Close(why)) if why.contains("administratively closed"))
    );
    assert!(st.is_closed());
    assert!(
        feed(&mut st, peer_up(hdr())).is_empty(),
        "nothing after close"
    );

    let mut st = up_station();
    let ev = events(&st.handle(now(), Input::Closed));
    assert!(
        matches!(
            &ev[..],
            [Event::Session(SessionEvent::Down {
                reason: DownReason::Reported(_),
                ..
            })]
        ),
        "{ev:?}"
    );
}

#[test]
fn framing_errors_close_the_connection_with_a_clear_reason() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("version 1", vec![1, 0, 0, 0, 6, 4], "version 1"),
        ("length 5", vec![3, 0, 0, 0, 5, 4], "length 5"),
        (
            "length above 1 MiB",
            {
                let mut v = vec![3];
                v.extend_from_slice(
                    &u32::try_from(MAX_MESSAGE_LEN + 1)
                        .expect("len")
                        .to_be_bytes(),
                );
                v.push(0);
                v
            },
            "1048577",
        ),
        (
            "length u32::MAX",
            vec![3, 0xff, 0xff, 0xff, 0xff, 0],
            "4294967295",
        ),
    ];
    for (name, bytes, want) in cases {
        let mut st = up_station();
        let out = feed(&mut st, bytes);
        assert!(
            matches!(out.last(), Some(Output::Close(why)) if why.contains(want)),
            "{name}: {out:?}"
        );
        assert!(
            events(&out)
                .iter()
                .any(|e| matches!(e, Event::Session(SessionEvent::Down { .. }))),
            "{name}: peers reported down"
        );
        assert!(st.is_closed(), "{name}");
    }
    // A message cut into single bytes still frames.
    let mut st = Station::new(ip(ROUTER));
    let mut all = Vec::new();
    for b in [initiation(), peer_up(hdr())].concat() {
        all.extend(events(&feed(&mut st, vec![b])));
    }
    assert_eq!(all.len(), 1);
}

#[test]
fn rfc7606_inside_route_monitoring_is_applied_and_a_session_reset_class_error_is_dropped() {
    let mut st = up_station();
    let nlri = nlri_path(1, 24, &[198, 19, 1]);
    feed(
        &mut st,
        route_monitoring(
            hdr(),
            &update(&[], &base_attrs(&[65001], [198, 18, 0, 1]), &nlri),
        ),
    );
    // Malformed ORIGIN: treat-as-withdraw.
    let mut a = attr(0x40, 1, &[7]);
    a.extend(base_attrs(&[65001], [198, 18, 0, 1]).split_off(4));
    let ev = events(&feed(
        &mut st,
        route_monitoring(hdr(), &update(&[], &a, &nlri)),
    ));
    assert!(
        matches!(&ev[..], [Event::Session(SessionEvent::UpdateError { .. }), Event::Route(r)] if matches!(r.change, RouteChange::Withdraw { .. })),
        "{ev:?}"
    );
    // Bad NLRI (prefix length 33): session-reset class; dropped, counted, the feed goes on.
    let ev = events(&feed(
        &mut st,
        route_monitoring(
            hdr(),
            &update(
                &[],
                &base_attrs(&[65001], [198, 18, 0, 1]),
                &nlri_path(1, 33, &[1, 2, 3, 4, 5]),
            ),
        ),
    ));
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(st.counters().session_reset_class, 1);
    assert!(!st.is_closed());
    // A broken BGP header inside Route Monitoring is dropped too.
    let mut bad = update(&[], &[], &[]);
    bad[3] = 0;
    assert!(events(&feed(&mut st, route_monitoring(hdr(), &bad))).is_empty());
    assert_eq!(st.counters().malformed_dropped, 2);
    let ev = events(&feed(
        &mut st,
        route_monitoring(
            hdr(),
            &update(&[], &base_attrs(&[65001], [198, 18, 0, 1]), &nlri),
        ),
    ));
    assert_eq!(ev.len(), 1, "still decoding: {ev:?}");
}

#[test]
fn truncated_bodies_of_every_type_are_dropped_without_closing() {
    for kind in 0..=6u8 {
        if kind == 5 {
            continue; // Termination closes whatever its body holds.
        }
        let mut st = up_station();
        for cut in [0usize, 1, 10, 41, 42, 43, 60] {
            let body: Vec<u8> = peer_up(hdr())[6..].iter().copied().take(cut).collect();
            let _ = feed(&mut st, bmp_msg(kind, &body));
        }
        assert!(!st.is_closed(), "type {kind}");
    }
}

/// A small xorshift generator: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<Vec<u8>> = vec![
        initiation(),
        peer_up(hdr()),
        route_monitoring(
            hdr(),
            &update(
                &[],
                &base_attrs(&[65001], [198, 18, 0, 1]),
                &nlri_path(1, 24, &[198, 19, 1]),
            ),
        ),
        peer_down(hdr(), 3, &msg(3, &[6, 2])),
        bmp_msg(5, &tlv(1, &[0, 1])),
    ];
    for _ in 0..20_000 {
        let mut st = Station::new(ip(ROUTER));
        let mut stream = Vec::new();
        for _ in 0..(rng.next() % 4 + 1) {
            let mut m = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
            for _ in 0..(rng.next() % 4) {
                let i = (rng.next() % m.len() as u64) as usize;
                m[i] = rng.next() as u8;
            }
            if rng.next().is_multiple_of(5) {
                m.truncate((rng.next() % m.len() as u64) as usize);
            }
            stream.extend(m);
        }
        if rng.next().is_multiple_of(10) {
            stream = (0..rng.next() % 200).map(|_| rng.next() as u8).collect();
        }
        let step = (rng.next() % 64 + 1) as usize;
        for chunk in stream.chunks(step) {
            let _ = st.handle(now(), Input::Received(chunk.to_vec()));
        }
        let _ = st.handle(now(), Input::Closed);
    }
}

async fn recv(rx: &mut tokio::sync::mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("event in time")
        .expect("channel open")
}

/// The tokio side on loopback: an allowed router's feed becomes events; the station never writes;
/// a router that is not allowed is closed without events; the end of the feed takes peers down.
#[tokio::test]
async fn station_run_accepts_only_allowed_routers_and_never_writes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{mpsc, watch};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, mut rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(foureyes_bgp_listener::bmp_station::run(
        listener,
        vec![ip("127.0.0.1")],
        tx,
        stop_rx,
    ));
    let mut router = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let feed = [
        initiation(),
        peer_up(hdr()),
        route_monitoring(
            hdr(),
            &update(
                &[],
                &base_attrs(&[65001], [198, 18, 0, 1]),
                &nlri_path(1, 24, &[198, 19, 1]),
            ),
        ),
    ]
    .concat();
    router.write_all(&feed).await.expect("write");
    let e1 = recv(&mut rx).await;
    assert!(
        matches!(e1, Event::Session(SessionEvent::Established { peer, .. }) if peer.source == Source::Bmp { router: ip("127.0.0.1"), view: BmpView::PrePolicy, distinguisher: 0 })
    );
    assert!(matches!(recv(&mut rx).await, Event::Route(_)));
    // The station's end of the connection runs TCP keepalive (a router that vanishes without a
    // FIN is noticed): the kernel shows its timer.
    let local = router.local_addr().expect("local addr");
    let ss = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!(
            "( sport = :{} and dport = :{} )",
            addr.port(),
            local.port()
        ))
        .output()
        .expect("ss (iproute2)");
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert!(
        ss.contains("timer:(keepalive"),
        "no keepalive on the station's socket: {ss:?}"
    );
    // The router half-closes: the station has written nothing, and reports the peer down.
    router.shutdown().await.expect("shutdown");
    let e3 = recv(&mut rx).await;
    assert!(
        matches!(
            e3,
            Event::Session(SessionEvent::Down { routes_lost: 1, .. })
        ),
        "{e3:?}"
    );
    let mut got = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(30), router.read_to_end(&mut got))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(n, 0, "the station sent bytes to the router: {got:?}");

    stop_tx.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("run ends")
        .expect("join")
        .expect("run ok");

    // Not on the allow list: closed at once, no events.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, mut rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(foureyes_bgp_listener::bmp_station::run(
        listener,
        vec![ip("192.0.2.99")],
        tx,
        stop_rx,
    ));
    let mut router = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = router.write_all(&feed).await;
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(30), router.read_to_end(&mut got))
        .await
        .expect("refused in time");
    assert!(got.is_empty(), "{r:?}");
    stop_tx.send(true).expect("stop");
    task.await.expect("join").expect("run ok");
    assert!(rx.recv().await.is_none(), "no events from a refused router");
}

#[test]
fn a_late_peer_up_completes_a_peer_known_from_route_monitoring() {
    let mut st = Station::new(ip(ROUTER));
    let attrs = base_attrs(&[65001], [198, 18, 0, 1]);
    let ev = events(&feed(
        &mut st,
        route_monitoring(hdr(), &update(&[], &attrs, &[24, 198, 19, 1])),
    ));
    assert_eq!(ev.len(), 2, "Established + announce: {ev:?}");
    let ev = events(&feed(&mut st, peer_up(hdr())));
    assert!(ev.is_empty(), "no Down and no second Established: {ev:?}");
    assert_eq!(st.routes(ip(PEER), BmpView::PrePolicy), 1);
    // From now on the OPENs apply: ADD-PATH path ids are read.
    let ev = events(&feed(
        &mut st,
        route_monitoring(
            hdr(),
            &update(&[], &attrs, &nlri_path(9, 24, &[198, 19, 2])),
        ),
    ));
    assert!(
        matches!(&ev[..], [Event::Route(r)] if r.path_id == Some(9)),
        "{ev:?}"
    );
}

#[test]
fn summary_counts_prefixes_per_router_peer_and_view() {
    use foureyes_bgp_listener::bmp::RouterInfo;
    use foureyes_bgp_listener::bmp_station::Summary;
    let mut st = up_station();
    let mut sum = Summary::default();
    let attrs = base_attrs(&[65001], [198, 18, 0, 1]);
    let nlri = [
        nlri_path(1, 24, &[198, 19, 1]),
        nlri_path(1, 24, &[198, 19, 2]),
    ]
    .concat();
    for e in events(&feed(
        &mut st,
        route_monitoring(hdr(), &update(&[], &attrs, &nlri)),
    ))
    .iter()
    .chain(
        events(&feed(
            &mut st,
            route_monitoring(hdr(), &update(&nlri_path(1, 24, &[198, 19, 2]), &[], &[])),
        ))
        .iter(),
    ) {
        sum.on_event(e);
    }
    let mut names = std::collections::HashMap::new();
    names.insert(
        ip(ROUTER),
        RouterInfo {
            sys_name: Some("edge1".into()),
            ..RouterInfo::default()
        },
    );
    assert_eq!(
        sum.lines(&names),
        vec![format!(
            "router {ROUTER} (edge1) peer {PEER} AS65001 pre-policy down v4 1 v6 0 events 3"
        )],
        "no Established seen by the summary yet, so the state is down"
    );
    for e in events(&st.handle(now(), Input::Closed)) {
        sum.on_event(&e);
    }
    assert!(sum.lines(&names)[0].contains("down v4 0 v6 0"));
}

/// A router that reconnects replaces its previous connection: the old one is closed (its peers
/// reported down) and the new one is served; Initiation names are published.
#[tokio::test]
async fn a_reconnecting_router_replaces_its_previous_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{mpsc, watch};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, mut rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let names = foureyes_bgp_listener::bmp_station::RouterNames::default();
    let task = tokio::spawn(foureyes_bgp_listener::bmp_station::run_with_names(
        listener,
        vec![ip("127.0.0.1")],
        tx,
        stop_rx,
        std::sync::Arc::clone(&names),
    ));
    let mut first = tokio::net::TcpStream::connect(addr).await.expect("connect");
    first
        .write_all(&[initiation(), peer_up(hdr())].concat())
        .await
        .expect("write");
    assert!(matches!(
        recv(&mut rx).await,
        Event::Session(SessionEvent::Established { .. })
    ));
    let name = names
        .lock()
        .expect("names")
        .get(&ip("127.0.0.1"))
        .and_then(|i| i.sys_name.clone());
    assert_eq!(name.as_deref(), Some("edge1"));

    let mut second = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let down = recv(&mut rx).await;
    assert!(
        matches!(
            &down,
            Event::Session(SessionEvent::Down {
                reason: DownReason::Reported(_),
                ..
            })
        ),
        "{down:?}"
    );
    let mut got = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(30), first.read_to_end(&mut got))
        .await
        .expect("old connection closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    second.write_all(&peer_up(hdr())).await.expect("write");
    assert!(matches!(
        recv(&mut rx).await,
        Event::Session(SessionEvent::Established { .. })
    ));

    stop_tx.send(true).expect("stop");
    assert!(
        matches!(
            recv(&mut rx).await,
            Event::Session(SessionEvent::Down { .. })
        ),
        "stop takes peers down"
    );
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("run ends")
        .expect("join")
        .expect("run ok");
}

/// A resync request makes each router connection send a snapshot of every table it holds: per
/// family, begin, each route (with its ADD-PATH id), end with the count; nothing to the router,
/// and the live feed goes on after it.
#[tokio::test]
async fn a_resync_request_snapshots_every_bmp_table() {
    use foureyes_bgp_listener::event::ResyncMark;
    use foureyes_bgp_listener::resync::StationResync;
    use tokio::io::AsyncWriteExt;
    use tokio::sync::{mpsc, watch};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, mut rx) = mpsc::channel(16);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let (req_tx, req_rx) = watch::channel(0u64);
    let held = foureyes_bgp_listener::resync::Held::default();
    let task = tokio::spawn(foureyes_bgp_listener::bmp_station::run_resyncing(
        listener,
        vec![ip("127.0.0.1")],
        tx,
        stop_rx,
        Default::default(),
        Some(StationResync {
            requests: req_rx,
            held: held.clone(),
        }),
    ));
    let mut router = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let announce = |id: u32, b: u8| {
        route_monitoring(
            hdr(),
            &update(
                &[],
                &base_attrs(&[65001], [198, 18, 0, 1]),
                &nlri_path(id, 24, &[198, 19, b]),
            ),
        )
    };
    let feed = [initiation(), peer_up(hdr()), announce(1, 1), announce(2, 2)].concat();
    router.write_all(&feed).await.expect("write");
    for _ in 0..3 {
        recv(&mut rx).await;
    }
    // The station reports what it holds, for sizing snapshots.
    for _ in 0..100 {
        let n: usize = held
            .lock()
            .expect("lock")
            .values()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        if n == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(held.lock().expect("lock").contains_key("bmp 127.0.0.1"));

    req_tx.send(1).expect("request");
    // First the router's peer set: the one peer (pre-policy view) it monitors.
    let Event::Route(r) = recv(&mut rx).await else {
        panic!("the peer set first");
    };
    let RouteChange::Resync(ResyncMark::Peers(set)) = r.change else {
        panic!("{r:?}");
    };
    let foureyes_bgp_listener::event::PeerSet::BmpRouter {
        router: r_addr,
        peers,
    } = *set
    else {
        panic!("{set:?}");
    };
    assert_eq!(r_addr, ip("127.0.0.1"));
    assert_eq!(peers.len(), 1, "{peers:?}");
    let mut got = Vec::new();
    for _ in 0..7 {
        let Event::Route(r) = recv(&mut rx).await else {
            panic!("only snapshot events expected");
        };
        assert_eq!(
            r.peer.source,
            Source::Bmp {
                router: ip("127.0.0.1"),
                view: BmpView::PrePolicy,
                distinguisher: 0
            }
        );
        let RouteChange::Resync(m) = r.change else {
            panic!("{r:?}");
        };
        got.push((r.family, r.path_id, m));
    }
    let marks: Vec<String> = got
        .iter()
        .map(|(f, id, m)| match m {
            ResyncMark::Begin => format!("{f} begin"),
            ResyncMark::Route { prefix, .. } => format!("{f} {prefix} {id:?}"),
            ResyncMark::End { routes } => format!("{f} end {routes}"),
            ResyncMark::Session(s) => format!("session up {} routes {}", s.up.is_some(), s.routes),
            ResyncMark::Peers(_) => "peers".into(),
        })
        .collect();
    assert_eq!(
        marks,
        vec![
            "session up true routes 2",
            "ipv4-unicast begin",
            "ipv4-unicast 198.19.1.0/24 Some(1)",
            "ipv4-unicast 198.19.2.0/24 Some(2)",
            "ipv4-unicast end 2",
            "ipv6-unicast begin",
            "ipv6-unicast end 0",
        ]
    );
    // The feed goes on after the snapshot.
    router.write_all(&announce(3, 3)).await.expect("write");
    let Event::Route(r) = recv(&mut rx).await else {
        panic!("a route event");
    };
    assert!(matches!(r.change, RouteChange::Announce { .. }), "{r:?}");
    task.abort();
}

/// A router that negotiated Extended Messages (RFC 8654) with its peer forwards UPDATEs longer
/// than 4096 octets in Route Monitoring; the station must decode them, not drop them as malformed.
#[test]
fn route_monitoring_carries_extended_message_updates_beyond_4096_octets() {
    let mut st = up_station();
    let nlri: Vec<u8> = (0..1100u32)
        .flat_map(|i| {
            let [_, _, b, c] = i.to_be_bytes();
            nlri_path(1, 24, &[10, b, c])
        })
        .collect();
    let pdu = update(&[], &base_attrs(&[65001], [198, 18, 0, 1]), &nlri);
    assert!(pdu.len() > 4096, "{} octets", pdu.len());
    let ev = events(&feed(&mut st, route_monitoring(hdr(), &pdu)));
    let announced = ev
        .iter()
        .filter(
            |e| matches!(e, Event::Route(r) if matches!(r.change, RouteChange::Announce { .. })),
        )
        .count();
    assert_eq!(announced, 1100, "{:?}", ev.first());
    assert_eq!(st.routes(ip(PEER), BmpView::PrePolicy), 1100);
}
