//! The sans-IO session: OPEN negotiation, the FSM, errors → NOTIFICATION, UPDATE → events.
//! No sockets, no clock: time is an argument.

mod common;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use common::*;
use foureyes_bgp_listener::event::{AttrKind, DownReason, Event, RouteChange, SessionEvent};
use foureyes_bgp_listener::session::{Input, Output, Session, SessionConfig, State, Timer};
use foureyes_bgp_listener::update::Rfc7606Action;
use foureyes_bgp_listener::wire::{Family, Notification, Outgoing};

const PEER_AS: u32 = 65001;
const LOCAL_AS: u32 = 65002;

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn cfg() -> SessionConfig {
    SessionConfig::new(
        LOCAL_AS,
        PEER_AS,
        "198.18.0.2".parse().expect("id"),
        "198.18.0.1".parse().expect("peer"),
    )
}

fn sent(out: &[Output]) -> Vec<Outgoing> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn notification(out: &[Output]) -> Option<Notification> {
    sent(out).into_iter().find_map(|m| match m {
        Outgoing::Notification(n) => Some(n),
        _ => None,
    })
}

fn established(cfg: SessionConfig, caps: &[u8]) -> Session {
    let mut s = Session::new(cfg);
    s.handle(t(0), Input::Connected);
    s.handle(
        t(0),
        Input::Received(open_with(PEER_AS as u16, 90, [198, 18, 0, 1], caps)),
    );
    let out = s.handle(t(1), Input::Received(keepalive()));
    assert_eq!(s.state(), State::Established);
    assert!(matches!(
        events(&out).as_slice(),
        [Event::Session(SessionEvent::Established { .. })]
    ));
    s
}

#[test]
fn connect_sends_open_then_keepalive_and_reaches_established() {
    let mut s = Session::new(cfg());
    let out = s.handle(t(0), Input::Connected);
    assert!(
        matches!(sent(&out).as_slice(), [Outgoing::Open(o)] if o.local_as == LOCAL_AS && o.hold_time == 90)
    );
    assert!(out.contains(&Output::SetTimer(
        Timer::Hold,
        Some(Duration::from_secs(240))
    )));
    assert_eq!(s.state(), State::OpenSent);

    let out = s.handle(
        t(0),
        Input::Received(open_with(
            PEER_AS as u16,
            30,
            [198, 18, 0, 1],
            &full_caps(PEER_AS),
        )),
    );
    assert_eq!(sent(&out), vec![Outgoing::Keepalive]);
    assert!(
        out.contains(&Output::SetTimer(
            Timer::Hold,
            Some(Duration::from_secs(30))
        )),
        "min(90, 30)"
    );
    assert!(out.contains(&Output::SetTimer(
        Timer::Keepalive,
        Some(Duration::from_secs(10))
    )));
    assert_eq!(s.state(), State::OpenConfirm);

    let out = s.handle(t(1), Input::Received(keepalive()));
    let ev = events(&out);
    let [Event::Session(SessionEvent::Established { negotiated, at, .. })] = ev.as_slice() else {
        panic!("want Established, got {ev:?}");
    };
    assert_eq!(*at, t(1));
    assert_eq!(negotiated.hold_time, 30);
    assert_eq!(
        negotiated.families,
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
    );
    assert!(negotiated.four_octet_as);
    assert!(negotiated.graceful_restart);

    // Keepalive timer → KEEPALIVE and re-arm.
    let out = s.handle(t(11), Input::TimerFired(Timer::Keepalive));
    assert_eq!(sent(&out), vec![Outgoing::Keepalive]);
    assert!(out.contains(&Output::SetTimer(
        Timer::Keepalive,
        Some(Duration::from_secs(10))
    )));
}

#[test]
fn a_peer_without_multiprotocol_gets_ipv4_only_and_no_graceful_restart() {
    let s = established(cfg(), &[]);
    let n = s.negotiated().expect("negotiated");
    assert_eq!(n.families, vec![Family::Ipv4Unicast]);
    assert!(!n.four_octet_as);
    assert!(!n.graceful_restart);
}

#[test]
fn graceful_restart_can_be_switched_off() {
    let mut c = cfg();
    c.graceful_restart = false;
    let mut s = Session::new(c);
    let out = s.handle(t(0), Input::Connected);
    let msgs = sent(&out);
    let [Outgoing::Open(o)] = msgs.as_slice() else {
        panic!("one OPEN")
    };
    assert_eq!(o.capabilities.graceful_restart_time, None);
    let s = established(
        {
            let mut c = cfg();
            c.graceful_restart = false;
            c
        },
        &full_caps(PEER_AS),
    );
    assert!(!s.negotiated().expect("n").graceful_restart);
}

fn open_error(open: Vec<u8>) -> (Notification, Session) {
    let mut s = Session::new(cfg());
    s.handle(t(0), Input::Connected);
    let out = s.handle(t(0), Input::Received(open));
    assert!(out.contains(&Output::Close));
    assert_eq!(s.state(), State::Idle);
    (notification(&out).expect("a NOTIFICATION"), s)
}

#[test]
fn open_errors_send_the_right_notification() {
    let (n, _) = open_error(open_with(65099, 90, [1, 1, 1, 1], &[]));
    assert_eq!(n, Notification::new(2, 2), "bad peer AS");
    let (n, _) = open_error(open_with(23456, 90, [1, 1, 1, 1], &{
        let mut c = vec![65, 4];
        c.extend_from_slice(&4_200_000_000u32.to_be_bytes());
        c
    }));
    assert_eq!(
        n,
        Notification::new(2, 2),
        "4-octet AS from the capability is checked"
    );
    let (n, _) = open_error(open_with(PEER_AS as u16, 2, [1, 1, 1, 1], &[]));
    assert_eq!(n, Notification::new(2, 6), "hold time 2");
    let (n, _) = open_error(open_with(PEER_AS as u16, 90, [0, 0, 0, 0], &[]));
    assert_eq!(n, Notification::new(2, 3), "identifier 0");
    let mut v3 = open_with(PEER_AS as u16, 90, [1, 1, 1, 1], &[]);
    v3[19] = 3;
    let (n, _) = open_error(v3);
    assert_eq!(n, Notification::with_data(2, 1, vec![0, 4]), "version");
}

#[test]
fn hold_time_zero_means_no_timers() {
    let mut s = Session::new(cfg());
    s.handle(t(0), Input::Connected);
    let out = s.handle(
        t(0),
        Input::Received(open_with(PEER_AS as u16, 0, [1, 1, 1, 1], &[])),
    );
    assert!(out.contains(&Output::SetTimer(Timer::Hold, None)));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::SetTimer(Timer::Keepalive, Some(_))))
    );
}

#[test]
fn header_errors_in_a_session_send_the_header_notification_and_close() {
    let mut s = established(cfg(), &full_caps(PEER_AS));
    let mut bad = keepalive();
    bad[3] = 0;
    let out = s.handle(t(2), Input::Received(bad));
    assert_eq!(notification(&out), Some(Notification::new(1, 1)));
    assert!(out.contains(&Output::Close));
    let mut s = established(cfg(), &full_caps(PEER_AS));
    let out = s.handle(t(2), Input::Received(msg(7, &[])));
    assert_eq!(
        notification(&out),
        Some(Notification::with_data(1, 3, vec![7]))
    );
}

