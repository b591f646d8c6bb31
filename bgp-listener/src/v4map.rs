//! The IPv4 prefix map of an Adj-RIB-In: prefix → `u32` route slot, exact match, ordered.
//!
//! Why not a `BTreeMap<u64, u32>` (what it replaces): on a full table (1M prefixes) the B-tree
//! took about 20 bytes per prefix (nodes about half full after the mostly ascending inserts of a
//! table transfer) and its insert was a tenth of the decode profile (a walk of six or seven
//! levels, a cache miss at most of them). A hash map is no better: 1M entries sit just past a
//! power of two, so it would hold 2M buckets of 12 bytes, and it doubles at once when it grows.
//!
//! This map is a two-level radix on the address's top two bytes (256 × 256 buckets, the second
//! level allocated per /8 in use, so a small table costs a few KB), and each bucket is a sorted
//! `Vec<u64>` holding the key (low 16 address bits and the length) and the value packed in one
//! word: 8 bytes per prefix plus a little growth slack (vectors grow by a quarter, not double).
//! A lookup is the two directory reads and a binary search in one bucket (a full table has a
//! few hundred prefixes per /16). A bucket a peer fills past `SMALL_MAX` prefixes (only a
//! deaggregated /16 does: a /16 can hold 131071 prefixes) becomes a B-tree, so that inserting in
//! any order stays `O(log n)` and no peer can make inserts quadratic.
//!
//! Iteration (`retain`, `for_each_value_mut`, `drain_values`) runs in key order, the same
//! `(address, length)` order as the `u64` keys of `rib.rs`. Only exact-match lookups are needed
//! here (longest-prefix and covering lookups are the collector's, on its own table).

use std::collections::BTreeMap;

/// Above this many prefixes a bucket becomes a B-tree: inserting into a sorted vector moves half
/// of it on average, which at 1024 entries (8 KB) is still cheaper than a B-tree insert.
const SMALL_MAX: usize = 1024;

#[derive(Debug)]
enum Bucket {
    /// Sorted by key; each entry is `key << 32 | value` (see `leaf_key`).
    Small(Vec<u64>),
    Large(BTreeMap<u32, u32>),
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket::Small(Vec::new())
    }
}

/// The buckets of one /8, by the address's second byte.
type Level2 = [Bucket; 256];

/// Map from an IPv4 key (`rib.rs`: address << 8 | length) to a `u32`.
#[derive(Debug, Default)]
pub(crate) struct V4Map {
    /// By the address's first byte; empty until the first insert, then 256 long.
    top: Vec<Option<Box<Level2>>>,
    len: usize,
}

/// Splits a key into its first address byte, second address byte, and the key within the
/// bucket: the low 16 address bits and the length (a prefix length needs 6 bits; 8 are kept).
fn split(k: u64) -> (usize, usize, u32) {
    let addr = (k >> 8) as u32;
    let len = (k & 0xff) as u32;
    (
        (addr >> 24) as usize,
        ((addr >> 16) & 0xff) as usize,
        ((addr & 0xffff) << 8) | len,
    )
}

fn join(top: usize, mid: usize, leaf: u32) -> u64 {
    let addr = ((top as u64 & 0xff) << 24) | ((mid as u64 & 0xff) << 16) | u64::from(leaf >> 8);
    (addr << 8) | u64::from(leaf & 0xff)
}

fn leaf_key(e: u64) -> u32 {
    (e >> 32) as u32
}

fn entry(leaf: u32, v: u32) -> u64 {
    (u64::from(leaf) << 32) | u64::from(v)
}

impl Bucket {
    fn get(&self, leaf: u32) -> Option<u32> {
        match self {
            Bucket::Small(v) => v
                .binary_search_by_key(&leaf, |e| leaf_key(*e))
                .ok()
                .and_then(|i| v.get(i))
                .map(|e| *e as u32),
            Bucket::Large(b) => b.get(&leaf).copied(),
        }
    }

