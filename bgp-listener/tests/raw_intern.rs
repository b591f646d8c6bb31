//! The session's fast path (`parse_update_interned`: an attribute set already held is found by its
//! raw bytes and not decoded again) must give exactly what the full decode gives: the same
//! events, the same stored routes, the same RFC 7606 actions. Each UPDATE below is applied twice
//! (the second time the set is held) to one Adj-RIB-In through the fast path and to another
//! through `parse_update_from`, and everything is compared. The canonical encodings must actually
//! take the fast path (else this proves nothing), the others must not.

use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use foureyes_bgp_listener::event::Peer;
use foureyes_bgp_listener::rib::AdjRibIn;
use foureyes_bgp_listener::update::{
    DecodeContext, SessionKind, parse_update_from, parse_update_interned,
};
use foureyes_bgp_listener::wire::{Family, Prefix};

fn ctx() -> DecodeContext {
    DecodeContext {
        four_octet_as: true,
        families: Family::ALL.to_vec(),
        add_path: Vec::new(),
    }
}

fn attr(flags: u8, t: u8, v: &[u8]) -> Vec<u8> {
    let mut a = vec![flags, t];
    if flags & 0x10 != 0 {
        a.extend_from_slice(&u16::try_from(v.len()).expect("short").to_be_bytes());
    } else {
        a.push(u8::try_from(v.len()).expect("short"));
    }
    a.extend_from_slice(v);
    a
}

/// An UPDATE with these attributes announcing 198.19.`third`.0/24.
fn update(attrs: &[Vec<u8>], third: u8) -> Vec<u8> {
    let a: Vec<u8> = attrs.concat();
    let mut b = vec![0, 0];
    b.extend_from_slice(&u16::try_from(a.len()).expect("short").to_be_bytes());
    b.extend_from_slice(&a);
    b.extend_from_slice(&[24, 198, 19, third]);
    b
}

fn origin() -> Vec<u8> {
    attr(0x40, 1, &[0])
}
fn as_path(asns: &[u32]) -> Vec<u8> {
    let mut v = vec![2, u8::try_from(asns.len()).expect("short")];
    for a in asns {
        v.extend_from_slice(&a.to_be_bytes());
    }
    attr(0x40, 2, &v)
}
fn next_hop(last: u8) -> Vec<u8> {
    attr(0x40, 3, &[198, 18, 0, last])
}

/// (attributes, whether the second application must take the fast path).
fn cases() -> Vec<(&'static str, Vec<Vec<u8>>, bool)> {
    let comms = attr(0xc0, 8, &[0xfd, 0xe9, 0, 1, 0xfd, 0xe9, 0, 2]);
    vec![
        (
            "plain",
            vec![origin(), as_path(&[65001, 3356]), next_hop(1)],
            true,
        ),
        (
            "med, local pref, communities, extended and large communities",
            vec![
                origin(),
                as_path(&[65001, 174, 4_200_000_000]),
                next_hop(1),
                attr(0x80, 4, &[0, 0, 0, 50]),
                attr(0x40, 5, &[0, 0, 0, 200]),
                comms.clone(),
                attr(0xc0, 16, &[0, 2, 0xfd, 0xe9, 0, 0, 0, 7]),
                attr(0xc0, 32, &[0, 0, 0xfd, 0xe9, 0, 0, 0, 1, 0, 0, 0, 2]),
            ],
            true,
        ),
        (
            "atomic aggregate, aggregator, unknown optional transitive",
            vec![
                origin(),
                as_path(&[65001]),
                next_hop(1),
                attr(0x40, 6, &[]),
                attr(0xc0, 7, &[0, 0, 0xfd, 0xe9, 198, 18, 0, 9]),
                attr(0xc0, 99, &[1, 2, 3]),
            ],
            true,
        ),
        (
            "AS_SET segment, extended-length unknown attribute",
            vec![
                origin(),
                attr(
                    0x40,
                    2,
                    &[2, 1, 0, 0, 0xfd, 0xe9, 1, 2, 0, 0, 0, 1, 0, 0, 0, 2],
                ),
                next_hop(1),
                attr(0xd0, 120, &[7; 300]),
            ],
            true,
        ),
        (
            "partial bit on communities (not canonical)",
            vec![
                origin(),
                as_path(&[65001, 2914]),
                next_hop(1),
                attr(0xe0, 8, &[0xfd, 0xe9, 0, 1]),
            ],
            false,
        ),
        (
            "attributes out of order (not canonical)",
            vec![
                comms.clone(),
                next_hop(1),
                as_path(&[65001, 6939]),
                origin(),
            ],
            false,
        ),
        (
            "extended length on a short AS_PATH (not canonical)",
            vec![
                origin(),
                attr(0x50, 2, &[2, 1, 0, 0, 0xfd, 0xe9]),
                next_hop(1),
            ],
            false,
        ),
        (
            "malformed ATOMIC_AGGREGATE: attribute discard every time",
            vec![
                origin(),
                as_path(&[65001, 1299]),
                next_hop(1),
                attr(0x40, 6, &[1]),
            ],
            false,
        ),
        (
            "repeated attribute: discarded every time",
            vec![
                origin(),
                as_path(&[65001, 3257]),
                next_hop(1),
                attr(0x80, 4, &[0, 0, 0, 1]),
                attr(0x80, 4, &[0, 0, 0, 2]),
            ],
            false,
        ),
        (
            "missing NEXT_HOP: treat-as-withdraw even when the set is held",
            vec![origin(), as_path(&[65001, 3356])],
            false,
        ),
    ]
}