#[test]
fn hold_timer_expiry_sends_4_0_and_reports_the_loss() {
    let mut s = established(cfg(), &full_caps(PEER_AS));
    s.handle(
        t(2),
        Input::Received(update(
            &[],
            &base_attrs(&[65001], [198, 18, 0, 1]),
            &[24, 10, 0, 0, 24, 10, 0, 1],
        )),
    );
    assert_eq!(s.rib().len(), 2);
    let out = s.handle(t(100), Input::TimerFired(Timer::Hold));
    assert_eq!(notification(&out), Some(Notification::new(4, 0)));
    assert!(out.contains(&Output::Close));
    let ev = events(&out);
    assert!(
        matches!(ev.as_slice(), [Event::Session(SessionEvent::Down { routes_lost: 2, reason: DownReason::Sent(n), .. })] if n.code == 4),
        "{ev:?}"
    );
    assert!(s.rib().is_empty());
}

#[test]
fn unexpected_messages_are_fsm_errors_with_rfc6608_subcodes() {
    let mut s = Session::new(cfg());
    s.handle(t(0), Input::Connected);
    let out = s.handle(t(0), Input::Received(keepalive()));
    assert_eq!(
        notification(&out),
        Some(Notification::new(5, 1)),
        "KEEPALIVE in OpenSent"
    );
    let mut s = established(cfg(), &full_caps(PEER_AS));
    let out = s.handle(
        t(2),
        Input::Received(open_with(PEER_AS as u16, 90, [1, 1, 1, 1], &[])),
    );
    assert_eq!(
        notification(&out),
        Some(Notification::new(5, 3)),
        "OPEN in Established"
    );
}

#[test]
fn a_peer_notification_or_close_ends_the_session_without_answering() {
    let mut s = established(cfg(), &full_caps(PEER_AS));
    let out = s.handle(t(2), Input::Received(msg(3, &[6, 2])));
    assert!(sent(&out).is_empty());
    assert!(
        matches!(events(&out).as_slice(), [Event::Session(SessionEvent::Down { reason: DownReason::Received(n), .. })] if *n == Notification::new(6, 2))
    );
    let mut s = established(cfg(), &full_caps(PEER_AS));
    let out = s.handle(t(2), Input::Closed);
    assert!(matches!(
        events(&out).as_slice(),
        [Event::Session(SessionEvent::Down {
            reason: DownReason::ConnectionClosed,
            ..
        })]
    ));
    // And the session can start again.
    let out = s.handle(t(3), Input::Connected);
    assert!(matches!(sent(&out).as_slice(), [Outgoing::Open(_)]));
}

#[test]
fn stop_sends_cease_administrative_shutdown() {
    let mut s = established(cfg(), &full_caps(PEER_AS));
    let out = s.handle(t(2), Input::Stop);
    assert_eq!(notification(&out), Some(Notification::new(6, 2)));
}

