//! RFC 7606 / RFC 7607 (and RFC 9012 §13) on the wire: a table of malformed UPDATEs, one row per
//! rule, sent by a raw-socket peer to the real `watch` binary.
//!
//! The test plays the router: a thread enters the router namespace (setns) to open the TCP
//! connection from 198.18.0.1, then the test speaks BGP on it with bytes built in `common`
//! (OPEN exchange, then crafted UPDATEs). The listener runs in the other namespace
//! (`ip netns exec`), passive, eBGP, printing `--format jsonl`. Every row asserts the exact
//! outcome:
//! - treat-as-withdraw: the prefix was announced first, the malformed UPDATE for it yields the
//!   `update_error` event naming the attribute and a `withdraw` event for the prefix;
//! - attribute discard: the malformed UPDATE also changes the MED, and the `attribute_change`
//!   event's `changed` list proves the attribute is gone from the stored route (or was never
//!   taken in);
//! - kept: an attribute the listener does not decode stays opaque, no error at all;
//! - session reset: the exact NOTIFICATION code/subcode read from the wire, the connection closed,
//!   and a `session_down` event.
//!
//! Rows that must NOT reset also prove it: a following valid UPDATE on the same connection still
//! produces an `announce` event, and no `session_down` appears.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::lab::*;
use common::*;
use foureyes_bgp_listener::wire::{Frame, Framer};
use serde_json::{Value, json};

const PEER_AS: u32 = 65001;
const LONG: Duration = Duration::from_secs(60);

/// The test's side of the session.
struct RawPeer {
    s: TcpStream,
    f: Framer,
    /// The listener's OPEN (body).
    their_open: Vec<u8>,
}

impl RawPeer {
    /// Connects from the router namespace and completes the OPEN exchange (hold time 0: no timers
    /// on either side, however slow the machine).
    fn connect(lab: &Lab) -> RawPeer {
        RawPeer::connect_with(lab, &full_caps(PEER_AS))
    }

    /// Like `connect`, with these capabilities in the OPEN.
    fn connect_with(lab: &Lab, caps: &[u8]) -> RawPeer {
        let to = SocketAddr::new(ip(LISTENER_V4), 179);
        let s = lab.connect_from_router(to, LONG);
        s.set_read_timeout(Some(LONG)).expect("timeout");
        let mut p = RawPeer {
            s,
            f: Framer::new(),
            their_open: Vec::new(),
        };
        p.send(&open_with(65001, 0, [198, 18, 0, 1], caps));
        let open = p.next().expect("the listener's OPEN");
        assert_eq!(open.kind, 1, "the listener's OPEN");
        p.their_open = open.body;
        assert_eq!(p.next().map(|f| f.kind), Some(4), "its KEEPALIVE");
        p.send(&keepalive());
        p
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to the listener");
    }

    /// The next message from the listener, `None` once it closed the connection.
    fn next(&mut self) -> Option<Frame> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.f.next_frame().expect("the listener's bytes frame") {
                return Some(f);
            }
            match self.s.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.f.push(&buf[..n]),
            }
        }
    }
}

fn nlri_v4(i: u8) -> Vec<u8> {
    vec![24, 198, 19, i]
}

fn prefix_v4(i: u8) -> String {
    format!("198.19.{i}.0/24")
}

fn med(v: u32) -> Vec<u8> {
    attr(0x80, 4, &v.to_be_bytes())
}

/// The attributes of a good route, by type, in wire order: ORIGIN, AS_PATH, NEXT_HOP, MED,
/// ATOMIC_AGGREGATE, AGGREGATOR (4-octet AS, as negotiated).
fn good(med_value: u32) -> Vec<(u8, Vec<u8>)> {
    vec![
        (1, attr(0x40, 1, &[0])),
        (2, as_path4(&[PEER_AS])),
        (3, attr(0x40, 3, &[198, 18, 0, 1])),
        (4, med(med_value)),
        (6, attr(0x40, 6, &[])),
        (7, attr(0xc0, 7, &[0, 0, 0xfd, 0xe9, 198, 18, 0, 1])),
    ]
}

/// The good attributes for an external (`internal == false`) or internal peer: an internal peer
/// also sends LOCAL_PREF 100, after the MED.
fn good_for(internal: bool, med_value: u32) -> Vec<(u8, Vec<u8>)> {
    let mut g = good(med_value);
    if internal {
        g.insert(4, (5, attr(0x40, 5, &[0, 0, 0, 100])));
    }
    g
}

/// How a row changes the good attributes (the MED is always 2 in the malformed UPDATE, 1 before).
enum Edit {
    /// Replace the attribute of this type with these bytes (in its place).
    Replace(u8, Vec<u8>),
    /// Leave this type out.
    Remove(u8),
    /// Append these bytes after the good attributes.
    Append(Vec<u8>),
}

fn edited(internal: bool, edit: &Edit) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, bytes) in good_for(internal, 2) {
        match edit {
            Edit::Replace(rt, new) if *rt == t => out.extend_from_slice(new),
            Edit::Remove(rt) if *rt == t => {}
            _ => out.extend_from_slice(&bytes),
        }
    }
    if let Edit::Append(extra) = edit {
        out.extend_from_slice(extra);
    }
    out
}