    fn insert(&mut self, leaf: u32, val: u32) -> Option<u32> {
        let v = match self {
            Bucket::Large(b) => return b.insert(leaf, val),
            Bucket::Small(v) => v,
        };
        // A table transfer is mostly in ascending order: appending needs no search.
        let at = match v.last() {
            Some(&last) if leaf_key(last) < leaf => v.len(),
            None => 0,
            Some(_) => match v.binary_search_by_key(&leaf, |e| leaf_key(*e)) {
                Ok(i) => {
                    let slot = v.get_mut(i)?;
                    let old = *slot as u32;
                    *slot = entry(leaf, val);
                    return Some(old);
                }
                Err(i) => i,
            },
        };
        if v.len() >= SMALL_MAX {
            let mut b: BTreeMap<u32, u32> = v.iter().map(|e| (leaf_key(*e), *e as u32)).collect();
            b.insert(leaf, val);
            *self = Bucket::Large(b);
            return None;
        }
        if v.len() == v.capacity() {
            // Grow by a quarter (at least 4), not double: a full table holds a million entries
            // in these vectors, and the copies are of a few KB at most.
            v.reserve_exact((v.len() / 4).max(4));
        }
        v.insert(at, entry(leaf, val));
        None
    }

    fn remove(&mut self, leaf: u32) -> Option<u32> {
        match self {
            Bucket::Small(v) => {
                let i = v.binary_search_by_key(&leaf, |e| leaf_key(*e)).ok()?;
                let e = v.remove(i);
                if v.is_empty() {
                    *v = Vec::new();
                }
                Some(e as u32)
            }
            Bucket::Large(b) => b.remove(&leaf),
        }
    }

    fn len(&self) -> usize {
        match self {
            Bucket::Small(v) => v.len(),
            Bucket::Large(b) => b.len(),
        }
    }
}

impl V4Map {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn bucket(&self, top: usize, mid: usize) -> Option<&Bucket> {
        self.top.get(top)?.as_ref()?.get(mid)
    }

    pub(crate) fn get(&self, k: u64) -> Option<u32> {
        let (t, m, leaf) = split(k);
        self.bucket(t, m)?.get(leaf)
    }