fn route_changes(out: &[Output]) -> Vec<(Family, RouteChange)> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            Event::Route(r) => {
                assert_eq!(
                    r.peer,
                    foureyes_bgp_listener::event::Peer::session(
                        "198.18.0.1".parse::<IpAddr>().expect("ip"),
                        65001
                    )
                );
                assert_eq!(r.path_id, None);
                Some((r.family, r.change))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn updates_become_announce_change_withdraw_and_end_of_rib_events() {
    let mut s = established(cfg(), &full_caps(PEER_AS));
    // Announce 10.0.0.0/24 and 10.0.1.0/24 with communities and large communities.
    let mut attrs = base_attrs(&[65001, 65010], [198, 18, 0, 1]);
    attrs.extend(attr(0xc0, 8, &[0xfd, 0xe9, 0, 1]));
    attrs.extend(attr(0xc0, 32, &[0, 0, 0xfd, 0xe9, 0, 0, 0, 1, 0, 0, 0, 2]));
    attrs.extend(attr(0x80, 4, &[0, 0, 0, 5]));
    let out = s.handle(
        t(5),
        Input::Received(update(&[], &attrs, &[24, 10, 0, 0, 24, 10, 0, 1])),
    );
    let ch = route_changes(&out);
    assert_eq!(ch.len(), 2);
    let (fam, RouteChange::Announce { prefix, route }) = &ch[0] else {
        panic!("{ch:?}")
    };
    assert_eq!(*fam, Family::Ipv4Unicast);
    assert_eq!(prefix.to_string(), "10.0.0.0/24");
    assert_eq!(route.next_hop, Some("198.18.0.1".parse().expect("ip")));
    assert_eq!(route.attrs.as_path_string(), "65001 65010");
    assert_eq!(route.attrs.communities, vec![0xfde9_0001]);
    assert_eq!(route.attrs.large_communities, vec![[65001, 1, 2]]);
    assert_eq!(route.attrs.med, Some(5));
    let Some(Event::Route(r)) = events(&out).into_iter().next() else {
        panic!()
    };
    assert_eq!(r.received, t(5));

    // Same prefix, new AS path and community: attribute change naming both.
    let mut attrs2 = base_attrs(&[65001, 65020], [198, 18, 0, 1]);
    attrs2.extend(attr(0xc0, 8, &[0xfd, 0xe9, 0, 2]));
    attrs2.extend(attr(0xc0, 32, &[0, 0, 0xfd, 0xe9, 0, 0, 0, 1, 0, 0, 0, 2]));
    attrs2.extend(attr(0x80, 4, &[0, 0, 0, 5]));
    let out = s.handle(t(6), Input::Received(update(&[], &attrs2, &[24, 10, 0, 0])));
    let ch = route_changes(&out);
    let [(_, RouteChange::AttributeChange { changed, .. })] = ch.as_slice() else {
        panic!("{ch:?}")
    };
    assert_eq!(
        changed.iter().collect::<Vec<_>>(),
        [AttrKind::AsPath, AttrKind::Communities]
    );

    // Identical re-announcement: no event.
    let out = s.handle(t(7), Input::Received(update(&[], &attrs2, &[24, 10, 0, 0])));
    assert!(route_changes(&out).is_empty());

    // Withdraw one; withdrawing an unknown prefix is silent.
    let out = s.handle(
        t(8),
        Input::Received(update(&[24, 10, 0, 1, 24, 10, 9, 9], &[], &[])),
    );
    let ch = route_changes(&out);
    assert!(
        matches!(ch.as_slice(), [(Family::Ipv4Unicast, RouteChange::Withdraw { prefix, .. })] if prefix.to_string() == "10.0.1.0/24")
    );

    // IPv6 via MP_REACH, then MP_UNREACH, then End-of-RIB for both families.
    let mut nh = [0u8; 16];
    nh[0] = 0x20;
    nh[1] = 0x01;
    nh[2] = 0;
    nh[3] = 2;
    nh[15] = 1;
    let mut a6 = attr(0x40, 1, &[0]);
    a6.extend(as_path4(&[65001]));
    a6.extend(mp_reach_v6(nh, &[48, 0x20, 0x01, 0, 2, 0, 1]));
    let out = s.handle(t(9), Input::Received(update(&[], &a6, &[])));
    let ch = route_changes(&out);
    let [(Family::Ipv6Unicast, RouteChange::Announce { prefix, route })] = ch.as_slice() else {
        panic!("{ch:?}")
    };
    assert_eq!(prefix.to_string(), "2001:2:1::/48");
    assert_eq!(route.next_hop, Some("2001:2::1".parse().expect("ip")));
    let out = s.handle(
        t(10),
        Input::Received(update(
            &[],
            &mp_unreach_v6(&[48, 0x20, 0x01, 0, 2, 0, 1]),
            &[],
        )),
    );
    assert!(matches!(
        route_changes(&out).as_slice(),
        [(Family::Ipv6Unicast, RouteChange::Withdraw { .. })]
    ));
    let out = s.handle(t(11), Input::Received(update(&[], &[], &[])));
    assert_eq!(
        route_changes(&out),
        vec![(Family::Ipv4Unicast, RouteChange::EndOfRib)]
    );
    let out = s.handle(
        t(11),
        Input::Received(update(&[], &mp_unreach_v6(&[]), &[])),
    );
    assert_eq!(
        route_changes(&out),
        vec![(Family::Ipv6Unicast, RouteChange::EndOfRib)]
    );
    assert_eq!(s.rib().count(Family::Ipv4Unicast), 1);
}

/// The attributes of the held route in the one-kind-at-a-time test: ORIGIN, AS_PATH, NEXT_HOP,
/// EXTENDED_COMMUNITIES and LARGE_COMMUNITIES from the arguments, a fixed MED and COMMUNITIES.
fn one_kind_attrs(origin: u8, nh: [u8; 4], ext: [u8; 8], large: [u32; 3]) -> Vec<u8> {
    let mut a = attr(0x40, 1, &[origin]);
    a.extend(as_path4(&[65001, 65010]));
    a.extend(attr(0x40, 3, &nh));
    a.extend(attr(0x80, 4, &[0, 0, 0, 5]));
    a.extend(attr(0xc0, 8, &[0xfd, 0xe9, 0, 1]));
    a.extend(attr(0xc0, 16, &ext));
    let large: Vec<u8> = large.iter().flat_map(|v| v.to_be_bytes()).collect();
    a.extend(attr(0xc0, 32, &large));
    a
}

/// Each of origin, next hop, extended communities and large communities changed alone on a held
/// route gives one attribute change naming exactly that kind, with the old and new values; an
/// identical re-announcement after each gives nothing.
#[test]
fn each_attribute_kind_changed_alone_is_an_attribute_change_naming_only_that_kind() {
    let mut s = established(cfg(), &full_caps(PEER_AS));
    let nlri = [24, 10, 0, 0];
    let rt_7 = [0, 2, 0xfd, 0xe9, 0, 0, 0, 7];
    let rt_8 = [0, 2, 0xfd, 0xe9, 0, 0, 0, 8];
    let nh1 = [198, 18, 0, 1];
    let nh3 = [198, 18, 0, 3];
    let first = one_kind_attrs(0, nh1, rt_7, [65001, 1, 2]);
    let out = s.handle(t(5), Input::Received(update(&[], &first, &nlri)));
    let ch = route_changes(&out);
    let [(Family::Ipv4Unicast, RouteChange::Announce { route, .. })] = ch.as_slice() else {
        panic!("{ch:?}")
    };
    assert_eq!(route.attrs.origin, Some(0));
    assert_eq!(route.attrs.extended_communities, vec![rt_7]);
    assert_eq!(route.attrs.large_communities, vec![[65001, 1, 2]]);

    // (what changes, the attributes after the change, a check of the old and new route)
    type Check = fn(&foureyes_bgp_listener::event::Route, &foureyes_bgp_listener::event::Route);
    let steps: [(AttrKind, Vec<u8>, Check); 4] = [
        (
            AttrKind::Origin,
            one_kind_attrs(2, nh1, rt_7, [65001, 1, 2]),
            |old, new| {
                assert_eq!((old.attrs.origin, new.attrs.origin), (Some(0), Some(2)));
            },
        ),
        (
            AttrKind::NextHop,
            one_kind_attrs(2, nh3, rt_7, [65001, 1, 2]),
            |old, new| {
                assert_eq!(old.next_hop, Some("198.18.0.1".parse().expect("ip")));
                assert_eq!(new.next_hop, Some("198.18.0.3".parse().expect("ip")));
            },
        ),
        (
            AttrKind::ExtendedCommunities,
            one_kind_attrs(2, nh3, rt_8, [65001, 1, 2]),
            |old, new| {
                assert_eq!(
                    old.attrs.extended_communities,
                    vec![[0, 2, 0xfd, 0xe9, 0, 0, 0, 7]]
                );
                assert_eq!(
                    new.attrs.extended_communities,
                    vec![[0, 2, 0xfd, 0xe9, 0, 0, 0, 8]]
                );
            },
        ),
        (
            AttrKind::LargeCommunities,
            one_kind_attrs(2, nh3, rt_8, [65001, 1, 3]),
            |old, new| {
                assert_eq!(old.attrs.large_communities, vec![[65001, 1, 2]]);
                assert_eq!(new.attrs.large_communities, vec![[65001, 1, 3]]);
            },
        ),
    ];
    let mut at = 6;
    for (kind, attrs, check) in steps {
        let out = s.handle(t(at), Input::Received(update(&[], &attrs, &nlri)));
        let ch = route_changes(&out);
        let [
            (
                Family::Ipv4Unicast,
                RouteChange::AttributeChange {
                    prefix,
                    previous,
                    route,
                    changed,
                },
            ),
        ] = ch.as_slice()
        else {
            panic!("{kind:?}: want one attribute change, got {ch:?}")
        };
        assert_eq!(prefix.to_string(), "10.0.0.0/24");
        assert_eq!(
            changed.iter().collect::<Vec<_>>(),
            [kind],
            "{kind:?} changed alone"
        );
        check(previous, route);
        // The same attributes again: the route is as held, no event.
        let out = s.handle(t(at + 1), Input::Received(update(&[], &attrs, &nlri)));
        assert_eq!(
            route_changes(&out),
            vec![],
            "{kind:?}: identical re-announce"
        );
        at += 2;
    }
    assert_eq!(s.rib().count(Family::Ipv4Unicast), 1);
}

#[test]
fn rfc7606_outcomes_keep_the_session_up_or_reset_it_where_required() {
    let nlri = [24, 10, 0, 0];
    let mut s = established(cfg(), &full_caps(PEER_AS));
    s.handle(
        t(2),
        Input::Received(update(&[], &base_attrs(&[65001], [198, 18, 0, 1]), &nlri)),
    );
    assert_eq!(s.rib().len(), 1);

    // Malformed COMMUNITIES (length 3) → treat-as-withdraw, session stays up.
    let mut a = base_attrs(&[65001], [198, 18, 0, 1]);
    a.extend(attr(0xc0, 8, &[1, 2, 3]));
    let out = s.handle(t(3), Input::Received(update(&[], &a, &nlri)));
    assert!(notification(&out).is_none());
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::Session(SessionEvent::UpdateError {
            action: Rfc7606Action::TreatAsWithdraw {
                type_code: Some(8),
                ..
            },
            ..
        })
    )));
    assert!(matches!(
        route_changes(&out).as_slice(),
        [(_, RouteChange::Withdraw { .. })]
    ));
    assert_eq!(s.state(), State::Established);

    // AS 0 in AS_PATH (RFC 7607) → treat-as-withdraw.
    let out = s.handle(
        t(4),
        Input::Received(update(
            &[],
            &base_attrs(&[65001, 0], [198, 18, 0, 1]),
            &nlri,
        )),
    );
    assert!(notification(&out).is_none());
    assert!(
        route_changes(&out).is_empty(),
        "nothing held, nothing announced"
    );
    assert_eq!(s.rib().len(), 0);

    // Malformed ATOMIC_AGGREGATE (length 1) → attribute discard, route kept.
    let mut a = base_attrs(&[65001], [198, 18, 0, 1]);
    a.extend(attr(0x40, 6, &[1]));
    let out = s.handle(t(5), Input::Received(update(&[], &a, &nlri)));
    assert!(matches!(
        route_changes(&out).as_slice(),
        [(_, RouteChange::Announce { .. })]
    ));
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::Session(SessionEvent::UpdateError {
            action: Rfc7606Action::AttributeDiscard { type_code: 6, .. },
            ..
        })
    )));

    // Malformed Tunnel Encapsulation (23, the CVE-2023-38802 attribute) is kept opaque: no reset.
    let mut a = base_attrs(&[65001], [198, 18, 0, 1]);
    a.extend(attr(0xc0, 23, &[0, 1, 0xff]));
    let out = s.handle(t(6), Input::Received(update(&[], &a, &nlri)));
    assert!(notification(&out).is_none());
    assert_eq!(s.state(), State::Established);

    // Missing NEXT_HOP with NLRI → treat-as-withdraw.
    let mut a = attr(0x40, 1, &[0]);
    a.extend(as_path4(&[65001]));
    let out = s.handle(t(7), Input::Received(update(&[], &a, &nlri)));
    assert!(notification(&out).is_none());
    assert_eq!(s.rib().len(), 0);

    // Attribute length overrunning the attribute section → treat-as-withdraw.
    let mut a = base_attrs(&[65001], [198, 18, 0, 1]);
    a.extend([0xc0, 8, 200, 0, 0]);
    let out = s.handle(t(8), Input::Received(update(&[], &a, &nlri)));
    assert!(notification(&out).is_none());

    // Session resets: withdrawn length overrun (3/1), bad NLRI length (3/10), malformed
    // MP_REACH (3/9), unrecognized well-known attribute (3/2).
    let mut body = update(&[], &[], &[]);
    body[19] = 0;
    body[20] = 9; // withdrawn length 9 > message
    let mut s2 = established(cfg(), &full_caps(PEER_AS));
    assert_eq!(
        notification(&s2.handle(t(9), Input::Received(body))),
        Some(Notification::new(3, 1))
    );
    let mut s2 = established(cfg(), &full_caps(PEER_AS));
    let out = s2.handle(
        t(9),
        Input::Received(update(
            &[],
            &base_attrs(&[65001], [1, 1, 1, 1]),
            &[33, 10, 0, 0, 0, 0],
        )),
    );
    assert_eq!(notification(&out), Some(Notification::new(3, 10)));
    // MP_REACH too short to name its family: nothing to disable, so a reset.
    let mut s2 = established(cfg(), &full_caps(PEER_AS));
    let out = s2.handle(
        t(9),
        Input::Received(update(&[], &attr(0x80, 14, &[0, 2]), &[])),
    );
    assert_eq!(notification(&out), Some(Notification::new(3, 9)));
    // A known family whose next hop cannot be read: AFI/SAFI disable, no reset (RFC 4760 §7).
    let mut s2 = established(cfg(), &full_caps(PEER_AS));
    let out = s2.handle(
        t(9),
        Input::Received(update(&[], &attr(0x80, 14, &[0, 2, 1, 3, 0, 0, 0, 0]), &[])),
    );
    assert!(notification(&out).is_none());
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(Event::Session(SessionEvent::StaleDropped {
            family: Family::Ipv6Unicast,
            reason: foureyes_bgp_listener::event::StaleDropReason::AfiSafiDisabled,
            ..
        }))
    )));
    let mut s2 = established(cfg(), &full_caps(PEER_AS));
    let out = s2.handle(
        t(9),
        Input::Received(update(&[], &attr(0x40, 99, &[1]), &[])),
    );
    assert_eq!(
        notification(&out),
        Some(Notification::with_data(3, 2, vec![0x40, 99, 1, 1]))
    );
}