enum Expect {
    /// Treat-as-withdraw naming this attribute type.
    Withdraw(u8),
    /// Attribute discard of this type; `changed` is the attribute_change event's list.
    Discard(u8, &'static [&'static str]),
    /// No RFC 7606 action; the route changes as listed.
    Kept(&'static [&'static str]),
}

struct Row {
    rule: &'static str,
    edit: Edit,
    expect: Expect,
}

fn rows() -> Vec<Row> {
    use Edit::*;
    use Expect::*;
    // A Tunnel Encapsulation attribute (RFC 9012) with one TLV (type 8, VXLAN) whose only
    // sub-TLV claims 10 octets where 2 are left: the TLV is disregarded, no valid TLV remains.
    let bad_tunnel = attr(0xc0, 23, &[0, 8, 0, 4, 1, 10, 0, 0]);
    // BGP-LS attribute (29) with the transitive bit set and a truncated TLV: the CVE-2023-4481
    // shape (Junos reset sessions on it); not decoded here, so kept opaque.
    let bad_bgp_ls = attr(0xc0, 29, &[0x04, 0x04, 0x00, 0x10, 0x01]);
    vec![
        Row {
            rule: "ORIGIN bad length (RFC 7606 §7.1)",
            edit: Replace(1, attr(0x40, 1, &[0, 0])),
            expect: Withdraw(1),
        },
        Row {
            rule: "ORIGIN bad value (RFC 7606 §7.1)",
            edit: Replace(1, attr(0x40, 1, &[3])),
            expect: Withdraw(1),
        },
        Row {
            rule: "AS_PATH unknown segment type (RFC 7606 §7.2)",
            edit: Replace(2, attr(0x40, 2, &[7, 1, 0, 0, 0xfd, 0xe9])),
            expect: Withdraw(2),
        },
        Row {
            rule: "AS_PATH segment overruns the attribute (RFC 7606 §7.2)",
            edit: Replace(2, attr(0x40, 2, &[2, 2, 0, 0, 0xfd, 0xe9])),
            expect: Withdraw(2),
        },
        Row {
            rule: "AS 0 in AS_PATH (RFC 7607 §2)",
            edit: Replace(2, as_path4(&[PEER_AS, 0])),
            expect: Withdraw(2),
        },
        Row {
            rule: "AS_CONFED_SEQUENCE in AS_PATH from an external peer (RFC 7606 §7.2, RFC 5065 §5.1)",
            edit: Replace(
                2,
                attr(0x40, 2, &[3, 1, 0, 0, 0xfd, 0xea, 2, 1, 0, 0, 0xfd, 0xe9]),
            ),
            expect: Withdraw(2),
        },
        Row {
            rule: "AS_CONFED_SET in AS_PATH from an external peer (RFC 7606 §7.2, RFC 5065 §5.1)",
            edit: Replace(
                2,
                attr(0x40, 2, &[2, 1, 0, 0, 0xfd, 0xe9, 4, 1, 0, 0, 0xfd, 0xea]),
            ),
            expect: Withdraw(2),
        },
        Row {
            rule: "NEXT_HOP bad length (RFC 7606 §7.3)",
            edit: Replace(3, attr(0x40, 3, &[198, 18, 0, 1, 0])),
            expect: Withdraw(3),
        },
        Row {
            rule: "MULTI_EXIT_DISC bad length (RFC 7606 §7.4)",
            edit: Replace(4, attr(0x80, 4, &[0, 0, 2])),
            expect: Withdraw(4),
        },
        Row {
            rule: "LOCAL_PREF from an external peer (RFC 7606 §7.5)",
            edit: Append(attr(0x40, 5, &[0, 0, 0, 100])),
            expect: Discard(5, &["med"]),
        },
        Row {
            rule: "LOCAL_PREF with a bad length from an external peer is still discard (§7.5)",
            edit: Append(attr(0x40, 5, &[0, 0, 1])),
            expect: Discard(5, &["med"]),
        },
        Row {
            rule: "ATOMIC_AGGREGATE bad length (RFC 7606 §7.6)",
            edit: Replace(6, attr(0x40, 6, &[1])),
            expect: Discard(6, &["med", "atomic_aggregate"]),
        },
        Row {
            rule: "AGGREGATOR bad length (RFC 7606 §7.7)",
            edit: Replace(7, attr(0xc0, 7, &[0, 0, 0xfd, 0xe9, 198, 18, 0])),
            expect: Discard(7, &["med", "aggregator"]),
        },
        Row {
            rule: "AS 0 in AGGREGATOR (RFC 7607 §2, handled as RFC 7606 §7.7)",
            edit: Replace(7, attr(0xc0, 7, &[0, 0, 0, 0, 198, 18, 0, 1])),
            expect: Discard(7, &["med", "aggregator"]),
        },
        Row {
            rule: "COMMUNITIES bad length (RFC 7606 §7.8)",
            edit: Append(attr(0xc0, 8, &[0xfd, 0xe9, 0])),
            expect: Withdraw(8),
        },
        Row {
            rule: "ORIGINATOR_ID from an external peer (RFC 7606 §7.9)",
            edit: Append(attr(0x80, 9, &[198, 18, 0, 9])),
            expect: Discard(9, &["med"]),
        },
        Row {
            rule: "CLUSTER_LIST from an external peer (RFC 7606 §7.10)",
            edit: Append(attr(0x80, 10, &[198, 18, 0, 9])),
            expect: Discard(10, &["med"]),
        },
        Row {
            rule: "EXTENDED_COMMUNITIES bad length (RFC 7606 §7.14)",
            edit: Append(attr(0xc0, 16, &[0, 2, 0xfd, 0xe9, 0, 0, 7])),
            expect: Withdraw(16),
        },
        Row {
            rule: "LARGE_COMMUNITIES bad length (RFC 8092 §6)",
            edit: Append(attr(0xc0, 32, &[0, 0, 0xfd, 0xe9, 0, 0, 0, 1, 0, 0, 0])),
            expect: Withdraw(32),
        },
        Row {
            rule: "attribute flags: ORIGIN marked optional (RFC 7606 §3 c)",
            edit: Replace(1, attr(0xc0, 1, &[0])),
            expect: Withdraw(1),
        },
        Row {
            rule: "attribute flags: COMMUNITIES marked well-known (RFC 7606 §3 c)",
            edit: Append(attr(0x40, 8, &[0xfd, 0xe9, 0, 1])),
            expect: Withdraw(8),
        },
        Row {
            rule: "missing well-known mandatory ORIGIN (RFC 7606 §3 d)",
            edit: Remove(1),
            expect: Withdraw(1),
        },
        Row {
            rule: "missing well-known mandatory NEXT_HOP with IPv4 NLRI (RFC 7606 §3 d)",
            edit: Remove(3),
            expect: Withdraw(3),
        },
        Row {
            rule: "duplicate attribute: repeats discarded, the first kept (RFC 7606 §3 g)",
            edit: Append(med(99)),
            expect: Discard(4, &["med"]),
        },
        Row {
            rule: "attribute length overruns the attribute block (RFC 7606 §4)",
            edit: Append(vec![0xc0, 8, 200, 0xfd, 0xe9, 0, 1]),
            expect: Withdraw(8),
        },
        Row {
            rule: "malformed Tunnel Encapsulation, CVE-2023-38802 (RFC 9012 §13: discard)",
            edit: Append(bad_tunnel),
            expect: Discard(23, &["med"]),
        },
        Row {
            rule: "malformed optional transitive BGP-LS attribute, CVE-2023-4481 (kept opaque)",
            edit: Append(bad_bgp_ls),
            expect: Kept(&["med", "other"]),
        },
    ]
}

