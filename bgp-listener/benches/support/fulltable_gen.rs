//! A synthetic full IPv4 table as pre-encoded BGP UPDATE messages, shared by the decode bench and
//! the `fulltable` example (included with `#[path]`; not a bench of its own).
//!
//! Shape (close to a real full table from one peer): unique aligned IPv4 prefixes from 1.0.0.0
//! upward, mostly /24 with some /19../23; about one attribute set per ten prefixes; 2..=5
//! prefixes per UPDATE sharing one set; AS paths of 2..=9 hops (first hop the peer's AS,
//! 4-octet encoding), MED on some, 0..=4 communities on half, then End-of-RIB.
#![allow(dead_code)]

/// xorshift64*: deterministic, so every run feeds the same bytes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn attr(out: &mut Vec<u8>, flags: u8, t: u8, v: &[u8]) {
    if v.len() > 255 {
        out.extend_from_slice(&[flags | 0x10, t]);
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, t, v.len() as u8]);
    }
    out.extend_from_slice(v);
}

fn attribute_set(rng: &mut Rng, peer_as: u32, next_hop: [u8; 4]) -> Vec<u8> {
    let mut a = Vec::with_capacity(64);
    let origin = match rng.range(0, 9) {
        0 => 2,
        1 => 1,
        _ => 0,
    };
    attr(&mut a, 0x40, 1, &[origin]);
    let hops = rng.range(2, 9) as usize;
    let mut path = vec![2u8, hops as u8];
    path.extend_from_slice(&peer_as.to_be_bytes());
    for _ in 1..hops {
        let mut asn = rng.range(1, 400_000) as u32;
        if asn == 23456 {
            asn += 1;
        }
        path.extend_from_slice(&asn.to_be_bytes());
    }
    attr(&mut a, 0x40, 2, &path);
    attr(&mut a, 0x40, 3, &next_hop);
    if rng.range(0, 9) < 3 {
        attr(&mut a, 0x80, 4, &(rng.range(0, 1000) as u32).to_be_bytes());
    }
    if rng.range(0, 1) == 0 {
        let n = rng.range(1, 4);
        let mut c = Vec::new();
        for _ in 0..n {
            let v = ((peer_as & 0xffff) << 16) | rng.range(1, 5000) as u32;
            c.extend_from_slice(&v.to_be_bytes());
        }
        attr(&mut a, 0xc0, 8, &c);
    }
    a
}

fn message(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
}

/// The prefixes of the table, in order: `(address, length)`.
pub fn prefixes(n: usize, rng: &mut Rng) -> Vec<(u32, u8)> {
    let mut v = Vec::with_capacity(n);
    let mut base: u64 = 0x0100_0000;
    while v.len() < n {
        let len: u8 = match rng.range(0, 99) {
            0..=84 => 24,
            85..=89 => 23,
            90..=94 => 22,
            95..=97 => 21,
            98 => 20,
            _ => 19,
        };
        let size = 1u64 << (32 - len);
        base = base.div_ceil(size) * size;
        if base + size > u64::from(u32::MAX) {
            break;
        }
        v.push((base as u32, len));
        base += size;
    }
    v
}

/// The whole table as BGP messages (UPDATEs, then the IPv4 End-of-RIB), and how many UPDATEs
/// carry prefixes.
pub fn generate(n: usize, seed: u64, peer_as: u32, next_hop: [u8; 4]) -> (Vec<u8>, usize) {
    let mut rng = Rng::new(seed);
    let sets: Vec<Vec<u8>> = (0..(n / 10).max(1))
        .map(|_| attribute_set(&mut rng, peer_as, next_hop))
        .collect();
    let pfx = prefixes(n, &mut rng);
    let mut out = Vec::with_capacity(n * 28);
    let mut updates = 0;
    let mut i = 0;
    let mut body = Vec::with_capacity(512);
    while i < pfx.len() {
        let k = (rng.range(2, 5) as usize).min(pfx.len() - i);
        let set = &sets[rng.range(0, sets.len() as u64 - 1) as usize];
        body.clear();
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&(set.len() as u16).to_be_bytes());
        body.extend_from_slice(set);
        for (addr, len) in &pfx[i..i + k] {
            body.push(*len);
            let bytes = addr.to_be_bytes();
            body.extend_from_slice(&bytes[..usize::from(*len).div_ceil(8)]);
        }
        message(&mut out, 2, &body);
        updates += 1;
        i += k;
    }
    message(&mut out, 2, &[0, 0, 0, 0]);
    (out, updates)
}
