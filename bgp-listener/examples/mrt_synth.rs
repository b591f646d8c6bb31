//! Writes a synthetic TABLE_DUMP_V2 file for the replay benchmark (`benches/mrt_replay.sh`):
//! `mrt_synth OUT PREFIXES PEERS`. Every prefix is seen by every peer, like a route collector's
//! RIB dump; 7 in 8 prefixes are IPv4 /24s, the rest IPv6 /48s. AS paths (2 to 7 hops, 4-octet
//! ASNs), MEDs and communities vary by a fixed pseudo-random sequence, so the file is the same on
//! every run.
#![allow(clippy::print_stdout)]

use std::io::{BufWriter, Write};

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
}

fn record(out: &mut impl Write, ts: u32, subtype: u16, body: &[u8]) -> std::io::Result<()> {
    out.write_all(&ts.to_be_bytes())?;
    out.write_all(&13u16.to_be_bytes())?;
    out.write_all(&subtype.to_be_bytes())?;
    out.write_all(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes())?;
    out.write_all(body)
}

fn attr(buf: &mut Vec<u8>, flags: u8, t: u8, v: &[u8]) {
    buf.extend_from_slice(&[flags, t, u8::try_from(v.len()).unwrap_or(u8::MAX)]);
    buf.extend_from_slice(v);
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(n), Some(peers)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: mrt_synth OUT PREFIXES PEERS");
        std::process::exit(2);
    };
    let n: u32 = n.parse().unwrap_or(500_000);
    let peers: u16 = peers.parse().unwrap_or(4);
    let ts = 1_800_000_000u32;
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut body = Vec::new();
    body.extend_from_slice(&[198, 18, 0, 1]);
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&peers.to_be_bytes());
    for p in 0..peers {
        let [hi, lo] = p.to_be_bytes();
        body.push(0x02); // IPv4 address, 4-octet AS
        body.extend_from_slice(&[198, 18, hi, lo]);
        body.extend_from_slice(&[198, 18, hi, lo]);
        body.extend_from_slice(&(64_500u32 + u32::from(p)).to_be_bytes());
    }
    record(&mut out, ts, 1, &body)?;
    let mut rng = Lcg(42);
    let mut attrs = Vec::new();
    for i in 0..n {
        body.clear();
        body.extend_from_slice(&i.to_be_bytes());
        let v6 = i % 8 == 7;
        if v6 {
            body.push(48);
            body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            body.extend_from_slice(&u16::try_from(i / 8 % 65_536).unwrap_or(0).to_be_bytes());
        } else {
            let a = (i + (1 << 16)) << 8;
            body.push(24);
            body.extend_from_slice(&a.to_be_bytes()[..3]);
        }
        body.extend_from_slice(&peers.to_be_bytes());
        for p in 0..peers {
            let [hi, lo] = p.to_be_bytes();
            attrs.clear();
            attr(
                &mut attrs,
                0x40,
                1,
                &[u8::from(rng.next().is_multiple_of(5))],
            );
            let hops = 2 + rng.next() % 6;
            let mut path = vec![2u8, u8::try_from(hops).unwrap_or(2)];
            path.extend_from_slice(&(64_500u32 + u32::from(p)).to_be_bytes());
            for _ in 1..hops {
                let asn = if rng.next().is_multiple_of(4) {
                    4_200_000_000 + rng.next() % 1000
                } else {
                    1 + rng.next() % 64_000
                };
                path.extend_from_slice(&asn.to_be_bytes());
            }
            attr(&mut attrs, 0x40, 2, &path);
            if v6 {
                let mut nh = vec![16u8, 0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff];
                nh.extend_from_slice(&[0; 8]);
                nh.extend_from_slice(&[hi, lo, 0, 1]);
                nh.truncate(17);
                attr(&mut attrs, 0x80, 14, &nh);
            } else {
                attr(&mut attrs, 0x40, 3, &[198, 18, hi, lo]);
            }
            if rng.next().is_multiple_of(3) {
                attr(&mut attrs, 0x80, 4, &(rng.next() % 1000).to_be_bytes());
            }
            let ncomm = rng.next() % 4;
            if ncomm > 0 {
                let mut c = Vec::new();
                for _ in 0..ncomm {
                    c.extend_from_slice(&(64_500u32 + u32::from(p)).to_be_bytes()[2..]);
                    c.extend_from_slice(
                        &u16::try_from(rng.next() % 1000).unwrap_or(0).to_be_bytes(),
                    );
                }
                attr(&mut attrs, 0xc0, 8, &c);
            }
            body.extend_from_slice(&p.to_be_bytes());
            body.extend_from_slice(&(ts - 3600 - rng.next() % 86_400).to_be_bytes());
            body.extend_from_slice(&u16::try_from(attrs.len()).unwrap_or(0).to_be_bytes());
            body.extend_from_slice(&attrs);
        }
        record(&mut out, ts, if v6 { 4 } else { 2 }, &body)?;
    }
    out.flush()?;
    println!("{path}: {n} prefixes x {peers} peers");
    Ok(())
}
