//! Per-peer Adj-RIB-In: prefix → route, turning decoded UPDATEs into route events, with the stale
//! marks of a graceful-restart helper (RFC 4724 §4.2).
//!
//! Memory: a full table is about 1M prefixes but only about 100k distinct attribute sets, so the
//! maps hold no route per prefix. Attribute sets are hash-consed across UPDATEs into one
//! `Arc<PathAttributes>` each, and each distinct (next hop, attribute set) pair gets a slot in a
//! reference-counted store; a prefix maps to a `u32` slot index whose top bit is its stale mark.
//! Keys are per family and compact: IPv4 is the address and length packed in a `u64`, IPv6
//! `(u64, u64, u8)`; ADD-PATH keys add the path id in maps of their own. Sets and slots are
//! dropped when their last prefix goes. The IPv4 map without path ids (what a full table fills)
//! is the radix of sorted vectors in `v4map.rs`: 8 bytes per prefix, against about 20 for the
//! B-tree it replaced, and a cheaper insert; the other prefix maps are B-trees (ordered for
//! sweeps, smaller than a hash table's half-empty buckets). Attribute sets are identified by a
//! keyed SipHash-128 fingerprint (see `RouteStore`). The slot index uses foldhash with a per-map
//! random seed: keys come from the network, so the seed keeps a peer from choosing colliding
//! keys in advance, and it costs a third of SipHash per lookup (foldhash is not a cryptographic
//! PRF; a configured peer that probes timings could still degrade a map, which the max-prefix
//! limit bounds).

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::SystemTime;

use std::collections::BTreeMap;

use foldhash::HashMap;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::event::{AttrKind, Peer, Route, RouteChange, RouteEvent};
use crate::iana::attr;
use crate::set_index::SetIndex;
use crate::update::{
    InternedSet, ParsedUpdate, PathAttributes, SessionKind, encode_shared, shared_attr_parts,
};
use crate::v4map::V4Map;
use crate::wire::{Family, Prefix};

/// Top bit of a prefix's slot index: the route is stale (kept from a session that was lost while
/// graceful restart applied, not yet re-announced).
const STALE: u32 = 1 << 31;

/// `SetSlot::last_slot` when the set has no remembered slot.
const NO_SLOT: u32 = u32::MAX;

/// An IPv4 key: the address in the high bits, the length in the low byte. Ordered like
/// `(address, length)`, the same 8 bytes in a node, but compared in one instruction: with a
/// million sorted-ish inserts the B-tree's in-node search was an eighth of the decode profile.
type V4 = u64;
type V6 = (u64, u64, u8);

fn v4_key(p: &Prefix) -> Option<V4> {
    match p.addr {
        IpAddr::V4(a) => Some((u64::from(u32::from(a)) << 8) | u64::from(p.len)),
        IpAddr::V6(_) => None,
    }
}

fn v6_key(p: &Prefix) -> Option<V6> {
    match p.addr {
        IpAddr::V6(a) => {
            let x = u128::from(a);
            Some(((x >> 64) as u64, x as u64, p.len))
        }
        IpAddr::V4(_) => None,
    }
}

fn v4_prefix(k: V4) -> Prefix {
    Prefix {
        addr: IpAddr::V4(Ipv4Addr::from((k >> 8) as u32)),
        len: k as u8,
    }
}

fn v6_prefix((hi, lo, len): V6) -> Prefix {
    Prefix {
        addr: IpAddr::V6(Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo))),
        len,
    }
}