/// The rules for attributes only an internal peer may send (RFC 7606 §7.5, §7.9, §7.10), for the
/// iBGP pass: from an internal peer a malformed one is treat-as-withdraw, a good one is kept
/// (LOCAL_PREF decoded, ORIGINATOR_ID and CLUSTER_LIST opaque). From an external peer the same
/// attributes are discarded whatever their form (the eBGP rows in `rows`).
fn ibgp_rows() -> Vec<Row> {
    use Edit::*;
    use Expect::*;
    let mut reflected = attr(0x80, 9, &[198, 18, 0, 9]);
    reflected.extend(attr(0x80, 10, &[198, 18, 0, 9, 198, 18, 0, 10]));
    vec![
        Row {
            rule: "LOCAL_PREF of 3 octets from an internal peer (RFC 7606 §7.5)",
            edit: Replace(5, attr(0x40, 5, &[0, 0, 1])),
            expect: Withdraw(5),
        },
        Row {
            rule: "LOCAL_PREF of 5 octets from an internal peer (RFC 7606 §7.5)",
            edit: Replace(5, attr(0x40, 5, &[0, 0, 0, 0, 100])),
            expect: Withdraw(5),
        },
        Row {
            rule: "attribute flags: LOCAL_PREF marked optional from an internal peer (RFC 7606 §3 c)",
            edit: Replace(5, attr(0xc0, 5, &[0, 0, 0, 100])),
            expect: Withdraw(5),
        },
        Row {
            rule: "ORIGINATOR_ID of 3 octets from an internal peer (RFC 7606 §7.9)",
            edit: Append(attr(0x80, 9, &[198, 18, 0])),
            expect: Withdraw(9),
        },
        Row {
            rule: "ORIGINATOR_ID of 8 octets from an internal peer (RFC 7606 §7.9)",
            edit: Append(attr(0x80, 9, &[198, 18, 0, 9, 198, 18, 0, 9])),
            expect: Withdraw(9),
        },
        Row {
            rule: "CLUSTER_LIST length not a multiple of 4 from an internal peer (RFC 7606 §7.10)",
            edit: Append(attr(0x80, 10, &[198, 18, 0, 9, 1])),
            expect: Withdraw(10),
        },
        Row {
            rule: "empty CLUSTER_LIST from an internal peer (RFC 7606 §7.10)",
            edit: Append(attr(0x80, 10, &[])),
            expect: Withdraw(10),
        },
        Row {
            rule: "a good LOCAL_PREF from an internal peer is taken in",
            edit: Replace(5, attr(0x40, 5, &[0, 0, 0, 200])),
            expect: Kept(&["med", "local_pref"]),
        },
        Row {
            rule: "a good ORIGINATOR_ID and CLUSTER_LIST from an internal peer are kept",
            edit: Append(reflected),
            expect: Kept(&["med", "other"]),
        },
    ]
}

