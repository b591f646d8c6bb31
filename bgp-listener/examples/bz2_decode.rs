//! Times bzip2 decompression alone, for the replay benchmark's arithmetic (README, Replay
//! throughput): `bz2_decode FILE [THREADS|serial]` decodes FILE with `mrt::bzip2_par` on THREADS
//! decoding threads (default: one per core; 0 decodes on the calling thread) or with the
//! `bzip2` crate's serial `MultiBzDecoder`, discards the output and prints bytes and seconds.
#![allow(clippy::print_stdout)]

use std::io::{self, Read};
use std::time::Instant;

use foureyes_bgp_listener::mrt::bzip2_par::{ParBzDecoder, default_threads};

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        return Err(io::Error::other("usage: bz2_decode FILE [THREADS|serial]"));
    };
    let how = args.next().unwrap_or_else(|| default_threads().to_string());
    let file = io::BufReader::with_capacity(1 << 16, std::fs::File::open(&path)?);
    let t0 = Instant::now();
    let mut r: Box<dyn Read> = if how == "serial" {
        Box::new(bzip2::read::MultiBzDecoder::new(file))
    } else {
        let n = how
            .parse()
            .map_err(|_| io::Error::other("THREADS: a number or serial"))?;
        Box::new(ParBzDecoder::with_threads(file, n))
    };
    let n = io::copy(&mut r, &mut io::sink())?;
    println!(
        "{path}: {how}: {n} bytes in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