#[test]
fn add_path_receive_keeps_each_path_and_reports_its_id() {
    let mut caps = full_caps(PEER_AS);
    caps.extend_from_slice(&[69, 8, 0, 1, 1, 3, 0, 2, 1, 2]); // send+receive v4, send v6
    let mut s = established(cfg(), &caps);
    assert_eq!(
        s.negotiated().expect("n").add_path,
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
    );
    // Two paths for 198.19.1.0/24 (ids 1 and 2).
    let nlri = [0, 0, 0, 1, 24, 198, 19, 1, 0, 0, 0, 2, 24, 198, 19, 1];
    let out = s.handle(
        t(2),
        Input::Received(update(&[], &base_attrs(&[65001], [198, 18, 0, 1]), &nlri)),
    );
    let ids: Vec<Option<u32>> = events(&out)
        .into_iter()
        .filter_map(|e| match e {
            Event::Route(r) if matches!(r.change, RouteChange::Announce { .. }) => Some(r.path_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![Some(1), Some(2)]);
    assert_eq!(s.rib().len(), 2);
    let out = s.handle(
        t(3),
        Input::Received(update(&[0, 0, 0, 1, 24, 198, 19, 1], &[], &[])),
    );
    let ev = events(&out);
    assert!(
        matches!(ev.as_slice(), [Event::Route(r)] if r.path_id == Some(1) && matches!(r.change, RouteChange::Withdraw { .. })),
        "{ev:?}"
    );
    assert_eq!(s.rib().len(), 1);
    // An NLRI that ends inside a path id is an invalid network field.
    let out = s.handle(
        t(4),
        Input::Received(update(
            &[],
            &base_attrs(&[65001], [198, 18, 0, 1]),
            &[0, 0, 1],
        )),
    );
    assert_eq!(notification(&out), Some(Notification::new(3, 10)));
}

#[test]
fn add_path_is_advertised_receive_only_and_can_be_switched_off() {
    let mut s = Session::new(cfg());
    let out = s.handle(t(0), Input::Connected);
    let msgs = sent(&out);
    let [Outgoing::Open(o)] = msgs.as_slice() else {
        panic!("one OPEN")
    };
    assert_eq!(o.capabilities.add_path_receive, Family::ALL.to_vec());
    let mut c = cfg();
    c.add_path = false;
    let mut caps = full_caps(PEER_AS);
    caps.extend_from_slice(&[69, 4, 0, 1, 1, 3]);
    let s = established(c, &caps);
    assert!(s.negotiated().expect("n").add_path.is_empty());
    // A peer that can only receive paths does not make us expect path ids.
    let mut caps = full_caps(PEER_AS);
    caps.extend_from_slice(&[69, 4, 0, 1, 1, 1]);
    let s = established(cfg(), &caps);
    assert!(s.negotiated().expect("n").add_path.is_empty());
}

// ---- Graceful restart helper (RFC 4724 §4.2) ----

use foureyes_bgp_listener::event::StaleDropReason;
use foureyes_bgp_listener::session::{Direction, MaxPrefixes};

/// MP v4+v6, 4-octet AS, and a graceful-restart capability with restart time `time` and these
/// (afi, F bit) tuples.
fn gr_caps(time: u16, families: &[(u16, bool)]) -> Vec<u8> {
    let mut c = vec![1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1, 65, 4];
    c.extend_from_slice(&PEER_AS.to_be_bytes());
    c.push(64);
    c.push(u8::try_from(2 + 4 * families.len()).expect("len"));
    c.extend_from_slice(&time.to_be_bytes());
    for (afi, f) in families {
        c.extend_from_slice(&afi.to_be_bytes());
        c.push(1);
        c.push(if *f { 0x80 } else { 0 });
    }
    c
}

fn both_f() -> Vec<u8> {
    gr_caps(120, &[(1, true), (2, true)])
}

fn v6_nh() -> [u8; 16] {
    let mut nh = [0u8; 16];
    nh[..4].copy_from_slice(&[0x20, 0x01, 0, 2]);
    nh[15] = 1;
    nh
}

/// An Established GR session holding 10.0.0.0/24, 10.0.1.0/24, 10.0.2.0/24 and 2001:2:1::/48.
fn gr_session_with_routes(c: SessionConfig, caps: &[u8]) -> Session {
    let mut s = established(c, caps);
    s.handle(
        t(2),
        Input::Received(update(
            &[],
            &base_attrs(&[65001], [198, 18, 0, 1]),
            &[24, 10, 0, 0, 24, 10, 0, 1, 24, 10, 0, 2],
        )),
    );
    let mut a6 = attr(0x40, 1, &[0]);
    a6.extend(as_path4(&[65001]));
    a6.extend(mp_reach_v6(v6_nh(), &[48, 0x20, 0x01, 0, 2, 0, 1]));
    s.handle(t(2), Input::Received(update(&[], &a6, &[])));
    assert_eq!(s.rib().len(), 4);
    s
}

fn down_counts(out: &[Output]) -> (DownReason, usize, usize) {
    let ev = events(out);
    let downs: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Session(SessionEvent::Down {
                reason,
                routes_lost,
                routes_stale,
                ..
            }) => Some((reason.clone(), *routes_lost, *routes_stale)),
            _ => None,
        })
        .collect();
    assert_eq!(downs.len(), 1, "exactly one Down event: {ev:?}");
    downs.into_iter().next().expect("one")
}