/// Session resets: the malformed UPDATE (whole message) and the NOTIFICATION code/subcode.
fn reset_rows() -> Vec<(&'static str, Vec<u8>, (u8, u8))> {
    let good_attrs: Vec<u8> = good(1).into_iter().flat_map(|(_, b)| b).collect();
    let origin_path: Vec<u8> = good(1)
        .into_iter()
        .filter(|(t, _)| *t == 1 || *t == 2)
        .flat_map(|(_, b)| b)
        .collect();
    let v6_nh = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut mp_short = origin_path.clone();
    mp_short.extend(attr(0x80, 14, &[0, 2]));
    let mut mp_twice = origin_path.clone();
    mp_twice.extend(mp_reach_v6(v6_nh, &[64, 0x20, 0x01, 0, 2, 0, 0, 0, 0xc]));
    mp_twice.extend(mp_reach_v6(v6_nh, &[64, 0x20, 0x01, 0, 2, 0, 0, 0, 0xd]));
    let mut total_overrun = update(&[], &good_attrs, &nlri_v4(200));
    // Total Path Attribute Length (after the 2-octet withdrawn length) one past the message.
    let alen = u16::try_from(good_attrs.len() + 5).expect("len");
    total_overrun[21..23].copy_from_slice(&alen.to_be_bytes());
    let mut withdrawn_overrun = update(&[], &[], &[]);
    withdrawn_overrun[19..21].copy_from_slice(&9u16.to_be_bytes());
    let mut unknown_wk = good_attrs.clone();
    unknown_wk.extend(attr(0x40, 99, &[1]));
    vec![
        (
            "MP_REACH_NLRI too short for its AFI/SAFI: no family to disable (RFC 7606 §3 j)",
            update(&[], &mp_short, &[]),
            (3, 9),
        ),
        (
            "MP_REACH_NLRI twice (RFC 7606 §3 g)",
            update(&[], &mp_twice, &[]),
            (3, 1),
        ),
        (
            "IPv4 NLRI prefix length 33 (RFC 4271 §6.3, RFC 7606 §5.3)",
            update(&[], &good_attrs, &[33, 198, 19, 0, 0, 0]),
            (3, 10),
        ),
        (
            "Total Path Attribute Length overruns the UPDATE (RFC 7606 §4)",
            total_overrun,
            (3, 1),
        ),
        (
            "Withdrawn Routes Length overruns the UPDATE (RFC 7606 §4)",
            withdrawn_overrun,
            (3, 1),
        ),
        (
            "unrecognized well-known attribute (RFC 4271 §6.3)",
            update(&[], &unknown_wk, &nlri_v4(201)),
            (3, 2),
        ),
    ]
}

fn watch(lab: &Lab) -> Watch {
    watch_as(lab, "65002")
}

/// The passive listener with local AS `local_as` (65001 makes the raw peer internal).
fn watch_as(lab: &Lab, local_as: &str) -> Watch {
    lab.watch(&[
        "--local-as",
        local_as,
        "--peer",
        ROUTER_V4,
        "--remote-as",
        "65001",
        "--listen",
        LISTENER_V4,
        "--no-graceful-restart",
    ])
}

fn errors_since(w: &Watch, mark: usize) -> Vec<&Value> {
    w.events
        .seen
        .iter()
        .skip(mark)
        .filter(|e| e["type"] == "update_error")
        .collect()
}

/// Announces a probe prefix on the same connection and waits for its event: the session is up.
fn assert_still_up(w: &mut Watch, peer: &mut RawPeer, i: u8, rule: &str) {
    let attrs: Vec<u8> = good(1).into_iter().flat_map(|(_, b)| b).collect();
    peer.send(&update(&[], &attrs, &[25, 198, 19, i, 128]));
    let p = format!("198.19.{i}.128/25");
    w.events.wait(&format!("probe announce after {rule}"), |e| {
        is(e, "announce", &p)
    });
    assert!(
        w.events.seen.iter().all(|e| e["type"] != "session_down"),
        "{rule}: the session must not reset: {:#?}",
        w.events.seen
    );
}

fn origin_and_path() -> Vec<u8> {
    good(1)
        .into_iter()
        .filter(|(t, _)| *t == 1 || *t == 2)
        .flat_map(|(_, b)| b)
        .collect()
}

const V6_NH: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// The good attributes without NEXT_HOP, MED `med_value`, announcing 2001:2:0:`i`::/64 in
/// MP_REACH_NLRI.
fn v6_attrs(med_value: u32, i: u8) -> Vec<u8> {
    let mut a: Vec<u8> = good(med_value)
        .into_iter()
        .filter(|(t, _)| *t != 3)
        .flat_map(|(_, b)| b)
        .collect();
    a.extend(mp_reach_v6(V6_NH, &[64, 0x20, 0x01, 0, 2, 0, 0, 0, i]));
    a
}

fn prefix_v6(i: u8) -> String {
    format!("2001:2:0:{i:x}::/64")
}

