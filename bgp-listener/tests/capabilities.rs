//! Per-peer capability switches (address families, 4-octet AS): the OPEN on the wire carries
//! exactly what is enabled, routes of a family switched off are ignored as RFC 4760 leaves them
//! (not negotiated: no events, no NOTIFICATION), and a 2-octet session merges AS4_PATH. Sans-IO,
//! like tests/session.rs.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use foureyes_bgp_listener::config::ListenerConfig;
use foureyes_bgp_listener::event::{Event, RouteChange};
use foureyes_bgp_listener::session::{Input, Output, Session, SessionConfig, State, families};
use foureyes_bgp_listener::wire::{Family, Outgoing, encode};

const PEER_AS: u32 = 65001;

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn cfg(local_as: u32) -> SessionConfig {
    SessionConfig::new(
        local_as,
        PEER_AS,
        "198.18.0.2".parse().expect("id"),
        "198.18.0.1".parse().expect("peer"),
    )
}

/// The OPEN the session sends on connect, as bytes on the wire.
fn open_bytes(c: SessionConfig) -> Vec<u8> {
    let mut s = Session::new(c);
    let out = s.handle(t(0), Input::Connected);
    let opens: Vec<Vec<u8>> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send(m @ Outgoing::Open(_)) => Some(encode(m)),
            _ => None,
        })
        .collect();
    let [open] = opens.as_slice() else {
        panic!("one OPEN, got {out:?}")
    };
    open.clone()
}

/// (My Autonomous System, [(capability code, value)]) of an encoded OPEN.
fn parse_open(b: &[u8]) -> (u16, Vec<(u8, Vec<u8>)>) {
    let my_as = u16::from_be_bytes([b[20], b[21]]);
    let opt_len = usize::from(b[28]);
    let mut params = &b[29..29 + opt_len];
    let mut caps = Vec::new();
    while let [kind, len, rest @ ..] = params {
        let (v, next) = rest.split_at(usize::from(*len));
        assert_eq!(*kind, 2, "only the Capabilities parameter");
        let mut c = v;
        while let [code, clen, crest @ ..] = c {
            let (cv, cnext) = crest.split_at(usize::from(*clen));
            caps.push((*code, cv.to_vec()));
            c = cnext;
        }
        params = next;
    }
    (my_as, caps)
}

fn afi_safi(f: Family) -> Vec<u8> {
    match f {
        Family::Ipv4Unicast => vec![0, 1, 0, 1],
        Family::Ipv6Unicast => vec![0, 2, 0, 1],
    }
}

#[test]
fn the_open_carries_exactly_the_enabled_capabilities() {
    for (v4, v6) in [(true, true), (true, false), (false, true)] {
        for four in [true, false] {
            let mut c = cfg(65002);
            c.families = families(v4, v6);
            c.four_octet_as = four;
            c.check().expect("valid");
            let (my_as, caps) = parse_open(&open_bytes(c.clone()));
            let what = format!("ipv4={v4} ipv6={v6} four_octet_as={four}: {caps:?}");
            assert_eq!(my_as, 65002, "{what}");
            let mp: Vec<Vec<u8>> = caps
                .iter()
                .filter(|(k, _)| *k == 1)
                .map(|(_, v)| v.clone())
                .collect();
            let want: Vec<Vec<u8>> = c.families.iter().map(|f| afi_safi(*f)).collect();
            assert_eq!(mp, want, "{what}");
            let as4: Vec<Vec<u8>> = caps
                .iter()
                .filter(|(k, _)| *k == 65)
                .map(|(_, v)| v.clone())
                .collect();
            if four {
                assert_eq!(as4, vec![65002u32.to_be_bytes().to_vec()], "{what}");
            } else {
                assert!(as4.is_empty(), "{what}");
            }
            // ADD-PATH receive only for the enabled families, nothing for a disabled one.
            let add_path: Vec<u8> = caps
                .iter()
                .filter(|(k, _)| *k == 69)
                .flat_map(|(_, v)| v.clone())
                .collect();
            let want: Vec<u8> = c
                .families
                .iter()
                .flat_map(|f| {
                    let mut a = afi_safi(*f);
                    a.remove(2);
                    a.push(1);
                    a
                })
                .collect();
            assert_eq!(add_path, want, "{what}");
        }
    }
}

#[test]
fn a_four_octet_local_as_goes_out_as_as_trans_and_needs_the_capability() {
    let (my_as, caps) = parse_open(&open_bytes(cfg(4_200_000_000)));
    assert_eq!(my_as, 23456, "AS_TRANS (RFC 6793 §4.1)");
    assert!(caps.contains(&(65, 4_200_000_000u32.to_be_bytes().to_vec())));
    let mut c = cfg(4_200_000_000);
    c.four_octet_as = false;
    let e = c.check().expect_err("AS_TRANS alone would misname us");
    assert!(e.contains("4-octet"), "{e}");
    let mut c = cfg(65002);
    c.families = families(false, false);
    assert!(c.check().expect_err("no family").contains("address family"));
}

fn established(c: SessionConfig) -> Session {
    let mut s = Session::new(c);
    s.handle(t(0), Input::Connected);
    s.handle(
        t(0),
        Input::Received(open_with(
            PEER_AS as u16,
            90,
            [198, 18, 0, 1],
            &full_caps(PEER_AS),
        )),
    );
    s.handle(t(1), Input::Received(keepalive()));
    assert_eq!(s.state(), State::Established);
    s
}

