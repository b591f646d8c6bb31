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
}

impl RawPeer {
    /// Connects from the router namespace and completes the OPEN exchange (hold time 0: no timers
    /// on either side, however slow the machine).
    fn connect(lab: &Lab) -> RawPeer {
        let to = SocketAddr::new(ip(LISTENER_V4), 179);
        let s = lab.connect_from_router(to, LONG);
        s.set_read_timeout(Some(LONG)).expect("timeout");
        let mut p = RawPeer {
            s,
            f: Framer::new(),
        };
        p.send(&open_with(65001, 0, [198, 18, 0, 1], &full_caps(PEER_AS)));
        assert_eq!(p.next().map(|f| f.kind), Some(1), "the listener's OPEN");
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

/// How a row changes the good attributes (the MED is always 2 in the malformed UPDATE, 1 before).
enum Edit {
    /// Replace the attribute of this type with these bytes (in its place).
    Replace(u8, Vec<u8>),
    /// Leave this type out.
    Remove(u8),
    /// Append these bytes after the good attributes.
    Append(Vec<u8>),
}

fn edited(edit: &Edit) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, bytes) in good(2) {
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

/// Session resets: the malformed UPDATE (whole message) and the NOTIFICATION code/subcode.
fn reset_rows() -> Vec<(&'static str, Vec<u8>, (u8, u8))> {
    let good_attrs: Vec<u8> = good(1).into_iter().flat_map(|(_, b)| b).collect();
    let origin_path: Vec<u8> = good(1)
        .into_iter()
        .filter(|(t, _)| *t == 1 || *t == 2)
        .flat_map(|(_, b)| b)
        .collect();
    let v6_nh = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut mp_bad_nh = origin_path.clone();
    mp_bad_nh.extend(attr(0x80, 14, &[0, 2, 1, 3, 0x20, 0x01, 0, 0, 64, 0x20, 1]));
    let mut mp_bad_unreach = origin_path.clone();
    mp_bad_unreach.extend(mp_unreach_v6(&[129, 0x20, 0x01]));
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
            "MP_REACH_NLRI next hop length 3 for IPv6: NLRI not locatable (RFC 7606 §7.11)",
            update(&[], &mp_bad_nh, &[]),
            (3, 9),
        ),
        (
            "MP_UNREACH_NLRI with a 129-bit IPv6 prefix (RFC 7606 §5.3, RFC 4760 §7)",
            update(&[], &mp_bad_unreach, &[]),
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
    lab.watch(&[
        "--local-as",
        "65002",
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

#[test]
fn each_rfc7606_rule_has_its_exact_outcome_on_the_wire() {
    let lab = Lab::new("raw");
    let mut w = watch(&lab);
    let mut peer = RawPeer::connect(&lab);
    w.events
        .wait("established", |e| e["type"] == "session_established");

    for (n, row) in rows().into_iter().enumerate() {
        let i = u8::try_from(n + 1).expect("few rows");
        let prefix = prefix_v4(i);
        let rule = row.rule;
        // Announce first, with MED 1 and the good ATOMIC_AGGREGATE and AGGREGATOR.
        let attrs: Vec<u8> = good(1).into_iter().flat_map(|(_, b)| b).collect();
        peer.send(&update(&[], &attrs, &nlri_v4(i)));
        w.events.wait(&format!("announce before {rule}"), |e| {
            is(e, "announce", &prefix)
        });
        let mark = w.events.seen.len();
        peer.send(&update(&[], &edited(&row.edit), &nlri_v4(i)));
        match row.expect {
            Expect::Withdraw(t) => {
                w.events
                    .wait_from(mark, LONG, rule, |e| is(e, "withdraw", &prefix));
                let errs = errors_since(&w, mark);
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
                assert!(ch["local_pref"].is_null(), "{rule}: {ch}");
                let errs = errors_since(&w, mark);
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
                let errs = errors_since(&w, mark);
                assert!(errs.is_empty(), "{rule}: no RFC 7606 action: {errs:#?}");
            }
        }
        assert_still_up(&mut w, &mut peer, i, rule);
    }

    // Treat-as-withdraw also covers prefixes in MP_REACH_NLRI (RFC 7606 §5.3).
    let v6_nh = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let v6_nlri = [64, 0x20, 0x01, 0, 2, 0, 0, 0, 0xa];
    let mut a: Vec<u8> = good(1)
        .into_iter()
        .filter(|(t, _)| *t != 3)
        .flat_map(|(_, b)| b)
        .collect();
    a.extend(mp_reach_v6(v6_nh, &v6_nlri));
    peer.send(&update(&[], &a, &[]));
    w.events
        .wait("v6 announce", |e| is(e, "announce", "2001:2:0:a::/64"));
    let mark = w.events.seen.len();
    a.extend(attr(0xc0, 8, &[1, 2, 3]));
    peer.send(&update(&[], &a, &[]));
    w.events.wait_from(mark, LONG, "v6 treat-as-withdraw", |e| {
        is(e, "withdraw", "2001:2:0:a::/64")
    });
    assert_still_up(&mut w, &mut peer, 250, "v6 treat-as-withdraw");

    // Session resets: the exact NOTIFICATION, the connection closed, the session reported down.
    // The listener keeps listening, so each row gets a fresh session.
    let mut connected = true;
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
    assert_eq!(
        w.events
            .seen
            .iter()
            .filter(|e| e["type"] == "session_established")
            .count(),
        reset_rows().len(),
        "one session for all the rows that keep it up, then one per reset"
    );
    let status = w.stop();
    assert!(status.success(), "listener exit: {status}");
}