/// Sends `bytes`, which must disable IPv6 unicast (RFC 4760 §7 AFI/SAFI disable) and not reset:
/// one `update_error` naming the attribute and the family, one `stale_dropped` with
/// `afi-safi-disabled` carrying the `routes` held, a later valid IPv6 announcement ignored, and
/// IPv4 still working on the same connection.
fn assert_disabled(
    w: &mut Watch,
    peer: &mut RawPeer,
    bytes: &[u8],
    t: u8,
    routes: u64,
    probe: u8,
    rule: &str,
) {
    let mark = w.events.seen.len();
    peer.send(bytes);
    let dropped = w
        .events
        .wait_from(mark, LONG, rule, |e| e["type"] == "stale_dropped");
    assert_eq!(dropped["afi_safi"], "ipv6-unicast", "{rule}: {dropped}");
    assert_eq!(dropped["reason"], "afi-safi-disabled", "{rule}: {dropped}");
    assert_eq!(dropped["routes"], routes, "{rule}: {dropped}");
    let errs = errors_since(w, mark);
    assert!(
        errs.len() == 1
            && errs[0]["action"] == "afi-safi-disable"
            && errs[0]["attribute"] == t
            && errs[0]["afi_safi"] == "ipv6-unicast",
        "{rule}: want one afi-safi-disable for attribute {t}, got {errs:#?}"
    );
    // The family stays disabled for the session: a valid IPv6 announcement makes no event, and
    // the IPv4 probe after it does.
    peer.send(&update(&[], &v6_attrs(1, 0x30), &[]));
    let attrs: Vec<u8> = good(1).into_iter().flat_map(|(_, b)| b).collect();
    peer.send(&update(&[], &attrs, &[25, 198, 19, probe, 128]));
    let p = format!("198.19.{probe}.128/25");
    w.events
        .wait_from(mark, LONG, &format!("probe after {rule}"), |e| {
            is(e, "announce", &p)
        });
    assert!(
        w.events
            .seen
            .iter()
            .skip(mark)
            .all(|e| e["type"] != "session_down"),
        "{rule}: the session must not reset: {:#?}",
        w.events.seen
    );
    assert!(
        w.events
            .seen
            .iter()
            .skip(mark)
            .all(|e| !is(e, "announce", &prefix_v6(0x30))),
        "{rule}: IPv6 must stay disabled"
    );
}

/// The IPv6 (MP_REACH_NLRI) rows, after the IPv4 table, on the same session.
fn v6_rows(w: &mut Watch, peer: &mut RawPeer) {
    // Announce 2001:2:0:b::/64 .. 2001:2:0:d::/64 with MED 1.
    for i in [0xb, 0xc, 0xd] {
        peer.send(&update(&[], &v6_attrs(1, i), &[]));
        w.events.wait(&format!("announce v6 {i}"), |e| {
            is(e, "announce", &prefix_v6(i))
        });
    }

    let rule = "NEXT_HOP malformed in an UPDATE with only MP NLRI: attribute discard (RFC 7606 §7.3, RFC 4760 §3)";
    let mark = w.events.seen.len();
    let mut a = v6_attrs(2, 0xb);
    a.extend(attr(0x40, 3, &[198, 18, 0]));
    peer.send(&update(&[], &a, &[]));
    let ch = w.events.wait_from(mark, LONG, rule, |e| {
        is(e, "attribute_change", &prefix_v6(0xb))
    });
    assert_eq!(ch["changed"], json!(["med"]), "{rule}: {ch}");
    let errs = errors_since(w, mark);
    assert!(
        errs.len() == 1 && errs[0]["action"] == "attribute-discard" && errs[0]["attribute"] == 3,
        "{rule}: {errs:#?}"
    );
    assert_still_up(w, peer, 240, rule);

    let rule = "MP_REACH_NLRI flags: transitive bit set: treat-as-withdraw (RFC 7606 §3 c)";
    let mark = w.events.seen.len();
    let mut a: Vec<u8> = good(1)
        .into_iter()
        .filter(|(t, _)| *t != 3)
        .flat_map(|(_, b)| b)
        .collect();
    let mut mp = mp_reach_v6(V6_NH, &[64, 0x20, 0x01, 0, 2, 0, 0, 0, 0xc]);
    mp[0] = 0xc0;
    a.extend(mp);
    peer.send(&update(&[], &a, &[]));
    w.events
        .wait_from(mark, LONG, rule, |e| is(e, "withdraw", &prefix_v6(0xc)));
    let errs = errors_since(w, mark);
    assert!(
        errs.len() == 1 && errs[0]["action"] == "treat-as-withdraw" && errs[0]["attribute"] == 14,
        "{rule}: {errs:#?}"
    );
    assert_still_up(w, peer, 241, rule);

    let rule = "MP_UNREACH_NLRI flags: marked well-known: treat-as-withdraw (RFC 7606 §3 c)";
    let mark = w.events.seen.len();
    let mut mp = mp_unreach_v6(&[64, 0x20, 0x01, 0, 2, 0, 0, 0, 0xd]);
    mp[0] = 0x40;
    peer.send(&update(&[], &mp, &[]));
    w.events
        .wait_from(mark, LONG, rule, |e| is(e, "withdraw", &prefix_v6(0xd)));
    let errs = errors_since(w, mark);
    assert!(
        errs.len() == 1 && errs[0]["action"] == "treat-as-withdraw" && errs[0]["attribute"] == 15,
        "{rule}: {errs:#?}"
    );
    assert_still_up(w, peer, 242, rule);

    // 2001:2:0:b::/64 is the one IPv6 route held now.
    let mut bad = origin_and_path();
    bad.extend(attr(
        0x80,
        14,
        &[
            0, 2, 1, 3, 0x20, 0x01, 0, 0, 64, 0x20, 0x01, 0, 2, 0, 0, 0, 0xe,
        ],
    ));
    assert_disabled(
        w,
        peer,
        &update(&[], &bad, &[]),
        14,
        1,
        251,
        "MP_REACH_NLRI next hop length 3 for IPv6: NLRI not locatable (RFC 7606 §3 j, RFC 4760 §7)",
    );
}