/// A flat encoding of an attribute set, hashed to find interned sets that have no canonical wire
/// encoding (see `RouteStore::hash_of`): hashing one contiguous buffer is cheaper than the derived
/// `Hash` walk over the vectors of a `PathAttributes`.
fn set_key(a: &PathAttributes, out: &mut Vec<u8>) {
    fn len(out: &mut Vec<u8>, n: usize) {
        out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
    }
    out.clear();
    out.push(a.origin.map_or(0xff, |o| o));
    match &a.as_path {
        None => out.push(0),
        Some(segs) => {
            out.push(1);
            len(out, segs.len());
            for seg in segs {
                out.push(seg.kind);
                len(out, seg.asns.len());
                for asn in &seg.asns {
                    out.extend_from_slice(&asn.to_le_bytes());
                }
            }
        }
    }
    for v in [a.med, a.local_pref] {
        match v {
            None => out.push(0),
            Some(x) => {
                out.push(1);
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    out.push(u8::from(a.atomic_aggregate));
    match a.aggregator {
        None => out.push(0),
        Some((asn, id)) => {
            out.push(1);
            out.extend_from_slice(&asn.to_le_bytes());
            out.extend_from_slice(&id.octets());
        }
    }
    len(out, a.communities.len());
    for c in &a.communities {
        out.extend_from_slice(&c.to_le_bytes());
    }
    len(out, a.extended_communities.len());
    for c in &a.extended_communities {
        out.extend_from_slice(c);
    }
    len(out, a.large_communities.len());
    for c in a.large_communities.iter().flatten() {
        out.extend_from_slice(&c.to_le_bytes());
    }
    len(out, a.other.len());
    for r in &a.other {
        out.extend_from_slice(&[r.flags, r.type_code]);
        len(out, r.value.len());
        out.extend_from_slice(&r.value);
    }
}

#[derive(Debug)]
struct Slot {
    route: Route,
    /// Index of the route's attribute set in `RouteStore::sets`.
    set: u32,
}

#[derive(Debug)]
struct SetSlot {
    attrs: Arc<PathAttributes>,
    /// Route slots using this set.
    slots: u32,
    /// The set's fingerprint: SipHash-1-3-128 of its canonical encoding (or of its `set_key` when
    /// it has none) under the store's secret key. `hash` (the low half) is its key in
    /// `set_index`.
    hash: u64,
    hash_hi: u64,
    /// `CANONICAL`, `CLEAN`, `CLEAN_EXTERNAL`: what `find_raw` needs to know about the set
    /// without touching the attributes themselves.
    flags: u8,
    /// The set's primary route slot (`NO_SLOT` when none) and its next hop. Nearly every set has
    /// one next hop, so an UPDATE whose set was just found by `find_raw` gets its slot number
    /// here, from the cache line it already loaded, and builds its events' routes from
    /// `attrs` and this next hop: the slot itself (another cache miss per UPDATE on a full
    /// table, then another for the `Arc` it points to) is not read. `release` keeps it true:
    /// a slot that is freed stops being any set's primary slot.
    last_slot: u32,
    last_next_hop: Option<IpAddr>,
}

/// `SetSlot::flags`: the fingerprint is of the canonical encoding (`update::encode_shared`), so
/// raw UPDATE bytes can match it.
const CANONICAL: u8 = 1;
/// `SetSlot::flags`: the set has ORIGIN and AS_PATH (`clean_for` an internal or unknown session).
const CLEAN: u8 = 2;
/// `SetSlot::flags`: `clean_for` an external session too.
const CLEAN_EXTERNAL: u8 = 4;

/// The secret SipHash key of one `RouteStore`.
#[derive(Debug, Clone, Copy)]
struct SipKey(u64, u64);

impl Default for SipKey {
    /// Drawn from std's `RandomState` (seeded from the OS, varied per instance): two constants
    /// hashed under it give two secret 64-bit words without another dependency.
    fn default() -> Self {
        let s = std::collections::hash_map::RandomState::new();
        SipKey(s.hash_one(0x5eed_u64), s.hash_one(0xf00d_u64))
    }
}

impl SipKey {
    fn hasher(self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.0, self.1)
    }
}

/// Reference-counted store of distinct routes (next hop + interned attribute set).
///
/// Attribute sets are identified by a 128-bit fingerprint: SipHash-1-3-128, under a key drawn
/// at random for each store, of their canonical wire encoding (`update::encode_shared`, or the
/// flat `set_key` for a set without one). Decoded sets (`intern_attrs`) are then compared in
/// full. Raw UPDATE bytes (`find_raw`) are matched on the fingerprint alone: the hash is streamed
/// over the UPDATE's shared attributes where they lie, and the candidate set is not touched.
/// Until this change a raw hit was verified by encoding the candidate and comparing bytes, which
/// read the set, its AS path and its communities from three or four places in memory: a cache
/// miss each, per UPDATE, on a full table's 100k sets (the largest item of the decode profile
/// after the prefix map). Two different encodings with one fingerprint would need a SipHash-128
/// collision under a key the peer never sees: SipHash is a keyed PRF, so a peer cannot search
/// for one, and by chance it is about 2^-128 per pair. Keeping only the fingerprint (not the
/// encoding) saves about 9 MB on a full table.
#[derive(Debug, Default)]
struct RouteStore {
    slots: Vec<Option<Slot>>,
    /// Prefixes holding each slot, apart from `slots` so that counting is in a dense array (4
    /// bytes a slot, mostly in cache) and not on the slot's own cache line.
    refs: Vec<u32>,
    free: Vec<u32>,
    /// (next hop, set index) → route slot.
    index: HashMap<(Option<IpAddr>, u32), u32>,
    sets: Vec<Option<SetSlot>>,
    free_sets: Vec<u32>,
    /// Fingerprint → set (see `set_index.rs`: one cache miss per lookup, not two).
    set_index: SetIndex,
    sip: SipKey,
    /// Scratch buffer for `set_key`/`encode_shared`.
    key_buf: Vec<u8>,
}

/// Whether a held set can stand for raw bytes received on a session of `kind`: it has the
/// mandatory ORIGIN and AS_PATH (so the UPDATE needs no missing-attribute check), and for an
/// external peer none of the attributes RFC 7606 discards from external peers (decoding would
/// report a discard).
fn clean_for(a: &PathAttributes, kind: SessionKind) -> bool {
    a.origin.is_some()
        && a.as_path.is_some()
        && (kind != SessionKind::External
            || (a.local_pref.is_none()
                && !a
                    .other
                    .iter()
                    .any(|r| matches!(r.type_code, attr::ORIGINATOR_ID | attr::CLUSTER_LIST))))
}

/// Saturating `usize` → slot index below the stale bit (2^31 distinct routes cannot fit in
/// memory anyway).
fn index_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(STALE - 1).min(STALE - 1)
}

impl RouteStore {
    /// The fingerprint a set is indexed by (low half, high half), and whether it is of the
    /// canonical wire encoding (`encode_shared`), which an UPDATE's raw attribute bytes can
    /// match (`find_raw`); otherwise of the flat `set_key` (such a set is only found by
    /// decoding).
    fn fingerprint_of(&mut self, attrs: &PathAttributes) -> (u64, u64, bool) {
        let mut key = std::mem::take(&mut self.key_buf);
        let canonical = encode_shared(attrs, &mut key);
        if !canonical {
            set_key(attrs, &mut key);
        }
        let mut h = self.sip.hasher();
        h.write(&key);
        let fp = h.finish128();
        self.key_buf = key;
        (fp.h1, fp.h2, canonical)
    }

    /// The set whose canonical encoding has the fingerprint of the shared attribute bytes of an
    /// UPDATE's attribute section, if one is held and decoding those bytes on a session of
    /// `kind` would give it with no RFC 7606 action (see `update::parse_update_interned`).
    /// Costs one SipHash over the bytes in place, the index and the set's slot; no copy, no
    /// allocation, and the attributes are not read (see `RouteStore`).
    fn find_raw(&self, section: &[u8], kind: SessionKind) -> Option<u32> {
        let mut h = self.sip.hasher();
        if !shared_attr_parts(section, |part| h.write(part)) {
            return None;
        }
        let fp = h.finish128();
        let need = CANONICAL
            | if kind == SessionKind::External {
                CLEAN_EXTERNAL
            } else {
                CLEAN
            };
        self.set_index.find(fp.h1, |i| {
            matches!(self.set(i), Some(s) if s.hash == fp.h1 && s.hash_hi == fp.h2 && s.flags & need == need)
        })
    }

    fn set(&self, i: u32) -> Option<&SetSlot> {
        self.sets.get(i as usize)?.as_ref()
    }

    /// The interned set equal to `attrs`, and whether it was created (unused) by this call.
    fn intern_attrs(&mut self, attrs: PathAttributes) -> (u32, bool) {
        let (hash, hash_hi, canonical) = self.fingerprint_of(&attrs);
        let held = self.set_index.find(hash, |i| {
            matches!(self.set(i), Some(s) if s.hash == hash && s.hash_hi == hash_hi && *s.attrs == attrs)
        });
        if let Some(i) = held {
            return (i, false);
        }
        let mut flags = 0;
        if canonical {
            flags |= CANONICAL;
        }
        if clean_for(&attrs, SessionKind::Internal) {
            flags |= CLEAN;
        }
        if clean_for(&attrs, SessionKind::External) {
            flags |= CLEAN_EXTERNAL;
        }
        let set = Some(SetSlot {
            attrs: Arc::new(attrs),
            slots: 0,
            hash,
            hash_hi,
            flags,
            last_slot: NO_SLOT,
            last_next_hop: None,
        });
        let i = match self.free_sets.pop() {
            Some(i) => {
                if let Some(s) = self.sets.get_mut(i as usize) {
                    *s = set;
                }
                i
            }
            None => {
                self.sets.push(set);
                index_of(self.sets.len() - 1)
            }
        };
        self.set_index.insert(hash, i);
        (i, true)
    }

    /// Drops a set no route slot uses.
    fn drop_set_if_unused(&mut self, set: u32) {
        let unused = matches!(self.set(set), Some(s) if s.slots == 0);
        if !unused {
            return;
        }
        let Some(Some(s)) = self.sets.get_mut(set as usize).map(Option::take) else {
            return;
        };
        self.free_sets.push(set);
        self.set_index.remove(s.hash, set);
    }

    /// The slot of this route, created if new; its count is not taken (see `acquire`).
    fn slot_of(&mut self, next_hop: Option<IpAddr>, set: u32) -> Option<u32> {
        let s = self.set(set)?;
        if s.last_slot != NO_SLOT && s.last_next_hop == next_hop {
            return Some(s.last_slot);
        }
        let i = match self.index.get(&(next_hop, set)) {
            Some(&i) => i,
            None => {
                let attrs = Arc::clone(&s.attrs);
                let slot = Some(Slot {
                    route: Route { next_hop, attrs },
                    set,
                });
                let i = match self.free.pop() {
                    Some(i) => {
                        if let Some(s) = self.slots.get_mut(i as usize) {
                            *s = slot;
                        }
                        if let Some(r) = self.refs.get_mut(i as usize) {
                            *r = 0;
                        }
                        i
                    }
                    None => {
                        self.slots.push(slot);
                        self.refs.push(0);
                        index_of(self.slots.len() - 1)
                    }
                };
                if let Some(Some(s)) = self.sets.get_mut(set as usize) {
                    s.slots += 1;
                }
                self.index.insert((next_hop, set), i);
                i
            }
        };
        if let Some(Some(s)) = self.sets.get_mut(set as usize) {
            s.last_slot = i;
            s.last_next_hop = next_hop;
        }
        Some(i)
    }

    /// The route of slot `slot_of(next_hop, set)`, built from the set (see
    /// `SetSlot::last_slot`).
    fn route_of(&self, set: u32, next_hop: Option<IpAddr>) -> Option<Route> {
        Some(Route {
            next_hop,
            attrs: Arc::clone(&self.set(set)?.attrs),
        })
    }

    fn route(&self, i: u32) -> Option<&Route> {
        self.slots
            .get((i & !STALE) as usize)?
            .as_ref()
            .map(|s| &s.route)
    }

    fn acquire(&mut self, i: u32) {
        if let Some(r) = self.refs.get_mut((i & !STALE) as usize) {
            *r += 1;
        }
    }

    /// Drops one prefix's hold on a slot, freeing the slot (and its attribute set) when unused.
    fn release(&mut self, i: u32) {
        let i = i & !STALE;
        let Some(r) = self.refs.get_mut(i as usize) else {
            return;
        };
        *r = r.saturating_sub(1);
        if *r > 0 {
            return;
        }
        let Some(s) = self.slots.get_mut(i as usize).and_then(Option::take) else {
            return;
        };
        self.free.push(i);
        self.index.remove(&(s.route.next_hop, s.set));
        if let Some(Some(set)) = self.sets.get_mut(s.set as usize) {
            set.slots = set.slots.saturating_sub(1);
            if set.last_slot == i {
                set.last_slot = NO_SLOT;
            }
        }
        self.drop_set_if_unused(s.set);
    }

    /// Frees a slot created by `slot_of` that no prefix took.
    fn release_if_unused(&mut self, i: u32) {
        // The count first: `refs` is dense and was just touched by the UPDATE's `acquire`, while
        // the slot itself is a cache miss (one per UPDATE in the decode profile) and is only
        // needed when the count is 0, which on a table transfer it never is.
        let unused = self.refs.get(i as usize) == Some(&0)
            && matches!(self.slots.get(i as usize), Some(Some(_)));
        if unused {
            self.acquire(i);
            self.release(i);
        }
    }

    fn sets_held(&self) -> usize {
        self.sets.len() - self.free_sets.len()
    }

    fn clear(&mut self) {
        *self = RouteStore::default();
    }
}

/// The map of one family's prefixes without ADD-PATH path ids: a B-tree for IPv6, the radix of
/// sorted vectors in `v4map.rs` for IPv4 (a full table is IPv4, and that map takes 8 bytes per
/// prefix against the B-tree's 20, with a cheaper insert).
trait PlainMap<K>: Default {
    fn len(&self) -> usize;
    fn get(&self, k: K) -> Option<u32>;
    fn insert(&mut self, k: K, v: u32) -> Option<u32>;
    fn remove(&mut self, k: K) -> Option<u32>;
    fn for_each_value_mut(&mut self, f: impl FnMut(&mut u32));
    /// Keeps the entries for which `f` is true, visiting them in key order.
    fn retain(&mut self, f: impl FnMut(K, u32) -> bool);
    fn drain_values(&mut self, f: impl FnMut(u32));
    /// Appends up to `limit` entries with keys above `after` (all when `None`), in key order.
    fn entries_after(&self, after: Option<K>, limit: usize, out: &mut Vec<(K, u32)>);
}

impl<K: Ord + Copy> PlainMap<K> for BTreeMap<K, u32> {
    fn len(&self) -> usize {
        BTreeMap::len(self)
    }
    fn get(&self, k: K) -> Option<u32> {
        BTreeMap::get(self, &k).copied()
    }
    fn insert(&mut self, k: K, v: u32) -> Option<u32> {
        BTreeMap::insert(self, k, v)
    }
    fn remove(&mut self, k: K) -> Option<u32> {
        BTreeMap::remove(self, &k)
    }
    fn for_each_value_mut(&mut self, f: impl FnMut(&mut u32)) {
        self.values_mut().for_each(f);
    }
    fn retain(&mut self, mut f: impl FnMut(K, u32) -> bool) {
        BTreeMap::retain(self, |k, v| f(*k, *v));
    }
    fn drain_values(&mut self, f: impl FnMut(u32)) {
        std::mem::take(self).into_values().for_each(f);
    }
    fn entries_after(&self, after: Option<K>, limit: usize, out: &mut Vec<(K, u32)>) {
        use std::ops::Bound::{Excluded, Unbounded};
        let range = match after {
            Some(k) => self.range((Excluded(k), Unbounded)),
            None => self.range(..),
        };
        out.extend(range.take(limit).map(|(k, v)| (*k, *v)));
    }
}

impl PlainMap<V4> for V4Map {
    fn len(&self) -> usize {
        V4Map::len(self)
    }
    fn get(&self, k: V4) -> Option<u32> {
        V4Map::get(self, k)
    }
    fn insert(&mut self, k: V4, v: u32) -> Option<u32> {
        V4Map::insert(self, k, v)
    }
    fn remove(&mut self, k: V4) -> Option<u32> {
        V4Map::remove(self, k)
    }
    fn for_each_value_mut(&mut self, f: impl FnMut(&mut u32)) {
        V4Map::for_each_value_mut(self, f)
    }
    fn retain(&mut self, f: impl FnMut(V4, u32) -> bool) {
        V4Map::retain(self, f)
    }
    fn drain_values(&mut self, f: impl FnMut(u32)) {
        V4Map::drain_values(self, f)
    }
    fn entries_after(&self, after: Option<V4>, limit: usize, out: &mut Vec<(V4, u32)>) {
        V4Map::entries_after(self, after, limit, out)
    }
}

/// Per-family prefix maps (`plain` without ADD-PATH path ids, `paths` with).
#[derive(Debug)]
struct Table<K, M> {
    plain: M,
    paths: BTreeMap<(K, u32), u32>,
    stale: usize,
}

impl<K, M: Default> Default for Table<K, M> {
    fn default() -> Self {
        Table {
            plain: M::default(),
            paths: BTreeMap::new(),
            stale: 0,
        }
    }
}

impl<K: Ord + Copy, M: PlainMap<K>> Table<K, M> {
    fn len(&self) -> usize {
        self.plain.len() + self.paths.len()
    }

    fn get(&self, k: K, id: Option<u32>) -> Option<u32> {
        match id {
            None => self.plain.get(k),
            Some(id) => self.paths.get(&(k, id)).copied(),
        }
    }

    fn insert(&mut self, k: K, id: Option<u32>, v: u32) -> Option<u32> {
        let old = match id {
            None => self.plain.insert(k, v),
            Some(id) => self.paths.insert((k, id), v),
        };
        if old.is_some_and(|o| o & STALE != 0) {
            self.stale = self.stale.saturating_sub(1);
        }
        old
    }

    fn remove(&mut self, k: K, id: Option<u32>) -> Option<u32> {
        let old = match id {
            None => self.plain.remove(k),
            Some(id) => self.paths.remove(&(k, id)),
        };
        if old.is_some_and(|o| o & STALE != 0) {
            self.stale = self.stale.saturating_sub(1);
        }
        old
    }

    fn mark_stale(&mut self) -> usize {
        self.plain.for_each_value_mut(|v| *v |= STALE);
        for v in self.paths.values_mut() {
            *v |= STALE;
        }
        self.stale = self.len();
        self.stale
    }

    /// Removes every stale entry, calling `f` with each.
    fn take_stale(&mut self, mut f: impl FnMut(K, Option<u32>, u32)) -> usize {
        let n = self.stale;
        if n == 0 {
            return 0;
        }
        self.plain.retain(|k, v| {
            let stale = v & STALE != 0;
            if stale {
                f(k, None, v);
            }
            !stale
        });
        self.paths.retain(|(k, id), v| {
            let stale = *v & STALE != 0;
            if stale {
                f(*k, Some(*id), *v);
            }
            !stale
        });
        self.stale = 0;
        n
    }

    /// Up to `limit` entries after `after`, in key order: plain entries first, then path ones.
    /// A resync snapshot walks a table in chunks with it (see `AdjRibIn::routes_chunk`).
    fn chunk(&self, after: Option<(K, Option<u32>)>, limit: usize) -> Vec<(K, Option<u32>, u32)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut out = Vec::with_capacity(limit.min(self.len()));
        let paths_from = match after {
            Some((k, Some(id))) => Some((k, id)),
            None | Some((_, None)) => {
                let mut plain = Vec::with_capacity(limit.min(self.plain.len()));
                self.plain
                    .entries_after(after.map(|(k, _)| k), limit, &mut plain);
                out.extend(plain.into_iter().map(|(k, v)| (k, None, v)));
                None
            }
        };
        let left = limit.saturating_sub(out.len());
        let paths = match paths_from {
            Some(from) => self.paths.range((Excluded(from), Unbounded)),
            None => self.paths.range(..),
        };
        out.extend(paths.take(left).map(|((k, id), v)| (*k, Some(*id), *v)));
        out
    }

    fn drain(&mut self, mut f: impl FnMut(u32)) -> usize {
        let n = self.len();
        self.plain.drain_values(&mut f);
        for v in std::mem::take(&mut self.paths).into_values() {
            f(v);
        }
        self.stale = 0;
        n
    }
}

