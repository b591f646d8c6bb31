//! The direct JSON-lines writer (`event_jsonl::JsonlWriter`, what `watch`, `bmp` and `replay`
//! print) against the reference, `watch::event_json` serialised by serde_json: byte for byte, on
//! generated events of every kind. The generator reaches every field the JSON shows and the
//! writer's caches: every source (session, MRT, each BMP view, with and without a peer
//! distinguisher), IPv4 and IPv6 peers and next hops (zero runs, IPv4-mapped), every attribute
//! (AS_SET and confederation segments, empty segments, extended and large communities, unknown
//! attributes, which show in resync marks), times from before 1970 to after the year 9999 with and without
//! fractions, and strings with quotes, backslashes, control characters and non-ASCII in down
//! reasons, RFC 7606 reasons and resync marks. Consecutive events often share an attribute set,
//! with the same or another next hop, as the prefixes of one UPDATE do.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use foureyes_bgp_listener::event::{
    AttrKind, BmpView, DownReason, Event, Negotiated, Peer, ResyncMark, Route, RouteChange,
    RouteEvent, SessionEvent, Source, StaleDropReason, Statistic,
};
use foureyes_bgp_listener::event_jsonl::JsonlWriter;
use foureyes_bgp_listener::update::{AsSegment, PathAttributes, RawAttribute, Rfc7606Action};
use foureyes_bgp_listener::watch::event_json;
use foureyes_bgp_listener::wire::{Family, Notification, Prefix};

/// xorshift64: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        let i = self.below(xs.len() as u64) as usize;
        xs.get(i).cloned().expect("non-empty")
    }
    fn u32(&mut self) -> u32 {
        match self.below(4) {
            0 => 0,
            1 => u32::MAX,
            2 => self.below(70_000) as u32,
            _ => self.next() as u32,
        }
    }
    fn opt_u32(&mut self) -> Option<u32> {
        (!self.chance(3)).then(|| self.u32())
    }
}

/// Pieces of strings that JSON escaping must get right.
const NASTY: &[&str] = &[
    "",
    "plain",
    "\"",
    "\\",
    "\\\"",
    "\n",
    "\r\n",
    "\t",
    "\u{0}",
    "\u{1}",
    "\u{1f}",
    "\u{7f}",
    "\u{80}",
    "é",
    "\u{2028}\u{2029}",
    "😀",
    "</script>",
    "{\"a\":1}",
    "'",
    "/",
];

/// `&'static str`s for RFC 7606 reasons (the type holds only static text).
const STATIC_REASONS: &[&str] = &[
    "malformed AS_PATH",
    "quote \" and backslash \\",
    "control \u{1} \u{1f} \n",
    "non-ASCII é 😀 \u{2028}",
    "",
];

fn nasty(r: &mut Rng) -> String {
    let n = r.below(5);
    (0..n).map(|_| r.pick(NASTY)).collect()
}

fn time(r: &mut Rng) -> SystemTime {
    let e = SystemTime::UNIX_EPOCH;
    match r.below(8) {
        0 => e + Duration::from_secs(r.below(4_000_000_000)),
        1 => e + Duration::new(1_700_000_000 + r.below(1000), r.below(1_000_000_000) as u32),
        2 => e + Duration::new(r.below(4_000_000_000), r.below(1_000_000) as u32 * 1000),
        3 => e + Duration::new(r.below(4_000_000_000), r.below(1000) as u32 * 1_000_000),
        // Around the end of year 9999, after which RFC 3339 has no form (an empty string).
        4 => e + Duration::new(253_402_300_700 + r.below(200), r.below(3) as u32 * 7),
        5 => e - Duration::new(r.below(3_000_000_000), r.below(1_000_000_000) as u32),
        6 => e,
        _ => e + Duration::new(1_800_000_000, 1 + r.below(9) as u32),
    }
}

