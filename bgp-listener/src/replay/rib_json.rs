//! The JSON line of a RIB entry's announce, written by hand from the decoded attributes.
//!
//! Why by hand and not through serde: a RIB dump is millions of entries, and each line is about
//! 420 bytes assembled from some forty pieces. Building a `serde_json::Value` per entry cost more
//! than everything else in a replay together (see the README's replay benchmark), and even a
//! direct writer spends most of its time on the call per piece. So this writer copies as few,
//! as large pieces as it can: constant runs of keys are one copy each, and the parts shared by
//! many lines are formatted once: the peer (`"peer"`, `"peer_as"`) per peer index table entry,
//! and the prefix and received time per record. The output is byte for byte what
//! `watch::event_json` gives for the same announce event (keys in sorted order, as serde_json's
//! map writes them); `tests/mrt_pipeline.rs` and the `mrt` fuzz target compare the two.

use std::net::{IpAddr, Ipv6Addr};
use std::time::SystemTime;

use super::{TimeCache, ip, num, opt_num, write_as_path};
use crate::mrt::RibEntry;
use crate::update::RibAttributes;
use crate::wire::Family;

#[derive(Default)]
pub(super) struct RibLines {
    /// `,"peer":"ADDR","peer_as":N,` per peer index, for the table `index_id` names.
    peers: Vec<Option<Vec<u8>>>,
    index_id: usize,
    /// `"prefix":"P","received":"T","source":"mrt","source_time":"` of the current record;
    /// empty until its first entry.
    record: Vec<u8>,
    received: TimeCache,
    source_time: TimeCache,
    /// The last IPv6 next hop and its text (a peer's next hop repeats from entry to entry).
    v6_next_hop: Option<(Ipv6Addr, Vec<u8>)>,
}

impl RibLines {
    /// A new record begins (its prefix and time differ from the last one's).
    pub(super) fn start_record(&mut self, index_id: usize) {
        self.record.clear();
        if index_id != self.index_id {
            self.index_id = index_id;
            self.peers.clear();
        }
    }

    /// Appends the announce line of `e` (whose decoded attributes are `ra`, with no RFC 7606
    /// outcome), newline included.
    pub(super) fn announce(&mut self, b: &mut Vec<u8>, e: &RibEntry<'_>, ra: &RibAttributes) {
        let a = &ra.attrs;
        b.extend_from_slice(match e.family {
            Family::Ipv4Unicast => b"{\"afi_safi\":\"ipv4-unicast\",\"as_path\":",
            Family::Ipv6Unicast => b"{\"afi_safi\":\"ipv6-unicast\",\"as_path\":",
        });
        write_as_path(b, a);
        b.extend_from_slice(b",\"communities\":[");
        for (i, c) in a.communities.iter().enumerate() {
            b.extend_from_slice(if i > 0 { b",\"" } else { b"\"" });
            num(b, c >> 16);
            b.push(b':');
            num(b, c & 0xffff);
            b.push(b'"');
        }
        if a.extended_communities.is_empty() && a.large_communities.is_empty() {
            b.extend_from_slice(
                b"],\"extended_communities\":[],\"large_communities\":[],\"local_pref\":",
            );
        } else {
            b.extend_from_slice(b"],\"extended_communities\":[");
            for (i, c) in a.extended_communities.iter().enumerate() {
                b.extend_from_slice(if i > 0 { b",\"" } else { b"\"" });
                for x in c {
                    b.extend_from_slice(HEX.get(usize::from(*x)).unwrap_or(b"??"));
                }
                b.push(b'"');
            }
            b.extend_from_slice(b"],\"large_communities\":[");
            for (i, [x, y, z]) in a.large_communities.iter().enumerate() {
                b.extend_from_slice(if i > 0 { b",\"" } else { b"\"" });
                num(b, *x);
                b.push(b':');
                num(b, *y);
                b.push(b':');
                num(b, *z);
                b.push(b'"');
            }
            b.extend_from_slice(b"],\"local_pref\":");
        }
        opt_num(b, a.local_pref);
        b.extend_from_slice(b",\"med\":");
        opt_num(b, a.med);
        match ra.next_hop {
            Some(IpAddr::V4(n)) => {
                b.extend_from_slice(b",\"next_hop\":\"");
                ip(b, IpAddr::V4(n));
                b.push(b'"');
            }
            Some(IpAddr::V6(n)) => {
                b.extend_from_slice(b",\"next_hop\":\"");
                let text = match &mut self.v6_next_hop {
                    Some((last, text)) if *last == n => text,
                    slot => {
                        let mut text = Vec::with_capacity(39);
                        ip(&mut text, IpAddr::V6(n));
                        &mut slot.insert((n, text)).1
                    }
                };
                b.extend_from_slice(text);
                b.push(b'"');
            }
            None => b.extend_from_slice(b",\"next_hop\":null"),
        }
        b.extend_from_slice(match a.origin {
            Some(0) => b",\"origin\":\"igp\",\"path_id\":",
            Some(1) => b",\"origin\":\"egp\",\"path_id\":",
            Some(2) => b",\"origin\":\"incomplete\",\"path_id\":",
            _ => b",\"origin\":null,\"path_id\":",
        });
        opt_num(b, e.path_id);
        let i = usize::from(e.peer_index);
        if self.peers.len() <= i {
            self.peers.resize(i + 1, None);
        }
        if let Some(slot) = self.peers.get_mut(i) {
            let peer = slot.get_or_insert_with(|| {
                let mut p = b",\"peer\":\"".to_vec();
                ip(&mut p, e.peer.addr);
                p.extend_from_slice(b"\",\"peer_as\":");
                num(&mut p, e.peer.asn);
                p.push(b',');
                p
            });
            b.extend_from_slice(peer);
        }
        if self.record.is_empty() {
            let r = &mut self.record;
            r.extend_from_slice(b"\"prefix\":\"");
            ip(r, e.prefix.addr);
            r.push(b'/');
            num(r, u32::from(e.prefix.len));
            r.extend_from_slice(b"\",\"received\":\"");
            r.extend_from_slice(self.received.get(e.received).as_bytes());
            r.extend_from_slice(b"\",\"source\":\"");
            r.extend_from_slice(e.peer.source.name().as_bytes());
            r.extend_from_slice(b"\",");
        }
        b.extend_from_slice(&self.record);
        self.source_time(b, e.source_time);
    }

    fn source_time(&mut self, b: &mut Vec<u8>, t: Option<SystemTime>) {
        if let Some(t) = t {
            b.extend_from_slice(b"\"source_time\":\"");
            b.extend_from_slice(self.source_time.get(t).as_bytes());
            b.extend_from_slice(b"\",\"type\":\"announce\"}\n");
        } else {
            b.extend_from_slice(b"\"type\":\"announce\"}\n");
        }
    }
}

/// Lower-case hex of every byte, as `{:02x}` writes it.
const HEX: [[u8; 2]; 256] = {
    let digits = *b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    t
};
