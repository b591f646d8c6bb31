//! The JSON line of a RIB entry's announce, written from the decoded attributes without building
//! an event.
//!
//! Why not through [`JsonlWriter`](crate::event_jsonl::JsonlWriter): a RIB dump is millions of
//! entries whose attributes are decoded into a plain `PathAttributes` (no shared set to cache by),
//! and the parts shared by many lines are best formatted once, which only the RIB record's shape
//! tells: the peer (`"peer"`, `"peer_as"`) per peer index table entry, and the prefix and received
//! time per record. The fields themselves are written by `event_jsonl`'s pieces, so the line is
//! byte for byte what `watch::event_json` gives for the same announce event;
//! `tests/mrt_pipeline.rs` and the `mrt` fuzz target compare the two.

use std::time::SystemTime;

use crate::event_jsonl::{
    NextHopText, TimeCache, as_path_field, attrs_after_as_path, opt_num, peer_fields, prefix_text,
};
use crate::mrt::RibEntry;
use crate::update::RibAttributes;
use crate::wire::Family;

#[derive(Default)]
pub(super) struct RibLines {
    /// `"peer":"ADDR","peer_as":N,` per peer index, for the table `index_id` names.
    peers: Vec<Option<Vec<u8>>>,
    index_id: usize,
    /// `"prefix":"P","received":"T","source":"mrt","source_time":"` of the current record;
    /// empty until its first entry.
    record: Vec<u8>,
    received: TimeCache,
    source_time: TimeCache,
    next_hop: NextHopText,
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
            Family::Ipv4Unicast => b"{\"afi_safi\":\"ipv4-unicast\",",
            Family::Ipv6Unicast => b"{\"afi_safi\":\"ipv6-unicast\",",
        });
        as_path_field(b, a);
        attrs_after_as_path(b, ra.next_hop, a, &mut self.next_hop);
        b.extend_from_slice(b"\"path_id\":");
        opt_num(b, e.path_id);
        b.push(b',');
        let i = usize::from(e.peer_index);
        if self.peers.len() <= i {
            self.peers.resize(i + 1, None);
        }
        if let Some(slot) = self.peers.get_mut(i) {
            let peer = slot.get_or_insert_with(|| {
                let mut p = Vec::with_capacity(64);
                peer_fields(&mut p, &e.peer);
                p
            });
            b.extend_from_slice(peer);
        }
        if self.record.is_empty() {
            let r = &mut self.record;
            r.extend_from_slice(b"\"prefix\":\"");
            prefix_text(r, &e.prefix);
            r.extend_from_slice(b"\",\"received\":\"");
            r.extend_from_slice(self.received.get(e.received));
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
            b.extend_from_slice(self.source_time.get(t));
            b.extend_from_slice(b"\",\"type\":\"announce\"}\n");
        } else {
            b.extend_from_slice(b"\"type\":\"announce\"}\n");
        }
    }
}