fn ip(r: &mut Rng) -> IpAddr {
    match r.below(6) {
        0 | 1 => IpAddr::V4(Ipv4Addr::from(r.next() as u32)),
        2 => IpAddr::V4(r.pick(&[Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST])),
        3 => IpAddr::V6(Ipv6Addr::from(
            (r.next() as u128) << 64 | u128::from(r.next()),
        )),
        4 => {
            // Zero runs in different places.
            let mut s = [0u16; 8];
            for x in &mut s {
                if r.chance(2) {
                    *x = r.next() as u16;
                }
            }
            IpAddr::V6(Ipv6Addr::from(s))
        }
        _ => IpAddr::V6(r.pick(&[
            Ipv6Addr::UNSPECIFIED,
            Ipv6Addr::LOCALHOST,
            Ipv4Addr::new(198, 18, 0, 1).to_ipv6_mapped(),
            Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0xc612, 1),
            Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 0),
        ])),
    }
}

fn peer(r: &mut Rng) -> Peer {
    let source = match r.below(4) {
        0 => Source::Session,
        1 => Source::Mrt,
        _ => Source::Bmp {
            router: ip(r),
            view: r.pick(&[BmpView::PrePolicy, BmpView::PostPolicy, BmpView::LocRib]),
            distinguisher: if r.chance(2) { 0 } else { r.next() },
        },
    };
    Peer {
        addr: ip(r),
        asn: r.u32(),
        source,
    }
}

fn attrs(r: &mut Rng) -> Arc<PathAttributes> {
    let as_path = (!r.chance(5)).then(|| {
        (0..r.below(4))
            .map(|_| AsSegment {
                kind: r.pick(&[1, 2, 2, 3, 4, 0, 9]),
                asns: (0..r.below(5)).map(|_| r.u32()).collect(),
            })
            .collect()
    });
    Arc::new(PathAttributes {
        origin: (!r.chance(4)).then(|| r.below(5) as u8),
        as_path,
        med: r.opt_u32(),
        local_pref: r.opt_u32(),
        atomic_aggregate: r.chance(2),
        aggregator: r
            .chance(2)
            .then(|| (r.u32(), Ipv4Addr::from(r.next() as u32))),
        communities: (0..r.below(4)).map(|_| r.u32()).collect(),
        extended_communities: (0..r.below(3) * r.below(2))
            .map(|_| r.next().to_be_bytes())
            .collect(),
        large_communities: (0..r.below(3) * r.below(2))
            .map(|_| [r.u32(), r.u32(), r.u32()])
            .collect(),
        other: (0..r.below(2))
            .map(|_| RawAttribute {
                flags: r.next() as u8,
                type_code: r.next() as u8,
                value: (0..r.below(6)).map(|_| r.next() as u8).collect(),
            })
            .collect(),
    })
}

fn prefix(r: &mut Rng) -> Prefix {
    let addr = ip(r);
    let max = if addr.is_ipv4() { 33 } else { 129 };
    Prefix {
        addr,
        len: r.below(max) as u8,
    }
}

/// Makes events; the route of the last one is reused often (same set, same or other next hop).
struct Gen {
    r: Rng,
    last: Option<Route>,
    last_peer: Option<Peer>,
}

impl Gen {
    fn route(&mut self) -> Route {
        let route = match (&self.last, self.r.below(4)) {
            (Some(l), 0 | 1) => l.clone(),
            (Some(l), 2) => Route {
                next_hop: (!self.r.chance(5)).then(|| ip(&mut self.r)),
                attrs: Arc::clone(&l.attrs),
            },
            _ => Route {
                next_hop: (!self.r.chance(5)).then(|| ip(&mut self.r)),
                attrs: attrs(&mut self.r),
            },
        };
        self.last = Some(route.clone());
        route
    }

    fn peer(&mut self) -> Peer {
        let p = match self.last_peer {
            Some(p) if self.r.chance(2) => p,
            _ => peer(&mut self.r),
        };
        self.last_peer = Some(p);
        p
    }

    fn families(&mut self) -> Vec<Family> {
        [Family::Ipv4Unicast, Family::Ipv6Unicast]
            .into_iter()
            .filter(|_| self.r.chance(2))
            .collect()
    }