/// Route events as (family, prefix, kind), and whether anything but KEEPALIVE went out.
fn routes(out: &[Output]) -> Vec<(Family, String, &'static str)> {
    for o in out {
        if let Output::Send(m) = o {
            assert!(matches!(m, Outgoing::Keepalive), "sent {m:?}");
        }
    }
    out.iter()
        .filter_map(|o| match o {
            Output::Event(Event::Route(r)) => {
                let (p, k) = match &r.change {
                    RouteChange::Announce { prefix, .. } => (prefix.to_string(), "announce"),
                    RouteChange::Withdraw { prefix, .. } => (prefix.to_string(), "withdraw"),
                    RouteChange::AttributeChange { prefix, .. } => (prefix.to_string(), "change"),
                    other => (format!("{other:?}"), "other"),
                };
                Some((r.family, p, k))
            }
            _ => None,
        })
        .collect()
}

/// One UPDATE with an IPv4 NLRI (10.0.0.0/24) and an IPv6 MP_REACH (2001:db8::/32).
fn dual_update() -> Vec<u8> {
    let mut attrs = base_attrs(&[PEER_AS], [198, 18, 0, 1]);
    let mut nh = [0u8; 16];
    nh[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    nh[15] = 1;
    attrs.extend(mp_reach_v6(nh, &[32, 0x20, 0x01, 0x0d, 0xb8]));
    update(&[], &attrs, &[24, 10, 0, 0])
}

#[test]
fn routes_of_a_disabled_family_are_ignored_without_resetting_the_session() {
    // IPv6 off: the peer offers both, only IPv4 is negotiated; its IPv6 routes (MP_REACH and
    // MP_UNREACH) are not for a negotiated AFI/SAFI and are ignored (RFC 4760 §7, RFC 4271
    // leaves no error for them), the IPv4 ones in the same UPDATE are taken.
    let mut c = cfg(65002);
    c.families = families(true, false);
    let mut s = established(c);
    assert_eq!(
        s.negotiated().expect("n").families,
        vec![Family::Ipv4Unicast]
    );
    let out = s.handle(t(2), Input::Received(dual_update()));
    assert_eq!(
        routes(&out),
        vec![(Family::Ipv4Unicast, "10.0.0.0/24".into(), "announce")]
    );
    let out = s.handle(
        t(3),
        Input::Received(update(
            &[],
            &mp_unreach_v6(&[32, 0x20, 0x01, 0x0d, 0xb8]),
            &[],
        )),
    );
    assert!(routes(&out).is_empty());
    assert_eq!(s.state(), State::Established);

    // IPv4 off: the legacy NLRI field is IPv4 unicast and is ignored, IPv6 is taken.
    let mut c = cfg(65002);
    c.families = families(false, true);
    let mut s = established(c);
    assert_eq!(
        s.negotiated().expect("n").families,
        vec![Family::Ipv6Unicast]
    );
    let out = s.handle(t(2), Input::Received(dual_update()));
    assert_eq!(
        routes(&out),
        vec![(Family::Ipv6Unicast, "2001:db8::/32".into(), "announce")]
    );
    let out = s.handle(t(3), Input::Received(update(&[24, 10, 0, 0], &[], &[])));
    assert!(routes(&out).is_empty());
    assert_eq!(s.state(), State::Established);
}

#[test]
fn four_octet_as_off_reads_two_octet_paths_and_merges_as4_path() {
    let mut c = cfg(65002);
    c.four_octet_as = false;
    let mut s = established(c);
    assert!(!s.negotiated().expect("n").four_octet_as);
    // What a NEW speaker sends an OLD one (RFC 6793 §4.2.2): AS_TRANS in AS_PATH, the real AS
    // in AS4_PATH.
    let mut attrs = attr(0x40, 1, &[0]);
    attrs.extend(attr(0x40, 2, &[2, 2, 0xfd, 0xe9, 0x5b, 0xa0]));
    attrs.extend(attr(0x40, 3, &[198, 18, 0, 1]));
    attrs.extend(attr(0xc0, 17, &[2, 1, 0xfa, 0x56, 0xea, 0x01]));
    let out = s.handle(t(2), Input::Received(update(&[], &attrs, &[24, 10, 0, 0])));
    let paths: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::Route(r)) => match &r.change {
                RouteChange::Announce { route, .. } => Some(route.attrs.as_path_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(paths, vec![format!("65001 {}", 0xfa56_ea01u32)]);
}

#[test]
fn listener_toml_switches_families_and_four_octet_as_per_peer() {
    let base = "local_as = 65002\nrouter_id = \"198.18.0.2\"\n[[peer]]\naddress = \"198.18.0.1\"\nremote_as = 65001\nconnect = true\n";
    let peers = |extra: &str| {
        let text = format!("{base}{extra}");
        ListenerConfig::parse(&text, "listener.toml").and_then(|c| c.peers("listener.toml"))
    };
    let p = peers("").expect("defaults");
    assert_eq!(p[0].session.families, Family::ALL.to_vec());
    assert!(p[0].session.four_octet_as);
    let p = peers("ipv6 = false\nfour_octet_as = false\n").expect("v4 only");
    assert_eq!(p[0].session.families, vec![Family::Ipv4Unicast]);
    assert!(!p[0].session.four_octet_as);
    let p = peers("ipv4 = false\n").expect("v6 only");
    assert_eq!(p[0].session.families, vec![Family::Ipv6Unicast]);
    let e = peers("ipv4 = false\nipv6 = false\n").expect_err("nothing left");
    assert!(e.to_string().contains("address family"), "{e}");
    let e = peers("local_as = 4200000000\nfour_octet_as = false\n").expect_err("AS_TRANS");
    assert!(e.to_string().contains("4-octet"), "{e}");
    let e = peers("ipv5 = false\n").expect_err("strict");
    assert!(e.to_string().contains("ipv5"), "{e}");
}