fn p4(s: &str) -> foureyes_bgp_listener::wire::Prefix {
    let (a, l) = s.split_once('/').expect("prefix");
    foureyes_bgp_listener::wire::Prefix {
        addr: a.parse().expect("addr"),
        len: l.parse().expect("len"),
    }
}

/// Re-establishes `s` on a new connection with the given capabilities.
fn reconnect(s: &mut Session, at: u64, caps: &[u8]) -> Vec<Output> {
    s.handle(t(at), Input::Connected);
    s.handle(
        t(at),
        Input::Received(open_with(PEER_AS as u16, 90, [198, 18, 0, 1], caps)),
    );
    let out = s.handle(t(at), Input::Received(keepalive()));
    assert_eq!(s.state(), State::Established);
    out
}

#[test]
fn graceful_restart_capability_is_decoded_with_restart_time_and_flags() {
    let mut caps = gr_caps(0, &[(1, true), (2, false), (25, true)]);
    // R and N bits set, restart time 300.
    let i = caps.iter().position(|b| *b == 64).expect("gr") + 2;
    caps[i] = 0xc1;
    caps[i + 1] = 0x2c;
    let body = &open_with(PEER_AS as u16, 90, [1, 1, 1, 1], &caps)[19..];
    let o = foureyes_bgp_listener::wire::decode_open(body).expect("open");
    let g = o.graceful_restart_cap.expect("gr cap");
    assert_eq!(g.restart_time, 300);
    assert!(g.restarted && g.notification);
    assert_eq!(
        g.families,
        vec![(Family::Ipv4Unicast, true), (Family::Ipv6Unicast, false)],
        "unknown AFI 25 left out"
    );
    // A tuple cut short is a malformed OPEN.
    let mut bad = vec![64, 5, 0, 120, 0, 1, 1];
    bad.extend_from_slice(&[1, 4, 0, 1, 0, 1]);
    let body = &open_with(PEER_AS as u16, 90, [1, 1, 1, 1], &bad)[19..];
    assert!(foureyes_bgp_listener::wire::decode_open(body).is_err());
}

#[test]
fn gr_tcp_close_keeps_routes_stale_with_one_down_event_and_starts_the_restart_timer() {
    let mut s = gr_session_with_routes(cfg(), &gr_caps(77, &[(1, true), (2, true)]));
    let out = s.handle(t(10), Input::Closed);
    assert_eq!(down_counts(&out), (DownReason::ConnectionClosed, 0, 4));
    assert_eq!(events(&out).len(), 1, "no per-prefix withdraws");
    assert!(out.contains(&Output::SetTimer(
        Timer::Restart,
        Some(Duration::from_secs(77))
    )));
    assert_eq!(s.rib().len(), 4);
    assert!(
        s.rib()
            .is_stale(Family::Ipv4Unicast, None, &p4("10.0.1.0/24"))
    );
    assert_eq!(s.rib().stale_count(Family::Ipv6Unicast), 1);
    assert_eq!(s.retained(), &[Family::Ipv4Unicast, Family::Ipv6Unicast]);
}

#[test]
fn gr_hold_timer_expiry_keeps_routes_stale() {
    let mut s = gr_session_with_routes(cfg(), &both_f());
    let out = s.handle(t(100), Input::TimerFired(Timer::Hold));
    assert_eq!(notification(&out), Some(Notification::new(4, 0)));
    let (reason, lost, stale) = down_counts(&out);
    assert!(matches!(reason, DownReason::Sent(n) if n.code == 4));
    assert_eq!((lost, stale), (0, 4));
    assert_eq!(s.rib().stale_count(Family::Ipv4Unicast), 3);
}

#[test]
fn gr_families_missing_from_the_capability_are_dropped_at_loss() {
    let mut s = gr_session_with_routes(cfg(), &gr_caps(120, &[(1, false)]));
    let out = s.handle(t(10), Input::Closed);
    assert_eq!(down_counts(&out), (DownReason::ConnectionClosed, 1, 3));
    assert_eq!(s.rib().count(Family::Ipv6Unicast), 0);
    assert_eq!(s.retained(), &[Family::Ipv4Unicast]);
    // The event names the family whose routes stay (so `watch` keeps only its count).
    assert!(
        events(&out).iter().any(|e| matches!(e,
            Event::Session(SessionEvent::Down { stale_families, .. })
                if stale_families == &[Family::Ipv4Unicast])),
        "{out:?}"
    );
    // A helper-form capability (no tuples, as the listener itself sends) keeps nothing.
    let mut s = gr_session_with_routes(cfg(), &full_caps(PEER_AS));
    let out = s.handle(t(10), Input::Closed);
    assert_eq!(down_counts(&out), (DownReason::ConnectionClosed, 4, 0));
    assert!(out.contains(&Output::SetTimer(Timer::Restart, None)));
}

