//! The VRP index at full-table size: build time of a 500k-VRP set (what each RTR End of Data
//! costs) and origin validations per second, over routes that hit covered and uncovered space.
//!
//! `cargo bench -p foureyes-collector --bench rpki` (`cargo xtask bench` runs it). Env:
//! `BENCH_VRPS` (default 500000, a fifth of them IPv6), `BENCH_LOOKUPS` (default 2000000).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use foureyes_collector::rpki::{RpkiState, Vrp, VrpSet};
use rand::{Rng, SeedableRng};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = env("BENCH_VRPS", 500_000);
    let lookups = env("BENCH_LOOKUPS", 2_000_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(6811);
    // Lengths roughly as in the real table: IPv4 mostly /24 and /16-/22, IPv6 mostly /32-/48.
    let vrps: Vec<Vrp> = (0..n)
        .filter_map(|i| {
            let asn = rng.gen_range(1..400_000);
            if i % 5 == 4 {
                let len = *[29u8, 32, 32, 36, 40, 44, 48, 48]
                    .get(rng.gen_range(0..8))
                    .unwrap();
                let a = Ipv6Addr::from(0x2000u128 << 112 | u128::from(rng.r#gen::<u64>()) << 64);
                Vrp::new(a.into(), len, len.max(48), asn)
            } else {
                let len = *[16u8, 19, 20, 21, 22, 23, 24, 24, 24, 24]
                    .get(rng.gen_range(0..10))
                    .unwrap();
                let a = Ipv4Addr::from(rng.gen_range(0x0100_0000u32..0xdf00_0000));
                Vrp::new(a.into(), len, if rng.gen_bool(0.2) { 24 } else { len }, asn)
            }
        })
        .collect();
    let t = Instant::now();
    let set = VrpSet::new(vrps.iter().copied());
    let build = t.elapsed();
    println!(
        "vrps {} built in {:.1} ms",
        set.len(),
        build.as_secs_f64() * 1e3
    );

    // Half the routes are announced VRPs (valid or another origin), half random space.
    let routes: Vec<(IpAddr, u8, u32)> = (0..lookups.min(1_000_000))
        .map(|i| {
            if i % 2 == 0 {
                let v = vrps[rng.gen_range(0..vrps.len())];
                let origin = if rng.gen_bool(0.5) { v.asn } else { 64496 };
                (v.addr, v.max_len, origin)
            } else if i % 10 == 1 {
                let a = Ipv6Addr::from(0x2000u128 << 112 | u128::from(rng.r#gen::<u64>()) << 64);
                (a.into(), 48, 64496)
            } else {
                (Ipv4Addr::from(rng.r#gen::<u32>()).into(), 24, 64496)
            }
        })
        .collect();
    let mut counts = [0usize; 4];
    let t = Instant::now();
    for i in 0..lookups {
        let (a, l, o) = routes[i % routes.len()];
        counts[match set.validate(a, l, o) {
            RpkiState::Valid => 0,
            RpkiState::Invalid => 1,
            RpkiState::NotFound => 2,
            RpkiState::Unknown => 3,
        }] += 1;
    }
    let el = t.elapsed();
    println!(
        "{lookups} validations in {:.2} s: {:.0} ns each, {:.2} M/s (valid {}, invalid {}, not found {})",
        el.as_secs_f64(),
        el.as_nanos() as f64 / lookups as f64,
        lookups as f64 / el.as_secs_f64() / 1e6,
        counts[0],
        counts[1],
        counts[2]
    );
}