    fn notification(&mut self) -> Notification {
        let r = &mut self.r;
        Notification {
            code: r.below(8) as u8,
            subcode: r.below(12) as u8,
            data: (0..r.below(4)).map(|_| r.next() as u8).collect(),
        }
    }

    fn event(&mut self) -> Event {
        let peer = self.peer();
        let at = time(&mut self.r);
        let kind = self.r.below(16);
        if kind < 9 {
            let change = match kind {
                0..=3 => RouteChange::Announce {
                    prefix: prefix(&mut self.r),
                    route: self.route(),
                },
                4 => RouteChange::Withdraw {
                    prefix: prefix(&mut self.r),
                    previous: self.route(),
                },
                5 | 6 => {
                    let changed = AttrKind::ALL
                        .into_iter()
                        .filter(|_| self.r.chance(3))
                        .collect();
                    RouteChange::AttributeChange {
                        prefix: prefix(&mut self.r),
                        previous: Box::new(self.route()),
                        route: self.route(),
                        changed,
                    }
                }
                7 => RouteChange::EndOfRib,
                _ => RouteChange::Resync(match self.r.below(3) {
                    0 => ResyncMark::Begin,
                    1 => ResyncMark::Route {
                        prefix: prefix(&mut self.r),
                        route: self.route(),
                    },
                    _ => ResyncMark::End {
                        routes: self.r.next(),
                    },
                }),
            };
            let family = if self.r.chance(2) {
                Family::Ipv4Unicast
            } else {
                Family::Ipv6Unicast
            };
            return Event::Route(RouteEvent {
                peer,
                family,
                path_id: self.r.opt_u32(),
                received: at,
                source_time: self.r.chance(2).then(|| time(&mut self.r)),
                change,
            });
        }
        let r = &mut self.r;
        Event::Session(match kind {
            9 => SessionEvent::Established {
                peer,
                at,
                negotiated: Negotiated {
                    peer_as: r.u32(),
                    peer_router_id: Ipv4Addr::from(r.next() as u32),
                    hold_time: r.next() as u16,
                    keepalive: r.next() as u16,
                    four_octet_as: r.chance(2),
                    families: self.families(),
                    graceful_restart: self.r.chance(2),
                    add_path: self.families(),
                    extended_messages: self.r.chance(2),
                },
            },
            10 => SessionEvent::Down {
                peer,
                at,
                reason: match r.below(5) {
                    0 => DownReason::Sent(self.notification()),
                    1 => DownReason::Received(self.notification()),
                    2 => DownReason::ConnectionClosed,
                    3 => DownReason::Reported(nasty(&mut self.r)),
                    _ => DownReason::PeerRestarted,
                },
                routes_lost: self.r.next() as usize,
                routes_stale: self.r.below(3) as usize,
                stale_families: self.families(),
            },
            11 => SessionEvent::StaleDropped {
                peer,
                at,
                family: r.pick(&Family::ALL),
                routes: r.next() as usize,
                reason: r.pick(&[
                    StaleDropReason::RestartTimerExpired,
                    StaleDropReason::NotPreserved,
                    StaleDropReason::AfiSafiDisabled,
                ]),
            },
            12 => SessionEvent::PrefixLimit {
                peer,
                at,
                family: r.pick(&Family::ALL),
                count: r.next() as usize,
                limit: r.u32(),
                teardown: r.chance(2),
            },
            13 | 14 => SessionEvent::UpdateError {
                peer,
                at,
                action: match r.below(3) {
                    0 => Rfc7606Action::AttributeDiscard {
                        type_code: r.next() as u8,
                        reason: r.pick(STATIC_REASONS),
                    },
                    1 => Rfc7606Action::TreatAsWithdraw {
                        type_code: r.chance(2).then(|| r.next() as u8),
                        reason: r.pick(STATIC_REASONS),
                    },
                    _ => Rfc7606Action::AfiSafiDisable {
                        family: r.pick(&Family::ALL),
                        type_code: r.next() as u8,
                        reason: r.pick(STATIC_REASONS),
                    },
                },
            },
            _ => SessionEvent::Statistics {
                peer,
                at,
                source_time: r.chance(2).then(|| time(r)),
                stats: (0..r.below(5))
                    .map(|_| {
                        let value = (!r.chance(3)).then(|| r.next());
                        Statistic {
                            stat_type: r.pick(&[0, 7, 9, 10, 11, 14, 17, 200, u16::MAX]),
                            afi_safi: r.chance(2).then(|| (r.next() as u16, r.next() as u8)),
                            value,
                            raw: (0..r.below(9)).map(|_| r.next() as u8).collect(),
                        }
                    })
                    .collect(),
            },
        })
    }
}