#[test]
fn a_notification_either_way_drops_routes_even_with_graceful_restart() {
    let mut s = gr_session_with_routes(cfg(), &both_f());
    let out = s.handle(t(10), Input::Received(msg(3, &[6, 4])));
    let (reason, lost, stale) = down_counts(&out);
    assert!(matches!(reason, DownReason::Received(_)));
    assert_eq!((lost, stale), (4, 0));
    assert!(s.rib().is_empty());
    let mut s = gr_session_with_routes(cfg(), &both_f());
    let out = s.handle(t(10), Input::Stop);
    assert_eq!(down_counts(&out).1, 4);
    // Our own UPDATE-error NOTIFICATION too.
    let mut s = gr_session_with_routes(cfg(), &both_f());
    let out = s.handle(t(10), Input::Received(msg(7, &[])));
    assert_eq!(down_counts(&out).1, 4);
    assert!(s.retained().is_empty());
}

#[test]
fn gr_switched_off_in_config_drops_routes_on_close() {
    let mut c = cfg();
    c.graceful_restart = false;
    let mut s = gr_session_with_routes(c, &both_f());
    let out = s.handle(t(10), Input::Closed);
    assert_eq!(down_counts(&out), (DownReason::ConnectionClosed, 4, 0));
}

#[test]
fn gr_peer_back_reannounce_is_silent_change_is_an_attribute_change_and_end_of_rib_sweeps() {
    let mut s = gr_session_with_routes(cfg(), &both_f());
    s.handle(t(10), Input::Closed);
    let out = reconnect(&mut s, 20, &both_f());
    assert!(
        out.contains(&Output::SetTimer(Timer::Restart, Some(STALE_TIME))),
        "{out:?}"
    );
    assert_eq!(s.rib().stale_count(Family::Ipv4Unicast), 3);
    // Same attributes for 10.0.0.0/24: no event, mark cleared.
    let out = s.handle(
        t(21),
        Input::Received(update(
            &[],
            &base_attrs(&[65001], [198, 18, 0, 1]),
            &[24, 10, 0, 0],
        )),
    );
    assert!(route_changes(&out).is_empty(), "{out:?}");
    assert!(
        !s.rib()
            .is_stale(Family::Ipv4Unicast, None, &p4("10.0.0.0/24"))
    );
    // A new AS path for 10.0.1.0/24: attribute change, mark cleared.
    let out = s.handle(
        t(22),
        Input::Received(update(
            &[],
            &base_attrs(&[65001, 65030], [198, 18, 0, 1]),
            &[24, 10, 0, 1],
        )),
    );
    let ch = route_changes(&out);
    assert!(
        matches!(ch.as_slice(), [(_, RouteChange::AttributeChange { changed, .. })] if changed.iter().eq([AttrKind::AsPath])),
        "{ch:?}"
    );
    assert_eq!(s.rib().stale_count(Family::Ipv4Unicast), 1);
    // End-of-RIB v4: 10.0.2.0/24 was not re-announced → withdrawn, before the End-of-RIB event.
    let out = s.handle(t(23), Input::Received(update(&[], &[], &[])));
    let ch = route_changes(&out);
    assert!(
        matches!(ch.as_slice(), [
            (Family::Ipv4Unicast, RouteChange::Withdraw { prefix, .. }),
            (Family::Ipv4Unicast, RouteChange::EndOfRib),
        ] if prefix.to_string() == "10.0.2.0/24"),
        "{ch:?}"
    );
    assert_eq!(s.rib().count(Family::Ipv4Unicast), 2);
    assert_eq!(s.retained(), &[Family::Ipv6Unicast]);
    assert!(!out.contains(&Output::SetTimer(Timer::Restart, None)));
    // End-of-RIB v6 with nothing re-announced: the v6 route goes, and the timer is cancelled.
    let out = s.handle(
        t(24),
        Input::Received(update(&[], &mp_unreach_v6(&[]), &[])),
    );
    let ch = route_changes(&out);
    assert!(
        matches!(
            ch.as_slice(),
            [
                (Family::Ipv6Unicast, RouteChange::Withdraw { .. }),
                (Family::Ipv6Unicast, RouteChange::EndOfRib),
            ]
        ),
        "{ch:?}"
    );
    assert!(out.contains(&Output::SetTimer(Timer::Restart, None)));
    assert!(s.retained().is_empty());
}

const STALE_TIME: Duration = Duration::from_secs(360);

#[test]
fn gr_restart_timer_expiry_while_away_drops_stale_in_one_event_per_family() {
    let mut s = gr_session_with_routes(cfg(), &both_f());
    s.handle(t(10), Input::Closed);
    let out = s.handle(t(130), Input::TimerFired(Timer::Restart));
    let ev = events(&out);
    assert_eq!(
        ev.iter()
            .map(|e| match e {
                Event::Session(SessionEvent::StaleDropped {
                    family,
                    routes,
                    reason,
                    ..
                }) => (*family, *routes, *reason),
                other => panic!("only StaleDropped events: {other:?}"),
            })
            .collect::<Vec<_>>(),
        vec![
            (Family::Ipv4Unicast, 3, StaleDropReason::RestartTimerExpired),
            (Family::Ipv6Unicast, 1, StaleDropReason::RestartTimerExpired)
        ]
    );
    assert!(s.rib().is_empty());
    assert!(s.retained().is_empty());
}

#[test]
fn gr_stale_timer_after_the_peer_is_back_withdraws_what_is_still_stale() {
    let mut s = gr_session_with_routes(cfg(), &both_f());
    s.handle(t(10), Input::Closed);
    reconnect(&mut s, 20, &both_f());
    s.handle(
        t(21),
        Input::Received(update(
            &[],
            &base_attrs(&[65001], [198, 18, 0, 1]),
            &[24, 10, 0, 0],
        )),
    );
    let out = s.handle(t(400), Input::TimerFired(Timer::Restart));
    let ch = route_changes(&out);
    assert_eq!(ch.len(), 3, "two v4 and one v6 still stale: {ch:?}");
    assert!(
        ch.iter()
            .all(|(_, c)| matches!(c, RouteChange::Withdraw { .. }))
    );
    assert_eq!(s.rib().len(), 1);
}

#[test]
fn gr_new_session_without_graceful_restart_or_f_bit_sweeps_at_once() {
    // No graceful restart at all in the new OPEN.
    let mut s = gr_session_with_routes(cfg(), &both_f());
    s.handle(t(10), Input::Closed);
    let mut caps = vec![1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1, 65, 4];
    caps.extend_from_slice(&PEER_AS.to_be_bytes());
    let out = reconnect(&mut s, 20, &caps);
    let dropped: Vec<_> = events(&out)
        .into_iter()
        .filter_map(|e| match e {
            Event::Session(SessionEvent::StaleDropped {
                family,
                routes,
                reason: StaleDropReason::NotPreserved,
                ..
            }) => Some((family, routes)),
            _ => None,
        })
        .collect();
    assert_eq!(
        dropped,
        vec![(Family::Ipv4Unicast, 3), (Family::Ipv6Unicast, 1)]
    );
    assert!(s.rib().is_empty());
    assert!(out.contains(&Output::SetTimer(Timer::Restart, None)));
    // F bit only for IPv4: IPv6 goes at once, IPv4 waits for End-of-RIB.
    let mut s = gr_session_with_routes(cfg(), &both_f());
    s.handle(t(10), Input::Closed);
    let out = reconnect(&mut s, 20, &gr_caps(120, &[(1, true), (2, false)]));
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::Session(SessionEvent::StaleDropped {
            family: Family::Ipv6Unicast,
            routes: 1,
            ..
        })
    )));
    assert_eq!(s.retained(), &[Family::Ipv4Unicast]);
    assert_eq!(s.rib().stale_count(Family::Ipv4Unicast), 3);
}