/// Sends each row's malformed UPDATE for a prefix announced just before with the good attributes
/// (for an internal or external peer), asserts its exact outcome, and that the session is still
/// up after it.
fn run_rows(w: &mut Watch, peer: &mut RawPeer, rows: Vec<Row>, internal: bool) {
    // The LOCAL_PREF a discard row leaves on the route: the internal peer's, none from outside.
    let lp = if internal { json!(100) } else { Value::Null };
    for (n, row) in rows.into_iter().enumerate() {
        let i = u8::try_from(n + 1).expect("few rows");
        let prefix = prefix_v4(i);
        let rule = row.rule;
        // Announce first, with MED 1 and the good ATOMIC_AGGREGATE and AGGREGATOR.
        let attrs: Vec<u8> = good_for(internal, 1)
            .into_iter()
            .flat_map(|(_, b)| b)
            .collect();
        peer.send(&update(&[], &attrs, &nlri_v4(i)));
        w.events.wait(&format!("announce before {rule}"), |e| {
            is(e, "announce", &prefix)
        });
        let mark = w.events.seen.len();
        peer.send(&update(&[], &edited(internal, &row.edit), &nlri_v4(i)));
        match row.expect {
            Expect::Withdraw(t) => {
                w.events
                    .wait_from(mark, LONG, rule, |e| is(e, "withdraw", &prefix));
                let errs = errors_since(w, mark);
                assert!(
                    errs.len() == 1
                        && errs[0]["action"] == "treat-as-withdraw"
                        && errs[0]["attribute"] == t,
                    "{rule}: want one treat-as-withdraw for attribute {t}, got {errs:#?}"
                );
            }
            Expect::Discard(t, changed) => {
                let ch = w
                    .events
                    .wait_from(mark, LONG, rule, |e| is(e, "attribute_change", &prefix));
                assert_eq!(ch["changed"], json!(changed), "{rule}: {ch}");
                assert_eq!(ch["med"], 2, "{rule}: the first MED is the one kept");
                assert_eq!(ch["local_pref"], lp, "{rule}: {ch}");
                let errs = errors_since(w, mark);
                assert!(
                    errs.len() == 1
                        && errs[0]["action"] == "attribute-discard"
                        && errs[0]["attribute"] == t,
                    "{rule}: want one attribute-discard for attribute {t}, got {errs:#?}"
                );
            }
            Expect::Kept(changed) => {
                let ch = w
                    .events
                    .wait_from(mark, LONG, rule, |e| is(e, "attribute_change", &prefix));
                assert_eq!(ch["changed"], json!(changed), "{rule}: {ch}");
                let errs = errors_since(w, mark);
                assert!(errs.is_empty(), "{rule}: no RFC 7606 action: {errs:#?}");
            }
        }
        assert_still_up(w, peer, i, rule);
    }
}