fn run(kind: SessionKind) {
    let peer = Peer::session("198.18.0.1".parse::<IpAddr>().expect("addr"), 65001);
    let at = SystemTime::UNIX_EPOCH;
    let ctx = ctx();
    let mut fast = AdjRibIn::new();
    let mut slow = AdjRibIn::new();
    // The plain set, held first, so that "missing NEXT_HOP" has a held set to (wrongly) match.
    let seed = update(&[origin(), as_path(&[65001, 3356]), next_hop(1)], 250);
    for rib in [&mut fast, &mut slow] {
        let u = parse_update_from(&seed, &ctx, kind).expect("seed decodes");
        rib.apply(peer, at, None, u);
    }
    for (i, (name, attrs, canonical)) in cases().into_iter().enumerate() {
        for round in 0..2u8 {
            // A new prefix each time, then the same prefix with a new next hop: announce, then
            // attribute change, both through the held set.
            let mut attrs = attrs.clone();
            for a in attrs.iter_mut() {
                if a.get(1) == Some(&3) {
                    *a = next_hop(1 + round);
                }
            }
            let body = update(&attrs, u8::try_from(i).expect("few cases"));
            let a =
                parse_update_interned(&body, &ctx, kind, &mut |raw| fast.find_raw_set(raw, kind))
                    .expect("fast path decodes");
            let b = parse_update_from(&body, &ctx, kind).expect("full decode");
            assert_eq!(a.announced, b.announced, "{name}: announced");
            assert_eq!(a.withdrawn, b.withdrawn, "{name}: withdrawn");
            assert_eq!(a.actions, b.actions, "{name}: actions");
            if round == 1 {
                // LOCAL_PREF from an external peer is discarded (RFC 7606 §7.5) every time, so
                // that set never takes the fast path there.
                let discarded = kind == SessionKind::External && name.contains("local pref");
                assert_eq!(
                    a.interned.is_some(),
                    canonical && !discarded,
                    "{name}: fast path taken"
                );
            }
            let ea = fast.apply(peer, at, None, a);
            let eb = slow.apply(peer, at, None, b);
            assert_eq!(ea, eb, "{name} round {round}: events");
        }
    }
    assert_eq!(fast.len(), slow.len());
    assert_eq!(fast.attribute_sets(), slow.attribute_sets());
    for i in 0..=250u8 {
        let p = Prefix {
            addr: IpAddr::V4(Ipv4Addr::new(198, 19, i, 0)),
            len: 24,
        };
        assert_eq!(
            fast.get(Family::Ipv4Unicast, None, &p),
            slow.get(Family::Ipv4Unicast, None, &p),
            "route for {p}"
        );
    }
}

#[test]
fn fast_path_matches_full_decode_on_an_internal_session() {
    run(SessionKind::Internal);
}

#[test]
fn fast_path_matches_full_decode_on_an_external_session() {
    run(SessionKind::External);
}