#[test]
fn gr_a_failed_attempt_to_come_back_keeps_the_stale_routes_and_the_timer() {
    let mut s = gr_session_with_routes(cfg(), &both_f());
    s.handle(t(10), Input::Closed);
    s.handle(t(20), Input::Connected);
    let out = s.handle(
        t(20),
        Input::Received(open_with(65099, 90, [198, 18, 0, 1], &[])),
    );
    assert_eq!(notification(&out), Some(Notification::new(2, 2)));
    assert_eq!(
        down_counts(&out),
        (DownReason::Sent(Notification::new(2, 2)), 0, 4)
    );
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::SetTimer(Timer::Restart, _))),
        "the restart timer keeps running"
    );
    assert_eq!(s.rib().stale_count(Family::Ipv4Unicast), 3);
}

// ---- Collisions (RFC 4271 §6.8, RFC 4724 §4.2) ----

fn contender_open(s: &mut Session, at: u64, id: [u8; 4], caps: &[u8]) -> Vec<Output> {
    s.handle(
        t(at),
        Input::ContenderReceived(open_with(PEER_AS as u16, 90, id, caps)),
    )
}

#[test]
fn a_contender_while_established_without_gr_is_closed_with_cease_7() {
    let mut s = gr_session_with_routes(cfg(), &{
        let mut c = vec![1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1, 65, 4];
        c.extend_from_slice(&PEER_AS.to_be_bytes());
        c
    });
    let out = s.handle(t(5), Input::ContenderConnected(Direction::Accepted));
    assert!(matches!(
        out.as_slice(),
        [
            Output::SendContender(Outgoing::Open(_)),
            Output::SetTimer(Timer::ContenderHold, Some(_))
        ]
    ));
    let out = contender_open(&mut s, 5, [198, 18, 0, 1], &full_caps(PEER_AS));
    assert!(out.contains(&Output::SendContender(Outgoing::Notification(
        Notification::new(6, 7)
    ))));
    assert!(out.contains(&Output::CloseContender));
    assert!(!out.contains(&Output::Close));
    assert!(events(&out).is_empty());
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.rib().len(), 4);
    assert!(!s.has_contender());
}

#[test]
fn a_restarted_gr_peer_reconnecting_replaces_the_established_session_and_marks_stale() {
    let mut s = gr_session_with_routes(cfg(), &both_f());
    s.handle(t(5), Input::ContenderConnected(Direction::Accepted));
    // The contender's OPEN and KEEPALIVE arrive in one read.
    let mut bytes = open_with(PEER_AS as u16, 90, [198, 18, 0, 1], &both_f());
    bytes.extend(keepalive());
    let out = s.handle(t(6), Input::ContenderReceived(bytes));
    let close = out
        .iter()
        .position(|o| *o == Output::Close)
        .expect("old closed");
    let promote = out
        .iter()
        .position(|o| *o == Output::PromoteContender)
        .expect("promoted");
    assert!(close < promote);
    assert_eq!(
        notification(&out),
        None,
        "no NOTIFICATION on the old session"
    );
    assert_eq!(down_counts(&out), (DownReason::PeerRestarted, 0, 4));
    // After the promotion the KEEPALIVE goes on the new primary, and the session is up again.
    let after: Vec<_> = out.iter().skip(promote).cloned().collect();
    assert!(sent(&after).contains(&Outgoing::Keepalive));
    assert_eq!(s.state(), State::Established);
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, Event::Session(SessionEvent::Established { .. })))
    );
    assert_eq!(s.rib().stale_count(Family::Ipv4Unicast), 3);
    assert!(out.contains(&Output::SetTimer(Timer::Restart, Some(STALE_TIME))));
}

#[test]
fn a_contender_during_open_exchange_from_the_same_side_wins() {
    let mut s = Session::new(cfg());
    s.handle(t(0), Input::Connected);
    s.handle(
        t(0),
        Input::Received(open_with(PEER_AS as u16, 90, [198, 18, 0, 1], &both_f())),
    );
    assert_eq!(s.state(), State::OpenConfirm);
    s.handle(t(1), Input::ContenderConnected(Direction::Accepted));
    let out = contender_open(&mut s, 2, [198, 18, 0, 1], &both_f());
    assert_eq!(notification(&out), Some(Notification::new(6, 7)), "old one");
    assert!(out.contains(&Output::PromoteContender));
    assert_eq!(s.state(), State::OpenConfirm);
    let out = s.handle(t(3), Input::Received(keepalive()));
    assert!(matches!(
        events(&out).as_slice(),
        [Event::Session(SessionEvent::Established { .. })]
    ));
}

#[test]
fn a_dialled_and_an_accepted_connection_collide_by_bgp_identifier() {
    // Our identifier is 198.18.0.2. Peer 198.18.0.1 is lower: keep the connection we dialled.
    let mut s = Session::new(cfg());
    s.handle(t(0), Input::Dialled);
    s.handle(t(0), Input::ContenderConnected(Direction::Accepted));
    let out = contender_open(&mut s, 1, [198, 18, 0, 1], &both_f());
    assert!(out.contains(&Output::CloseContender));
    assert!(!out.contains(&Output::PromoteContender));
    assert_eq!(s.state(), State::OpenSent);
    // Peer 198.18.0.9 is higher: keep the connection it opened.
    let mut s = Session::new(cfg());
    s.handle(t(0), Input::Dialled);
    s.handle(t(0), Input::ContenderConnected(Direction::Accepted));
    let out = contender_open(&mut s, 1, [198, 18, 0, 9], &both_f());
    assert!(out.contains(&Output::PromoteContender));
    assert_eq!(notification(&out), Some(Notification::new(6, 7)));
    assert_eq!(s.state(), State::OpenConfirm);
    // And the other way round: accepted primary, dialled contender, lower peer identifier.
    let mut s = Session::new(cfg());
    s.handle(t(0), Input::Connected);
    s.handle(t(0), Input::ContenderConnected(Direction::Dialled));
    let out = contender_open(&mut s, 1, [198, 18, 0, 1], &both_f());
    assert!(out.contains(&Output::PromoteContender));
}

#[test]
fn a_waiting_contender_takes_over_when_the_primary_closes_and_times_out_alone() {
    let mut s = established(cfg(), &full_caps(PEER_AS));
    s.handle(t(5), Input::ContenderConnected(Direction::Accepted));
    let out = s.handle(t(6), Input::Closed);
    assert!(out.contains(&Output::PromoteContender));
    assert_eq!(s.state(), State::OpenSent);
    assert!(!s.has_contender());
    // The new primary is a normal session now.
    s.handle(
        t(7),
        Input::Received(open_with(PEER_AS as u16, 90, [198, 18, 0, 1], &both_f())),
    );
    s.handle(t(7), Input::Received(keepalive()));
    assert_eq!(s.state(), State::Established);
    // A contender that never sends its OPEN is closed by its own hold timer.
    s.handle(t(8), Input::ContenderConnected(Direction::Accepted));
    let out = s.handle(t(300), Input::TimerFired(Timer::ContenderHold));
    assert!(out.contains(&Output::SendContender(Outgoing::Notification(
        Notification::new(4, 0)
    ))));
    assert!(out.contains(&Output::CloseContender));
    assert_eq!(s.state(), State::Established);
    // A contender sending garbage gets the header error, the session is untouched.
    s.handle(t(301), Input::ContenderConnected(Direction::Accepted));
    let out = s.handle(t(301), Input::ContenderReceived(msg(9, &[])));
    assert!(out.contains(&Output::CloseContender));
    assert!(!out.contains(&Output::Close));
    assert_eq!(s.state(), State::Established);
}