fn type_of(line: &str) -> String {
    line.rsplit("\"type\":\"")
        .next()
        .and_then(|t| t.split('"').next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn every_event_kind_is_written_byte_for_byte_as_event_json() {
    let mut g = Gen {
        r: Rng(0x2545_f491_4f6c_dd1d),
        last: None,
        last_peer: None,
    };
    // One writer for the whole stream, as a command uses it (its caches carry over), and a fresh
    // one per event (no cache).
    let mut stream = JsonlWriter::new();
    let mut kinds = BTreeMap::new();
    let mut buf = Vec::new();
    for i in 0..60_000 {
        let ev = g.event();
        let want = format!("{}\n", event_json(&ev));
        buf.clear();
        stream.line(&mut buf, &ev);
        let got = String::from_utf8(buf.clone()).expect("UTF-8");
        assert_eq!(got, want, "event {i}: {ev:?}");
        let mut fresh = Vec::new();
        JsonlWriter::new().line(&mut fresh, &ev);
        assert_eq!(fresh, want.as_bytes(), "event {i} (fresh writer): {ev:?}");
        *kinds.entry(type_of(&want)).or_insert(0u32) += 1;
    }
    for k in [
        "announce",
        "withdraw",
        "attribute_change",
        "end_of_rib",
        "resync",
        "session_established",
        "session_down",
        "stale_dropped",
        "prefix_limit",
        "update_error",
        "statistics",
    ] {
        assert!(
            kinds.get(k).is_some_and(|n| *n > 100),
            "too few {k} events compared: {kinds:?}"
        );
    }
}

#[test]
fn a_cached_attribute_set_is_not_reused_for_another_next_hop_or_set() {
    // Same set, then another next hop, then an equal but distinct set with another AS path:
    // each line must show its own route.
    let set = Arc::new(PathAttributes {
        as_path: Some(vec![AsSegment {
            kind: 2,
            asns: vec![65001, 65002],
        }]),
        origin: Some(0),
        ..PathAttributes::default()
    });
    let other = Arc::new(PathAttributes {
        as_path: Some(vec![AsSegment {
            kind: 1,
            asns: vec![1, 2],
        }]),
        ..(*set).clone()
    });
    let ev = |attrs: &Arc<PathAttributes>, nh: &str| {
        Event::Route(RouteEvent {
            peer: Peer::session("198.18.0.1".parse().expect("ip"), 65001),
            family: Family::Ipv4Unicast,
            path_id: None,
            received: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            source_time: None,
            change: RouteChange::Announce {
                prefix: Prefix {
                    addr: "198.19.0.0".parse().expect("ip"),
                    len: 24,
                },
                route: Route {
                    next_hop: Some(nh.parse().expect("ip")),
                    attrs: Arc::clone(attrs),
                },
            },
        })
    };
    let mut w = JsonlWriter::new();
    for e in [
        ev(&set, "198.18.0.1"),
        ev(&set, "198.18.0.1"),
        ev(&set, "198.18.0.9"),
        ev(&other, "198.18.0.9"),
        ev(&set, "fd00::1"),
    ] {
        let mut b = Vec::new();
        w.line(&mut b, &e);
        assert_eq!(b, format!("{}\n", event_json(&e)).as_bytes());
    }
}