    pub(crate) fn insert(&mut self, k: u64, v: u32) -> Option<u32> {
        let (t, m, leaf) = split(k);
        if self.top.is_empty() {
            self.top.resize_with(256, || None);
        }
        let level2 = self
            .top
            .get_mut(t)?
            .get_or_insert_with(|| Box::new(std::array::from_fn(|_| Bucket::default())));
        let old = level2.get_mut(m)?.insert(leaf, v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(crate) fn remove(&mut self, k: u64) -> Option<u32> {
        let (t, m, leaf) = split(k);
        let old = self.top.get_mut(t)?.as_mut()?.get_mut(m)?.remove(leaf)?;
        self.len = self.len.saturating_sub(1);
        Some(old)
    }

    /// Calls `f` with every value, in key order, letting it change the value.
    pub(crate) fn for_each_value_mut(&mut self, mut f: impl FnMut(&mut u32)) {
        for level2 in self.top.iter_mut().flatten() {
            for b in level2.iter_mut() {
                match b {
                    Bucket::Small(v) => {
                        for e in v.iter_mut() {
                            let mut val = *e as u32;
                            f(&mut val);
                            *e = entry(leaf_key(*e), val);
                        }
                    }
                    Bucket::Large(m) => m.values_mut().for_each(&mut f),
                }
            }
        }
    }

    /// Keeps the entries for which `f(key, value)` is true, visiting them in key order.
    pub(crate) fn retain(&mut self, mut f: impl FnMut(u64, u32) -> bool) {
        let mut len = 0;
        for (t, level2) in self.top.iter_mut().enumerate() {
            let Some(level2) = level2 else { continue };
            for (m, b) in level2.iter_mut().enumerate() {
                match b {
                    Bucket::Small(v) => v.retain(|e| f(join(t, m, leaf_key(*e)), *e as u32)),
                    Bucket::Large(map) => map.retain(|leaf, val| f(join(t, m, *leaf), *val)),
                }
                len += b.len();
            }
        }
        self.len = len;
    }

    /// Appends up to `limit` entries with keys above `after` (all keys when `None`) to `out`, in
    /// key order: a resync snapshot walks the map in chunks with it.
    pub(crate) fn entries_after(
        &self,
        after: Option<u64>,
        limit: usize,
        out: &mut Vec<(u64, u32)>,
    ) {
        let start = after.map(split);
        let mut left = limit;
        for (t, level2) in self.top.iter().enumerate() {
            let Some(level2) = level2 else { continue };
            if start.is_some_and(|(st, _, _)| t < st) {
                continue;
            }
            for (m, b) in level2.iter().enumerate() {
                if left == 0 {
                    return;
                }
                // Leaves above this one, in the bucket `after` falls in; every leaf after it.
                let above = match start {
                    Some((st, sm, _)) if (t, m) < (st, sm) => continue,
                    Some((st, sm, sl)) if (t, m) == (st, sm) => Some(sl),
                    _ => None,
                };
                let before = out.len();
                match b {
                    Bucket::Small(v) => out.extend(
                        v.iter()
                            .filter(|e| above.is_none_or(|a| leaf_key(**e) > a))
                            .take(left)
                            .map(|e| (join(t, m, leaf_key(*e)), *e as u32)),
                    ),
                    Bucket::Large(map) => {
                        let range = match above {
                            Some(a) => map
                                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
                            None => map.range(..),
                        };
                        out.extend(range.take(left).map(|(l, v)| (join(t, m, *l), *v)));
                    }
                }
                left -= out.len() - before;
            }
        }
    }

    /// Empties the map, calling `f` with every value it held.
    pub(crate) fn drain_values(&mut self, mut f: impl FnMut(u32)) {
        for level2 in std::mem::take(&mut self.top).into_iter().flatten() {
            for b in level2.into_iter() {
                match b {
                    Bucket::Small(v) => v.into_iter().for_each(|e| f(e as u32)),
                    Bucket::Large(m) => m.into_values().for_each(&mut f),
                }
            }
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(addr: u32, len: u8) -> u64 {
        (u64::from(addr) << 8) | u64::from(len)
    }

    /// xorshift: deterministic operations to compare against a B-tree.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn assert_same(m: &mut V4Map, model: &BTreeMap<u64, u32>) {
        assert_eq!(m.len(), model.len());
        let mut seen = Vec::new();
        m.retain(|k, v| {
            seen.push((k, v));
            true
        });
        let want: Vec<(u64, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            seen, want,
            "same entries in the same (address, length) order"
        );
        assert_eq!(m.len(), model.len());
    }

    #[test]
    fn matches_a_btree_under_random_operations_including_large_buckets() {
        let mut m = V4Map::default();
        let mut model = BTreeMap::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..60_000u32 {
            let r = rng.next();
            // Half the keys crowd one /16 (so that its bucket turns into a B-tree), the rest
            // spread over the whole space, all lengths, including 0.0.0.0/0 and /32s.
            let addr = if r & 1 == 0 {
                0x0a0b_0000 | ((r >> 8) as u32 & 0xffff)
            } else {
                (r >> 16) as u32
            };
            let len = ((r >> 48) % 33) as u8;
            let k = key(addr, len);
            if (r >> 40).is_multiple_of(4) {
                assert_eq!(m.remove(k), model.remove(&k), "remove {k:#x}");
            } else {
                assert_eq!(m.insert(k, i), model.insert(k, i), "insert {k:#x}");
            }
            assert_eq!(m.get(k), model.get(&k).copied());
        }
        assert!(
            matches!(
                m.bucket(0x0a, 0x0b),
                Some(Bucket::Large(b)) if b.len() > SMALL_MAX
            ),
            "the crowded /16 became a B-tree"
        );
        assert_same(&mut m, &model);
        m.for_each_value_mut(|v| *v |= 1 << 31);
        model.values_mut().for_each(|v| *v |= 1 << 31);
        assert_same(&mut m, &model);
        m.retain(|k, v| (k ^ u64::from(v)) & 2 == 0);
        model.retain(|k, v| (k ^ u64::from(*v)) & 2 == 0);
        assert_same(&mut m, &model);
        let mut drained: Vec<u32> = Vec::new();
        m.drain_values(|v| drained.push(v));
        assert_eq!(drained, model.values().copied().collect::<Vec<_>>());
        assert_eq!(m.len(), 0);
        assert_eq!(m.get(key(0x0a0b_0000, 24)), None);
    }

    #[test]
    fn ascending_transfer_and_edges_of_the_key_space() {
        let mut m = V4Map::default();
        for (i, a) in (0..5000u32).enumerate() {
            assert_eq!(m.insert(key(0x0100_0000 + (a << 8), 24), i as u32), None);
        }
        assert_eq!(m.len(), 5000);
        assert_eq!(m.get(key(0x0100_0100, 24)), Some(1));
        assert_eq!(m.get(key(0x0100_0100, 23)), None);
        for k in [key(0, 0), key(u32::MAX, 32), key(0x8000_0000, 1)] {
            assert_eq!(m.insert(k, 7), None);
            assert_eq!(m.insert(k, 8), Some(7));
            assert_eq!(m.get(k), Some(8));
        }
        assert_eq!(m.len(), 5003);
        assert_eq!(m.remove(key(u32::MAX, 32)), Some(8));
        assert_eq!(m.remove(key(u32::MAX, 32)), None);
        assert_eq!(m.len(), 5002);
    }
}