#[test]
fn each_rfc7606_rule_has_its_exact_outcome_on_the_wire() {
    let lab = Lab::new("raw");
    let mut w = watch(&lab);
    let mut peer = RawPeer::connect(&lab);
    w.events
        .wait("established", |e| e["type"] == "session_established");

    run_rows(&mut w, &mut peer, rows(), false);

    // Treat-as-withdraw also covers prefixes in MP_REACH_NLRI (RFC 7606 §5.3).
    let v6_nh = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let v6_nlri = [64, 0x20, 0x01, 0, 2, 0, 0, 0, 0xa];
    let mut a: Vec<u8> = good(1)
        .into_iter()
        .filter(|(t, _)| *t != 3)
        .flat_map(|(_, b)| b)
        .collect();
    a.extend(mp_reach_v6(v6_nh, &v6_nlri));
    // No NEXT_HOP in an UPDATE whose only NLRI are in MP_REACH_NLRI: valid (RFC 4760 §3).
    let mark = w.events.seen.len();
    peer.send(&update(&[], &a, &[]));
    w.events
        .wait("v6 announce", |e| is(e, "announce", "2001:2:0:a::/64"));
    assert!(
        errors_since(&w, mark).is_empty(),
        "NEXT_HOP absent with only MP_REACH_NLRI is no error"
    );
    let mark = w.events.seen.len();
    a.extend(attr(0xc0, 8, &[1, 2, 3]));
    peer.send(&update(&[], &a, &[]));
    w.events.wait_from(mark, LONG, "v6 treat-as-withdraw", |e| {
        is(e, "withdraw", "2001:2:0:a::/64")
    });
    assert_still_up(&mut w, &mut peer, 250, "v6 treat-as-withdraw");

    v6_rows(&mut w, &mut peer);

    // Session resets: the exact NOTIFICATION, the connection closed, the session reported down.
    // The listener keeps listening, so each row gets a fresh session.
    let mut connected = true;
    let resets = reset_rows().len();
    for (rule, bytes, (code, subcode)) in reset_rows() {
        let mark = w.events.seen.len();
        if !connected {
            peer = RawPeer::connect(&lab);
        }
        connected = false;
        let attrs: Vec<u8> = good(1).into_iter().flat_map(|(_, b)| b).collect();
        peer.send(&update(&[], &attrs, &nlri_v4(199)));
        w.events
            .wait_from(mark, LONG, "announce before reset", |e| {
                is(e, "announce", &prefix_v4(199))
            });
        peer.send(&bytes);
        let mut got = None;
        while let Some(f) = peer.next() {
            if f.kind == 3 {
                got = f.body.first().copied().zip(f.body.get(1).copied());
            }
        }
        assert_eq!(
            got,
            Some((code, subcode)),
            "{rule}: NOTIFICATION code/subcode (then the listener closed)"
        );
        let down = w
            .events
            .wait_from(mark, LONG, rule, |e| e["type"] == "session_down");
        let reason = down["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with(&format!("sent NOTIFICATION {code}/{subcode} ")),
            "{rule}: {down}"
        );
        assert!(
            down["routes_lost"].as_u64().is_some_and(|n| n >= 1),
            "{rule}: {down}"
        );
    }
    // AFI/SAFI disable again, on a fresh session (IPv6 is negotiated anew): an MP_UNREACH_NLRI
    // whose withdrawn IPv6 NLRI cannot be parsed (a 129-bit prefix).
    let mut peer = RawPeer::connect(&lab);
    let mark = w.events.seen.len();
    let v6 = v6_attrs(1, 0x20);
    peer.send(&update(&[], &v6, &[]));
    w.events
        .wait_from(mark, LONG, "v6 announce on the new session", |e| {
            is(e, "announce", "2001:2:0:20::/64")
        });
    let mut bad = origin_and_path();
    bad.extend(mp_unreach_v6(&[129, 0x20, 0x01]));
    assert_disabled(
        &mut w,
        &mut peer,
        &update(&[], &bad, &[]),
        15,
        1,
        252,
        "MP_UNREACH_NLRI with a 129-bit IPv6 prefix (RFC 7606 §3 j, RFC 4760 §7)",
    );
    assert_eq!(
        w.events
            .seen
            .iter()
            .filter(|e| e["type"] == "session_established")
            .count(),
        resets + 1,
        "one session for all the rows that keep it up, then one per reset, then the last one"
    );
    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");
}

/// The iBGP pass: the listener and the raw peer in the same AS, the internal-only rules with their
/// exact outcomes on one session that never resets.
#[test]
fn ibgp_only_attribute_rules_from_an_internal_peer_are_treat_as_withdraw() {
    let lab = Lab::new("rawi");
    let mut w = watch_as(&lab, "65001");
    let mut peer = RawPeer::connect(&lab);
    let est = w
        .events
        .wait("established", |e| e["type"] == "session_established");
    assert_eq!(est["peer_as"], 65001, "iBGP: {est}");
    run_rows(&mut w, &mut peer, ibgp_rows(), true);
    assert_eq!(
        w.events
            .seen
            .iter()
            .filter(|e| e["type"] == "session_established")
            .count(),
        1,
        "one session for every row"
    );
    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");
}

/// RFC 6793 §4.2.3 on the wire: a peer that does not advertise 4-octet AS numbers sends 2-octet
/// AS_PATHs with AS_TRANS and the real path in AS4_PATH; the listener's route carries the merged
/// path. A malformed AS4_PATH is attribute discard (RFC 6793 §6), the session stays up.
#[test]
fn as4_path_from_a_two_octet_peer_is_merged() {
    let lab = Lab::new("as4");
    let mut w = watch(&lab);
    // MP IPv4 and IPv6 unicast, graceful restart; no 4-octet AS capability.
    let caps = [1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1, 64, 2, 0, 120];
    let mut peer = RawPeer::connect_with(&lab, &caps);
    let up = w
        .events
        .wait("established", |e| e["type"] == "session_established");
    assert_eq!(up["four_octet_as"], false, "{up}");

    // AS_PATH (2-octet) 65001 AS_TRANS AS_TRANS 65010; AS4_PATH 4200000001 4200000002 65010.
    let as_path2 = attr(
        0x40,
        2,
        &[2, 4, 0xfd, 0xe9, 0x5b, 0xa0, 0x5b, 0xa0, 0xfd, 0xf2],
    );
    let mut as4 = vec![2, 3];
    for a in [4_200_000_001u32, 4_200_000_002, 65010] {
        as4.extend_from_slice(&a.to_be_bytes());
    }
    let as4_path = attr(0xc0, 17, &as4);
    let base = |extra: &[u8]| {
        let mut a = attr(0x40, 1, &[0]);
        a.extend(as_path2.clone());
        a.extend(attr(0x40, 3, &[198, 18, 0, 1]));
        a.extend_from_slice(extra);
        a
    };
    peer.send(&update(&[], &base(&as4_path), &nlri_v4(1)));
    let ann = w
        .events
        .wait("merged announce", |e| is(e, "announce", &prefix_v4(1)));
    assert_eq!(
        ann["as_path"], "65001 4200000001 4200000002 65010",
        "AS_PATH + AS4_PATH merged: {ann}"
    );

    // A malformed AS4_PATH (its segment claims 4 ASes, 3 follow): attribute discard, the route
    // keeps the AS_PATH as sent, the session stays up.
    let mut bad = as4.clone();
    bad[1] = 4;
    let mark = w.events.seen.len();
    peer.send(&update(&[], &base(&attr(0xc0, 17, &bad)), &nlri_v4(2)));
    let ann = w
        .events
        .wait_from(mark, LONG, "announce with bad AS4_PATH", |e| {
            is(e, "announce", &prefix_v4(2))
        });
    assert_eq!(ann["as_path"], "65001 23456 23456 65010", "{ann}");
    let errs = errors_since(&w, mark);
    assert!(
        errs.len() == 1 && errs[0]["action"] == "attribute-discard" && errs[0]["attribute"] == 17,
        "{errs:#?}"
    );
    // Still up: a valid UPDATE on the same connection is announced.
    peer.send(&update(&[], &base(&[]), &nlri_v4(3)));
    w.events.wait("probe after a malformed AS4_PATH", |e| {
        is(e, "announce", &prefix_v4(3))
    });
    assert!(
        w.events.seen.iter().all(|e| e["type"] != "session_down"),
        "a malformed AS4_PATH must not reset: {:#?}",
        w.events.seen
    );
    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");
}