// ---- Maximum prefixes (RFC 4486 subcode 1) ----

fn announce_n(s: &mut Session, at: u64, from: u8, n: u8) -> Vec<Output> {
    let nlri: Vec<u8> = (from..from + n).flat_map(|i| [24, 10, 1, i]).collect();
    s.handle(
        t(at),
        Input::Received(update(&[], &base_attrs(&[65001], [198, 18, 0, 1]), &nlri)),
    )
}

fn limit_events(out: &[Output]) -> Vec<(Family, usize, u32, bool)> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            Event::Session(SessionEvent::PrefixLimit {
                family,
                count,
                limit,
                teardown,
                ..
            }) => Some((family, count, limit, teardown)),
            _ => None,
        })
        .collect()
}

#[test]
fn max_prefixes_warns_once_and_again_only_below_ninety_percent() {
    let mut c = cfg();
    c.max_prefixes = Some(MaxPrefixes {
        limit: 10,
        teardown: false,
        idle_hold: Duration::ZERO,
    });
    let mut s = established(c, &full_caps(PEER_AS));
    assert!(
        limit_events(&announce_n(&mut s, 2, 0, 10)).is_empty(),
        "10 is not over 10"
    );
    assert_eq!(
        limit_events(&announce_n(&mut s, 3, 10, 1)),
        vec![(Family::Ipv4Unicast, 11, 10, false)]
    );
    assert!(
        limit_events(&announce_n(&mut s, 4, 11, 2)).is_empty(),
        "once"
    );
    assert_eq!(s.state(), State::Established);
    // Down to 9 (not below 90 % = 9): still warned.
    let w: Vec<u8> = (9..13).flat_map(|i| [24, 10, 1, i]).collect();
    s.handle(t(5), Input::Received(update(&w, &[], &[])));
    assert!(limit_events(&announce_n(&mut s, 6, 20, 2)).is_empty());
    // Down to 8: re-armed; over again: warned again.
    let w: Vec<u8> = [8u8, 20, 21].iter().flat_map(|i| [24, 10, 1, *i]).collect();
    s.handle(t(7), Input::Received(update(&w, &[], &[])));
    assert_eq!(s.rib().count(Family::Ipv4Unicast), 8);
    assert_eq!(
        limit_events(&announce_n(&mut s, 8, 30, 3)),
        vec![(Family::Ipv4Unicast, 11, 10, false)]
    );
}

#[test]
fn max_prefixes_teardown_sends_cease_1_with_afi_safi_and_limit() {
    let mut c = cfg();
    c.max_prefixes = Some(MaxPrefixes {
        limit: 2,
        teardown: true,
        idle_hold: Duration::from_secs(300),
    });
    let mut s = established(c, &both_f());
    let out = announce_n(&mut s, 2, 0, 3);
    assert!(
        out.contains(&Output::SetTimer(
            Timer::IdleHold,
            Some(Duration::from_secs(300))
        )),
        "{out:?}"
    );
    assert_eq!(limit_events(&out), vec![(Family::Ipv4Unicast, 3, 2, true)]);
    assert_eq!(
        notification(&out),
        Some(Notification::with_data(6, 1, vec![0, 1, 1, 0, 0, 0, 2]))
    );
    assert!(out.contains(&Output::Close));
    assert_eq!(
        down_counts(&out).1,
        3,
        "our NOTIFICATION: routes dropped, not stale"
    );
    assert_eq!(s.state(), State::Idle);

    // The idle hold: the peer comes straight back and is refused (Cease, connection rejected),
    // as is a contender; nothing starts, and the driver is told not to dial.
    assert!(s.idle_held());
    for input in [Input::Connected, Input::Dialled] {
        let out = s.handle(t(10), input);
        assert_eq!(notification(&out), Some(Notification::new(6, 5)), "{out:?}");
        assert!(out.contains(&Output::Close));
        assert!(!sent(&out).iter().any(|m| matches!(m, Outgoing::Open(_))));
        assert_eq!(s.state(), State::Idle);
    }
    let out = s.handle(t(11), Input::ContenderConnected(Direction::Accepted));
    assert!(out.contains(&Output::CloseContender), "{out:?}");
    assert!(!out.contains(&Output::PromoteContender));
    // When it ends, the peer is welcome again.
    s.handle(t(310), Input::TimerFired(Timer::IdleHold));
    assert!(!s.idle_held());
    let out = s.handle(t(311), Input::Connected);
    assert!(
        sent(&out).iter().any(|m| matches!(m, Outgoing::Open(_))),
        "{out:?}"
    );
    assert_eq!(s.state(), State::OpenSent);
}

#[test]
fn max_prefixes_teardown_with_zero_idle_hold_lets_the_peer_back_at_once() {
    let mut c = cfg();
    c.max_prefixes = Some(MaxPrefixes {
        limit: 2,
        teardown: true,
        idle_hold: Duration::ZERO,
    });
    let mut s = established(c, &both_f());
    let out = announce_n(&mut s, 2, 0, 3);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::SetTimer(Timer::IdleHold, _)))
    );
    assert!(!s.idle_held());
    let out = s.handle(t(10), Input::Connected);
    assert!(
        sent(&out).iter().any(|m| matches!(m, Outgoing::Open(_))),
        "{out:?}"
    );
}

// ---- Adj-RIB-In interning ----

#[test]
fn attribute_sets_are_shared_across_updates_and_dropped_when_unused() {
    let mut s = established(cfg(), &full_caps(PEER_AS));
    announce_n(&mut s, 2, 0, 3);
    announce_n(&mut s, 3, 3, 3);
    assert_eq!(s.rib().attribute_sets(), 1);
    let a = s
        .rib()
        .get(Family::Ipv4Unicast, None, &p4("10.1.0.0/24"))
        .expect("route");
    let b = s
        .rib()
        .get(Family::Ipv4Unicast, None, &p4("10.1.5.0/24"))
        .expect("route");
    assert!(std::sync::Arc::ptr_eq(&a.attrs, &b.attrs));
    s.handle(
        t(4),
        Input::Received(update(
            &[],
            &base_attrs(&[65001, 65002], [198, 18, 0, 1]),
            &[24, 10, 1, 0],
        )),
    );
    assert_eq!(s.rib().attribute_sets(), 2);
    let w: Vec<u8> = (1..6).flat_map(|i| [24, 10, 1, i]).collect();
    s.handle(t(5), Input::Received(update(&w, &[], &[])));
    assert_eq!(
        s.rib().attribute_sets(),
        1,
        "the first set went with its last prefix"
    );
    s.handle(t(6), Input::Received(update(&[24, 10, 1, 0], &[], &[])));
    assert_eq!(s.rib().attribute_sets(), 0);
    assert!(s.rib().is_empty());
}
