//! The UPDATE decoder alone, on an arbitrary body, with both AS widths; and, differentially, the
//! session's fast path (`parse_update_interned`, sets found by raw bytes) against the full decode:
//! applied twice to two Adj-RIB-Ins, both must give the same result and the same events, and
//! each event's JSON line (`event_jsonl`) must be what `event_json` gives.
#![no_main]

#[path = "jsonl_check.rs"]
mod jsonl_check;

use std::time::SystemTime;

use foureyes_bgp_listener::event::{Event, Peer};
use foureyes_bgp_listener::event_jsonl::JsonlWriter;
use foureyes_bgp_listener::rib::AdjRibIn;
use foureyes_bgp_listener::update::{
    DecodeContext, SessionKind, parse_update, parse_update_from, parse_update_interned,
};
use foureyes_bgp_listener::wire::Family;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut jsonl = JsonlWriter::new();
    for (four_octet_as, add_path) in [(false, false), (true, false), (true, true)] {
        let ctx = DecodeContext {
            four_octet_as,
            families: Family::ALL.to_vec(),
            add_path: if add_path {
                Family::ALL.to_vec()
            } else {
                Vec::new()
            },
        };
        let _ = parse_update(data, &ctx);
        let peer = Peer::session(std::net::Ipv4Addr::LOCALHOST.into(), 65001);
        for kind in [SessionKind::Internal, SessionKind::External] {
            let mut fast = AdjRibIn::new();
            let mut slow = AdjRibIn::new();
            for _ in 0..2 {
                let a = parse_update_interned(data, &ctx, kind, &mut |raw| {
                    fast.find_raw_set(raw, kind)
                });
                let b = parse_update_from(data, &ctx, kind);
                match (a, b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a.announced, b.announced);
                        assert_eq!(a.withdrawn, b.withdrawn);
                        assert_eq!(a.actions, b.actions);
                        let ea = fast.apply(peer, SystemTime::UNIX_EPOCH, None, a);
                        let eb = slow.apply(peer, SystemTime::UNIX_EPOCH, None, b);
                        assert_eq!(ea, eb);
                        for ev in ea {
                            jsonl_check::assert_same_json(&mut jsonl, &Event::Route(ev));
                        }
                    }
                    (Err(_), Err(_)) => {}
                    _ => {
                        panic!("fast path and full decode disagree on whether the UPDATE is valid")
                    }
                }
            }
        }
    }
});