/// An UPDATE of `n` /32 prefixes in 198.19.0.0/16 (5 octets each), longer than 4096 octets for
/// n > 815, and the last prefix.
fn big_update(n: u16) -> (Vec<u8>, String) {
    let attrs: Vec<u8> = good(1).into_iter().flat_map(|(_, b)| b).collect();
    let mut nlri = Vec::new();
    let mut last = String::new();
    for i in 0..n {
        let [hi, lo] = i.to_be_bytes();
        nlri.extend_from_slice(&[32, 198, 19, hi, lo]);
        last = format!("198.19.{hi}.{lo}/32");
    }
    (update(&[], &attrs, &nlri), last)
}

/// Sends an UPDATE over 4096 octets that the listener must refuse with NOTIFICATION 1/2 (Bad
/// Message Length, data: the length) and a `session_down`.
fn assert_too_long(w: &mut Watch, peer: &mut RawPeer, what: &str) {
    let mark = w.events.seen.len();
    let (big, _) = big_update(900);
    let len = u16::try_from(big.len()).expect("fits");
    peer.send(&big);
    let mut got = None;
    while let Some(f) = peer.next() {
        if f.kind == 3 {
            got = Some(f.body);
        }
    }
    let mut want = vec![1, 2];
    want.extend_from_slice(&len.to_be_bytes());
    assert_eq!(got, Some(want), "{what}: NOTIFICATION 1/2 with the length");
    let down = w
        .events
        .wait_from(mark, LONG, what, |e| e["type"] == "session_down");
    assert!(
        down["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("sent NOTIFICATION 1/2 ")),
        "{what}: {down}"
    );
}

/// RFC 8654 Extended Messages: advertised by default; an UPDATE over 4096 octets is accepted only
/// when both sides advertised the capability; otherwise (the peer did not, or
/// `--no-extended-messages`) it is Bad Message Length.
#[test]
fn extended_messages_only_when_negotiated() {
    let lab = Lab::new("extmsg");
    let mut w = watch(&lab);
    let mut caps = full_caps(PEER_AS);
    caps.extend_from_slice(&[6, 0]);

    // Both advertise: 900 prefixes in one 4,5 kB UPDATE are accepted.
    let mut peer = RawPeer::connect_with(&lab, &caps);
    let theirs = foureyes_bgp_listener::wire::decode_open(&peer.their_open).expect("OPEN");
    assert!(theirs.extended_message, "advertised by default");
    let est = w
        .events
        .wait("established", |e| e["type"] == "session_established");
    assert_eq!(est["extended_messages"], true, "the event says so: {est}");
    let (big, last) = big_update(900);
    assert!(big.len() > 4096);
    peer.send(&big);
    w.events.wait("the last prefix of the long UPDATE", |e| {
        is(e, "announce", &last)
    });
    let announced = w
        .events
        .seen
        .iter()
        .filter(|e| e["type"] == "announce")
        .count();
    assert_eq!(announced, 900);
    assert_still_up(&mut w, &mut peer, 1, "an extended UPDATE");
    drop(peer);
    let mark = w.events.seen.len();
    w.events.wait_from(mark, LONG, "down after close", |e| {
        e["type"] == "session_down"
    });

    // The peer does not advertise it: 4096 is the bound.
    let mut peer = RawPeer::connect(&lab);
    let mark = w.events.seen.len();
    let est = w.events.wait_from(mark, LONG, "established again", |e| {
        e["type"] == "session_established"
    });
    assert_eq!(est["extended_messages"], false, "{est}");
    assert_too_long(&mut w, &mut peer, "peer without Extended Messages");
    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");

    // We do not advertise it (--no-extended-messages), the peer does: 4096 is the bound.
    let mut w = lab.watch(&[
        "--local-as",
        "65002",
        "--peer",
        ROUTER_V4,
        "--remote-as",
        "65001",
        "--listen",
        LISTENER_V4,
        "--no-graceful-restart",
        "--no-extended-messages",
    ]);
    let mut peer = RawPeer::connect_with(&lab, &caps);
    let theirs = foureyes_bgp_listener::wire::decode_open(&peer.their_open).expect("OPEN");
    assert!(!theirs.extended_message, "--no-extended-messages");
    assert_too_long(&mut w, &mut peer, "listener with --no-extended-messages");
    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");
}
