//! The Adj-RIB-In's index of attribute sets: fingerprint → set number.
//!
//! Why not a `HashMap<u64, u32>` (what it replaces): a lookup is made for nearly every UPDATE of
//! a table transfer, for a random one of about 100k sets, so nothing of the index is in cache.
//! hashbrown keeps its control bytes and its entries in two separate arrays, which costs two
//! cache misses per lookup; in the decode profile those two loads were half the time of
//! `find_raw_set`. Here each entry is one `u64` in one array (linear probing, at most half full):
//! the set's tag (the high 32 bits of its fingerprint) and its number, so a lookup is one cache
//! miss and the set it names is the next. The tag also chooses the home slot, which lets the
//! table grow without the fingerprints. Equal tags are rare, and each candidate is checked
//! against the full 128-bit fingerprint kept in the set itself (`rib.rs`). Removal shifts later
//! entries back (no tombstones), so lookups never slow down with churn.

/// `(tag << 32) | (set + 1)`; 0 is an empty slot.
#[derive(Debug, Default)]
pub(crate) struct SetIndex {
    slots: Vec<u64>,
    len: usize,
}

fn tag(hash: u64) -> u64 {
    hash >> 32
}

fn entry(hash: u64, set: u32) -> u64 {
    (tag(hash) << 32) | (u64::from(set) + 1)
}

fn set_of(e: u64) -> u32 {
    ((e & 0xffff_ffff) as u32).wrapping_sub(1)
}

impl SetIndex {
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Where an entry with this tag starts probing.
    fn home(&self, tag: u64) -> usize {
        // The tag's bits spread by a multiplication (Fibonacci hashing), so that a small table
        // does not use only its low bits.
        (tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & self.mask()
    }

    /// The first set with this hash's tag for which `is` holds (candidates in probe order).
    pub(crate) fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let t = tag(hash);
        let mut i = self.home(t);
        loop {
            let e = *self.slots.get(i)?;
            if e == 0 {
                return None;
            }
            if e >> 32 == t && is(set_of(e)) {
                return Some(set_of(e));
            }
            i = (i + 1) & self.mask();
        }
    }

    /// Adds `set` under `hash` (several sets may share a hash; each has its own entry). `set`
    /// must be below `u32::MAX`.
    pub(crate) fn insert(&mut self, hash: u64, set: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.place(entry(hash, set));
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mut i = self.home(e >> 32);
        let mask = self.mask();
        while let Some(s) = self.slots.get_mut(i) {
            if *s == 0 {
                *s = e;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![0; cap]);
        for e in old.into_iter().filter(|e| *e != 0) {
            self.place(e);
        }
    }

    /// Removes the entry of `set` under `hash`; false if there was none.
    pub(crate) fn remove(&mut self, hash: u64, set: u32) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let want = entry(hash, set);
        let mask = self.mask();
        let mut i = self.home(want >> 32);
        loop {
            match self.slots.get(i) {
                Some(&e) if e == want => break,
                Some(&e) if e != 0 => i = (i + 1) & mask,
                _ => return false,
            }
        }
        // Backward-shift deletion (Knuth's Algorithm R): move up each later entry of the run
        // whose home is not between the hole and itself.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let e = match self.slots.get(j) {
                Some(&e) if e != 0 => e,
                _ => break,
            };
            let home = self.home(e >> 32);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                if let Some(s) = self.slots.get_mut(hole) {
                    *s = e;
                }
                hole = j;
            }
        }
        if let Some(s) = self.slots.get_mut(hole) {
            *s = 0;
        }
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn matches_a_model_through_inserts_removals_and_shared_tags() {
        let mut ix = SetIndex::default();
        // set → hash; hashes drawn from a few tags so that probe runs collide and wrap.
        let mut model: HashMap<u32, u64> = HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for step in 0..40_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let set = (x % 5000) as u32;
            if let Some(h) = model.remove(&set) {
                assert!(ix.remove(h, set), "step {step}: remove {set}");
                assert!(!ix.remove(h, set));
            } else {
                let h = if x & 1 == 0 { ((x >> 8) % 7) << 32 } else { x };
                ix.insert(h, set);
                model.insert(set, h);
            }
            if step.is_multiple_of(97) {
                for (&s, &h) in &model {
                    assert_eq!(ix.find(h, |c| c == s), Some(s), "step {step}: find {s}");
                }
            }
        }
        assert_eq!(ix.len, model.len());
        assert!(ix.slots.len() >= 2 * ix.len);
        for (&s, &h) in &model {
            assert_eq!(ix.find(h, |c| c == s), Some(s));
            assert!(ix.remove(h, s));
        }
        assert_eq!(ix.len, 0);
        assert!(ix.slots.iter().all(|e| *e == 0));
        assert_eq!(ix.find(7 << 32, |_| true), None);
    }
}