/// A prefix key of either family.
#[derive(Clone, Copy)]
enum Key {
    V4(V4),
    V6(V6),
}

fn key(family: Family, p: &Prefix) -> Option<Key> {
    match family {
        Family::Ipv4Unicast => v4_key(p).map(Key::V4),
        Family::Ipv6Unicast => v6_key(p).map(Key::V6),
    }
}

#[derive(Debug, Default)]
pub struct AdjRibIn {
    v4: Table<V4, V4Map>,
    v6: Table<V6, BTreeMap<V6, u32>>,
    store: RouteStore,
}

impl AdjRibIn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn count(&self, family: Family) -> usize {
        match family {
            Family::Ipv4Unicast => self.v4.len(),
            Family::Ipv6Unicast => self.v6.len(),
        }
    }

    /// Routes of `family` still marked stale.
    pub fn stale_count(&self, family: Family) -> usize {
        match family {
            Family::Ipv4Unicast => self.v4.stale,
            Family::Ipv6Unicast => self.v6.stale,
        }
    }

    /// Distinct attribute sets held (interned across UPDATEs).
    pub fn attribute_sets(&self) -> usize {
        self.store.sets_held()
    }

    /// The held attribute set whose canonical encoding is exactly the shared attribute bytes of
    /// `attrs` (an UPDATE's whole path attribute section), for `update::parse_update_interned`
    /// on a session of `kind`. The result is only meaningful for this Adj-RIB-In and until it
    /// next changes: pass the UPDATE to `apply` right away.
    pub fn find_raw_set(&self, attrs: &[u8], kind: SessionKind) -> Option<InternedSet> {
        self.store.find_raw(attrs, kind).map(InternedSet)
    }

    fn slot(&self, family: Family, path_id: Option<u32>, prefix: &Prefix) -> Option<u32> {
        match key(family, prefix)? {
            Key::V4(k) => self.v4.get(k, path_id),
            Key::V6(k) => self.v6.get(k, path_id),
        }
    }

    pub fn get(&self, family: Family, path_id: Option<u32>, prefix: &Prefix) -> Option<&Route> {
        self.store.route(self.slot(family, path_id, prefix)?)
    }

    /// Whether the route is held and marked stale.
    pub fn is_stale(&self, family: Family, path_id: Option<u32>, prefix: &Prefix) -> bool {
        self.slot(family, path_id, prefix)
            .is_some_and(|v| v & STALE != 0)
    }

    /// Up to `limit` routes of `family` (stale ones too) after `after` (the last route of the
    /// previous chunk; `None` to start), in a stable order. Fewer than `limit` means the walk is
    /// done. Chunks let a resync snapshot go out without copying a whole table at once.
    pub fn routes_chunk(
        &self,
        family: Family,
        after: Option<(Prefix, Option<u32>)>,
        limit: usize,
    ) -> Vec<(Prefix, Option<u32>, Route)> {
        let store = &self.store;
        let route = |v: u32| store.route(v).cloned();
        match family {
            Family::Ipv4Unicast => {
                let after = after.and_then(|(p, id)| Some((v4_key(&p)?, id)));
                self.v4
                    .chunk(after, limit)
                    .into_iter()
                    .filter_map(|(k, id, v)| Some((v4_prefix(k), id, route(v)?)))
                    .collect()
            }
            Family::Ipv6Unicast => {
                let after = after.and_then(|(p, id)| Some((v6_key(&p)?, id)));
                self.v6
                    .chunk(after, limit)
                    .into_iter()
                    .filter_map(|(k, id, v)| Some((v6_prefix(k), id, route(v)?)))
                    .collect()
            }
        }
    }

    /// Drops everything, returning how many routes were held.
    pub fn clear(&mut self) -> usize {
        let n = self.len();
        self.v4 = Table::default();
        self.v6 = Table::default();
        self.store.clear();
        n
    }

    /// Drops every route of one family without events, returning how many there were.
    pub fn clear_family(&mut self, family: Family) -> usize {
        let store = &mut self.store;
        match family {
            Family::Ipv4Unicast => self.v4.drain(|v| store.release(v)),
            Family::Ipv6Unicast => self.v6.drain(|v| store.release(v)),
        }
    }

    /// Marks every route of `family` stale (graceful restart: the session was lost, the peer's
    /// routes are kept until it re-announces them or the restart ends). Returns the count.
    pub fn mark_stale(&mut self, family: Family) -> usize {
        match family {
            Family::Ipv4Unicast => self.v4.mark_stale(),
            Family::Ipv6Unicast => self.v6.mark_stale(),
        }
    }

    /// Removes the routes of `family` still stale, returning a withdraw event for each (they were
    /// not re-announced after the restart, so the peer no longer has them).
    pub fn sweep_stale(&mut self, peer: Peer, at: SystemTime, family: Family) -> Vec<RouteEvent> {
        let mut taken: Vec<(Prefix, Option<u32>, u32)> = Vec::new();
        match family {
            Family::Ipv4Unicast => {
                self.v4
                    .take_stale(|k, id, v| taken.push((v4_prefix(k), id, v)));
            }
            Family::Ipv6Unicast => {
                self.v6
                    .take_stale(|k, id, v| taken.push((v6_prefix(k), id, v)));
            }
        }
        taken.sort_unstable_by_key(|(p, id, _)| (*p, *id));
        let mut events = Vec::with_capacity(taken.len());
        for (prefix, path_id, v) in taken {
            if let Some(previous) = self.store.route(v).cloned() {
                events.push(RouteEvent {
                    peer,
                    family,
                    path_id,
                    received: at,
                    source_time: None,
                    change: RouteChange::Withdraw { prefix, previous },
                });
            }
            self.store.release(v);
        }
        events
    }

    /// Removes the routes of `family` still stale without events, returning how many.
    pub fn drop_stale(&mut self, family: Family) -> usize {
        let store = &mut self.store;
        let mut freed = Vec::new();
        let n = match family {
            Family::Ipv4Unicast => self.v4.take_stale(|_, _, v| freed.push(v)),
            Family::Ipv6Unicast => self.v6.take_stale(|_, _, v| freed.push(v)),
        };
        for v in freed {
            store.release(v);
        }
        n
    }

    fn insert(&mut self, k: Key, id: Option<u32>, v: u32) -> Option<u32> {
        match k {
            Key::V4(k) => self.v4.insert(k, id, v),
            Key::V6(k) => self.v6.insert(k, id, v),
        }
    }

    fn remove(&mut self, k: Key, id: Option<u32>) -> Option<u32> {
        match k {
            Key::V4(k) => self.v4.remove(k, id),
            Key::V6(k) => self.v6.remove(k, id),
        }
    }

    /// Applies one UPDATE and returns its events, withdrawals first (RFC 4271 §3.1 order).
    ///
    /// A re-announcement of a stale route clears its mark: with the same attributes it is
    /// silent, with others it is an attribute change. `source_time` is what the source says
    /// about when it happened (BMP, MRT); `None` for a direct session.
    pub fn apply(
        &mut self,
        peer: Peer,
        at: SystemTime,
        source_time: Option<SystemTime>,
        upd: ParsedUpdate,
    ) -> Vec<RouteEvent> {
        let mut events = Vec::with_capacity(upd.withdrawn.len() + upd.announced.len() + 1);
        self.apply_with(peer, at, source_time, upd, &mut |e| events.push(e));
        events
    }

    /// [`AdjRibIn::apply`], handing each event to `emit` as it is made: a session puts them
    /// straight into its output instead of collecting a vector per UPDATE first (a `RouteEvent`
    /// is about 200 bytes, and a full table makes a million).
    pub fn apply_with(
        &mut self,
        peer: Peer,
        at: SystemTime,
        source_time: Option<SystemTime>,
        mut upd: ParsedUpdate,
        emit: &mut impl FnMut(RouteEvent),
    ) {
        self.apply_parsed(peer, at, source_time, &mut upd, emit);
    }

    /// [`AdjRibIn::apply_with`] on an UPDATE the caller keeps for the next one (see
    /// `update::parse_update_interned_into`): its prefix vectors are drained, not freed, so a
    /// session reuses them for every UPDATE.
    pub fn apply_parsed(
        &mut self,
        peer: Peer,
        at: SystemTime,
        source_time: Option<SystemTime>,
        upd: &mut ParsedUpdate,
        emit: &mut impl FnMut(RouteEvent),
    ) {
        let ev = |family, path_id, change| RouteEvent {
            peer,
            family,
            path_id,
            received: at,
            source_time,
            change,
        };
        for (family, id, prefix) in upd.withdrawn.drain(..) {
            let Some(k) = key(family, &prefix) else {
                continue;
            };
            if let Some(v) = self.remove(k, id) {
                if let Some(previous) = self.store.route(v).cloned() {
                    emit(ev(family, id, RouteChange::Withdraw { prefix, previous }));
                }
                self.store.release(v);
            }
        }
        if !upd.announced.is_empty() {
            let (set, new_set) = match upd.interned {
                Some(InternedSet(i)) if self.store.set(i).is_some() => (i, false),
                _ => self.store.intern_attrs(std::mem::take(&mut upd.attrs)),
            };
            // The next hop is nearly always the same for every prefix of an UPDATE.
            let mut last: Option<(Option<IpAddr>, u32)> = None;
            // Slots looked up for this UPDATE: the first inline, more only for several next hops.
            let mut first: Option<u32> = None;
            let mut created: Vec<u32> = Vec::new();
            for (family, id, prefix, next_hop) in upd.announced.drain(..) {
                let Some(k) = key(family, &prefix) else {
                    continue;
                };
                let slot = match last {
                    Some((nh, s)) if nh == next_hop => s,
                    _ => {
                        let Some(s) = self.store.slot_of(next_hop, set) else {
                            continue;
                        };
                        if first.is_none() {
                            first = Some(s);
                        } else {
                            created.push(s);
                        }
                        last = Some((next_hop, s));
                        s
                    }
                };
                match self.insert(k, id, slot) {
                    None => {
                        self.store.acquire(slot);
                        if let Some(route) = self.store.route_of(set, next_hop) {
                            emit(ev(family, id, RouteChange::Announce { prefix, route }));
                        }
                    }
                    Some(old) if old & !STALE == slot => {
                        // Same route (a refresh, or a stale route re-announced): no event.
                    }
                    Some(old) => {
                        self.store.acquire(slot);
                        if let (Some(previous), Some(route)) = (
                            self.store.route(old).cloned(),
                            self.store.route_of(set, next_hop),
                        ) {
                            let changed = AttrKind::diff(&previous, &route);
                            if !changed.is_empty() {
                                emit(ev(
                                    family,
                                    id,
                                    RouteChange::AttributeChange {
                                        prefix,
                                        previous: Box::new(previous),
                                        route,
                                        changed,
                                    },
                                ));
                            }
                        }
                        self.store.release(old);
                    }
                }
            }
            for s in first.into_iter().chain(created) {
                self.store.release_if_unused(s);
            }
            if new_set {
                // A new attribute set no slot took (every prefix was filtered out) is not kept.
                self.store.drop_set_if_unused(set);
            }
        }
        if let Some(family) = upd.end_of_rib {
            emit(ev(family, None, RouteChange::EndOfRib));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4], len: u8) -> Prefix {
        Prefix {
            addr: IpAddr::V4(Ipv4Addr::from(a)),
            len,
        }
    }

    /// A resync snapshot walks a family in chunks: every route (plain, ADD-PATH and stale) comes
    /// exactly once, whatever the chunk size, and the other family never.
    #[test]
    fn a_chunked_walk_visits_every_route_once() {
        let mut rib = AdjRibIn::new();
        let peer = Peer::session("198.18.0.1".parse().unwrap(), 65001);
        let nh = Some("198.18.0.1".parse().unwrap());
        let mut announced = Vec::new();
        for i in 0..7u8 {
            announced.push((Family::Ipv4Unicast, None, v4([10, 0, i, 0], 24), nh));
        }
        for id in 1..=5u32 {
            announced.push((Family::Ipv4Unicast, Some(id), v4([10, 1, 0, 0], 24), nh));
        }
        let v6 = Prefix {
            addr: "2001:db8::".parse().unwrap(),
            len: 32,
        };
        announced.push((Family::Ipv6Unicast, None, v6, nh));
        let upd = ParsedUpdate {
            announced,
            attrs: PathAttributes {
                origin: Some(0),
                ..Default::default()
            },
            ..Default::default()
        };
        rib.apply(peer, SystemTime::UNIX_EPOCH, None, upd);
        assert_eq!(rib.count(Family::Ipv4Unicast), 12);
        let walk = |rib: &AdjRibIn, limit: usize| {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let chunk = rib.routes_chunk(Family::Ipv4Unicast, after, limit);
                let done = chunk.len() < limit;
                after = chunk.last().map(|(p, id, _)| (*p, *id));
                seen.extend(chunk.into_iter().map(|(p, id, r)| {
                    assert_eq!(r.next_hop, nh);
                    (p, id)
                }));
                if done {
                    return seen;
                }
            }
        };
        let all = walk(&rib, 1000);
        assert_eq!(all.len(), 12);
        for limit in [1, 3, 4, 7, 11, 12, 13] {
            assert_eq!(walk(&rib, limit), all, "chunks of {limit}");
        }
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 12);
        assert!(all.iter().all(|(p, _)| p.addr.is_ipv4()));
        // Stale routes are held, so they are part of the snapshot too.
        rib.mark_stale(Family::Ipv4Unicast);
        assert_eq!(walk(&rib, 5), all);
    }
}
