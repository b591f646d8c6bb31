//! Full-table benchmark helper (used by `benches/bgp_full_table.sh`; not part of the listener).
//!
//! - `gen --out FILE`: pre-encodes a synthetic full IPv4 table (see `benches/support`) once.
//! - `send --file FILE --connect ADDR:PORT`: a BGP speaker that does the OPEN exchange, then
//!   writes the file's UPDATEs as fast as TCP allows, and keeps the session up until the receiver
//!   closes it or `--linger` seconds pass. Prints the Unix time of Established and of the last
//!   byte written.
//! - `sink --listen ADDR:PORT`: the floor. Accepts one session and only frames messages until
//!   End-of-RIB; prints the seconds from Established to End-of-RIB.
//!
//! The sender lives here, in benches/tests only: the listener itself can send no UPDATE.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

#[path = "../benches/support/fulltable_gen.rs"]
mod fulltable_gen;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Gen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        prefixes: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 65001)]
        peer_as: u32,
        #[arg(long, default_value = "198.18.0.1")]
        next_hop: Ipv4Addr,
    },
    Send {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 65001)]
        local_as: u32,
        #[arg(long, default_value = "198.18.0.1")]
        router_id: Ipv4Addr,
        #[arg(long, default_value_t = 120)]
        linger: u64,
    },
    Sink {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 65002)]
        local_as: u32,
        #[arg(long, default_value = "198.18.0.2")]
        router_id: Ipv4Addr,
    },
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// OPEN with MP IPv4 unicast, 4-octet AS and graceful restart (so End-of-RIB is expected).
fn open(asn: u32, id: Ipv4Addr, hold: u16) -> Vec<u8> {
    let mut caps = vec![1, 4, 0, 1, 0, 1, 65, 4];
    caps.extend_from_slice(&asn.to_be_bytes());
    caps.extend_from_slice(&[64, 2, 0, 120]);
    let mut b = vec![4];
    b.extend_from_slice(&u16::try_from(asn).unwrap_or(23456).to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id.octets());
    b.push(caps.len() as u8 + 2);
    b.extend_from_slice(&[2, caps.len() as u8]);
    b.extend_from_slice(&caps);
    msg(1, &b)
}

fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

/// Minimal blocking framer: returns (type, body) of the next message.
struct Reader {
    s: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Reader {
    fn new(s: TcpStream) -> Reader {
        Reader {
            s,
            buf: vec![0; 1 << 20],
            start: 0,
            end: 0,
        }
    }

    /// Calls `f(type, body)` for each message until it returns false; `Ok(false)` on close.
    fn each(&mut self, mut f: impl FnMut(u8, &[u8]) -> bool) -> Result<bool> {
        loop {
            while self.end - self.start >= 19 {
                let h = &self.buf[self.start..];
                let len = usize::from(u16::from_be_bytes([h[16], h[17]]));
                if len < 19 {
                    bail!("bad length {len}");
                }
                if self.end - self.start < len {
                    break;
                }
                let kind = h[18];
                let keep = f(kind, &h[19..len]);
                self.start += len;
                if !keep {
                    return Ok(true);
                }
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.s.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Ok(false);
            }
            self.end += n;
        }
    }
}

/// OPEN exchange up to Established from either side; returns when the peer's KEEPALIVE arrived.
fn handshake(r: &mut Reader, my_open: &[u8]) -> Result<()> {
    r.s.write_all(my_open)?;
    let mut got_open = false;
    let mut err = None;
    let mut w = r.s.try_clone()?;
    let open = r.each(|kind, body| match kind {
        1 => {
            got_open = true;
            let _ = w.write_all(&msg(4, &[]));
            true
        }
        4 if got_open => false,
        3 => {
            err = Some(format!("NOTIFICATION {body:?}"));
            false
        }
        _ => true,
    })?;
    if let Some(e) = err {
        bail!("peer sent {e}");
    }
    if !open {
        bail!("peer closed during the OPEN exchange");
    }
    Ok(())
}

fn send(file: PathBuf, connect: SocketAddr, asn: u32, id: Ipv4Addr, linger: u64) -> Result<()> {
    let data = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        match TcpStream::connect(connect) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {connect}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e).context("connect"),
        }
    };
    s.set_nodelay(true)?;
    let mut r = Reader::new(s.try_clone()?);
    handshake(&mut r, &open(asn, id, 240))?;
    println!("established {:.6}", unix_now());
    let mut w = s.try_clone()?;
    w.write_all(&data)?;
    println!("sent {:.6} bytes {}", unix_now(), data.len());
    std::io::stdout().flush()?;
    // Keep the session up (KEEPALIVEs) until the receiver closes or `linger` passes.
    r.s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let end = Instant::now() + Duration::from_secs(linger);
    while Instant::now() < end {
        let _ = w.write_all(&msg(4, &[]));
        match r.each(|kind, _| kind != 3) {
            Ok(false) => break,
            Ok(true) => break,
            Err(_) => continue,
        }
    }
    Ok(())
}

fn sink(listen: SocketAddr, asn: u32, id: Ipv4Addr) -> Result<()> {
    let l = TcpListener::bind(listen)?;
    let (s, _) = l.accept()?;
    let mut r = Reader::new(s);
    handshake(&mut r, &open(asn, id, 240))?;
    let est = Instant::now();
    let mut updates = 0u64;
    let mut prefixes = 0u64;
    r.each(|kind, body| {
        if kind != 2 {
            return true;
        }
        if body == [0, 0, 0, 0] {
            return false;
        }
        updates += 1;
        // Count the NLRI prefixes (no decoding beyond lengths): the floor's only work.
        let wlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let alen = usize::from(u16::from_be_bytes([body[2 + wlen], body[3 + wlen]]));
        let mut nlri = &body[4 + wlen + alen..];
        while let Some((&len, rest)) = nlri.split_first() {
            nlri = &rest[usize::from(len).div_ceil(8)..];
            prefixes += 1;
        }
        true
    })?;
    let secs = est.elapsed().as_secs_f64();
    println!(
        "sink: {updates} UPDATEs, {prefixes} prefixes, {secs:.3} s from Established to End-of-RIB"
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Gen {
            out,
            prefixes,
            seed,
            peer_as,
            next_hop,
        } => {
            let (bytes, updates) =
                fulltable_gen::generate(prefixes, seed, peer_as, next_hop.octets());
            std::fs::write(&out, &bytes)?;
            println!(
                "wrote {}: {prefixes} prefixes in {updates} UPDATEs + End-of-RIB, {} bytes",
                out.display(),
                bytes.len()
            );
            Ok(())
        }
        Cmd::Send {
            file,
            connect,
            local_as,
            router_id,
            linger,
        } => send(file, connect, local_as, router_id, linger),
        Cmd::Sink {
            listen,
            local_as,
            router_id,
        } => sink(listen, local_as, router_id),
    }
}
