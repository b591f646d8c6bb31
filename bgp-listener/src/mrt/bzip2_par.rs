//! Parallel bzip2 decompression for MRT replay (RouteViews publishes its dumps as `.bz2`).
//!
//! Why our own: bzip2 decompression on one core was as slow as the whole replay (see the README's
//! replay benchmark). A bzip2 stream is a sequence of independent blocks (at most 900 kB before
//! compression each), but they are bit-aligned and carry no length, so the only way to find them
//! without decoding is to scan for the 48-bit block marker (0x314159265359) at every bit offset.
//! The crates that do this were not good enough for input from the internet: `lbzip2` (0.5) is a
//! fresh rewrite pulling a private worker-pool crate, `parallel_bzip2_decoder` (0.2) needs the
//! whole file in memory (mmap), ends the output silently when a block fails and keeps unbounded
//! out-of-order blocks, and `bzip2-rs` (0.1) is single-threaded. So this module only splits:
//! each block, cut at its marker, becomes a stream of its own ("BZh" + level, the block's bits,
//! the end-of-stream marker and, as combined CRC, the block's own CRC), decoded by the same
//! libbzip2 port the `bzip2` crate already gives us (`libbz2-rs-sys`), which checks the block's
//! CRC. The stream's combined CRC is checked here, in block order.
//!
//! Shape: the thread that reads (the replay's reader) scans and cuts blocks and hands them round
//! robin to decoding threads, at most `2 × threads + 1` blocks in flight (each at most 900 kB
//! compressed, and its output, normally 900 kB too), and reads their output back in order, so
//! the output is byte for byte what a serial decoder gives.
//!
//! Corrupt input: a block that fails to decode ends the output with an error naming the stream,
//! the block and its compressed byte range, after every byte of the blocks before it; so do a
//! truncated stream and data after a stream that is not another bzip2 stream (as with the
//! `bzip2` crate's `MultiBzDecoder`). A marker pattern can also occur by chance inside a block's
//! bits (about once in 2^48 bit positions): a block that fails to decode is retried joined with
//! the next piece before it counts as corrupt, and an end-of-stream marker only counts when the
//! input ends after it or another stream starts there.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};

use bzip2::{Decompress, Status};

const BLOCK_MAGIC: u64 = 0x3141_5926_5359;
const EOS_MAGIC: u64 = 0x1772_4538_5090;
/// Compressed input is read in pieces of this size.
const READ_CHUNK: usize = 1 << 20;

/// The most compressed bytes one block may take: bzip2 blocks hold at most level × 100 kB, and
/// libbzip2's worst case expansion is 1 % plus 600 bytes; the rest is slack. Past this without a
/// marker the input is not bzip2, and this bounds the buffer.
fn max_piece_bits(level: u8) -> u64 {
    (u64::from(level) * 100_000 * 5 / 4 + (64 << 10)) * 8
}

/// The most one block can decode to: its level × 100 kB of run-length coded bytes, where each
/// run of 4 plus a count byte (at most 255) stands for up to 259 bytes.
fn max_block_output(level: u8) -> usize {
    usize::from(level) * 100_000 * 52
}

/// The threads the replay decompresses with: one per core (at most 4).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 4)
}

/// A bzip2 (multi-stream) decoder that decodes blocks on `threads` threads (0: on the calling
/// thread). `input` must be at the start of a bzip2 stream.
pub struct ParBzDecoder<R> {
    input: R,
    /// Compressed bytes; `buf[0]` is byte `base` of the input.
    buf: Vec<u8>,
    base: u64,
    eof: bool,
    scan: Scan,
    filter: Filter,
    threads: usize,
    workers: Vec<Worker>,
    next_worker: usize,
    in_flight: usize,
    /// Pieces and markers in input order.
    pending: VecDeque<Pending>,
    /// Output of the current block and how much of it was read.
    out: Vec<u8>,
    pos: usize,
    /// The combined CRC of the current stream's blocks so far.
    combined: u32,
    streams: u64,
    blocks: u64,
    /// Set once the input is exhausted or broken; every later read repeats it.
    failed: Option<String>,
    spare: Vec<Vec<u8>>,
}

/// Where the scan stands.
enum Scan {
    /// A stream header is expected at this input byte (or the input may end there).
    Header {
        at: u64,
        first: bool,
    },
    /// Inside a stream: a marker is expected at bit `cursor`; no boundary before `search_from`.
    Stream {
        level: u8,
        cursor: u64,
        search_from: u64,
    },
    Done,
}

enum Pending {
    Piece(Piece),
    /// The end of a stream with its stored combined CRC.
    StreamEnd {
        crc: u32,
        stream: u64,
    },
    Fail(String),
}

struct Piece {
    /// Where the decoded block is: a worker's next result, or already here.
    src: Src,
    crc: u32,
    level: u8,
    /// The piece ended at a block marker (not an end-of-stream marker or the input's end), so a
    /// chance marker may have cut it short.
    then_block: bool,
    what: String,
}

enum Src {
    Worker(usize),
    Ready(Decoded),
}

struct Job {
    stream: Vec<u8>,
    nbits: u64,
    level: u8,
    out: Vec<u8>,
}

/// A decoded piece, with its input given back (for a retry and for reuse).
struct Decoded {
    stream: Vec<u8>,
    nbits: u64,
    out: Vec<u8>,
    result: Result<(), String>,
}

struct Worker {
    jobs: SyncSender<Job>,
    done: Receiver<Decoded>,
}

impl<R: Read> ParBzDecoder<R> {
    pub fn new(input: R) -> Self {
        Self::with_threads(input, default_threads())
    }

    pub fn with_threads(input: R, threads: usize) -> Self {
        ParBzDecoder {
            input,
            buf: Vec::new(),
            base: 0,
            eof: false,
            scan: Scan::Header { at: 0, first: true },
            filter: Filter::new(),
            threads,
            workers: Vec::new(),
            next_worker: 0,
            in_flight: 0,
            pending: VecDeque::new(),
            out: Vec::new(),
            pos: 0,
            combined: 0,
            streams: 0,
            blocks: 0,
            failed: None,
            spare: Vec::new(),
        }
    }

    fn limit(&self) -> usize {
        2 * self.threads + 1
    }

    fn abs_len(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// `n` (≤ 57) bits at input bit `bit`, or `None` if not read yet.
    fn bits(&self, bit: u64, n: u32) -> Option<u64> {
        read_bits(&self.buf, bit.checked_sub(self.base * 8)?, n)
    }

    fn bytes(&self, at: u64, n: usize) -> Option<&[u8]> {
        let start = usize::try_from(at.checked_sub(self.base)?).ok()?;
        self.buf.get(start..start.checked_add(n)?)
    }

    /// Reads more input, first dropping what lies before `keep` (an input byte); false at its end.
    fn read_more(&mut self, keep: u64) -> io::Result<bool> {
        let drop = usize::try_from(keep.saturating_sub(self.base)).unwrap_or(usize::MAX);
        if drop >= READ_CHUNK && drop <= self.buf.len() {
            self.buf.drain(..drop);
            self.base += drop as u64;
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let r = loop {
            match self.input.read(self.buf.get_mut(len..).unwrap_or_default()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r,
            }
        };
        let n = *r.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        r?;
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// Whether a stream header ("BZh" and a level digit) is at input byte `at`: `Some(level)`.
    fn header_at(&self, at: u64) -> Option<u8> {
        match self.bytes(at, 4)? {
            [b'B', b'Z', b'h', l @ b'1'..=b'9'] => Some(l - b'0'),
            _ => None,
        }
    }

    /// Queues the next piece or marker; false once the scan is done.
    fn scan_step(&mut self) -> bool {
        let fail = |this: &mut Self, m: String| {
            this.pending.push_back(Pending::Fail(m));
            this.scan = Scan::Done;
        };
        match self.scan {
            Scan::Done => false,
            Scan::Header { at, first } => {
                if self.abs_len() < at + 4 && !self.eof {
                    if let Err(e) = self.read_more(at) {
                        fail(self, format!("bzip2: read error: {e}"));
                    }
                    return true;
                }
                if self.abs_len() == at && !first {
                    self.scan = Scan::Done;
                    return true;
                }
                match self.header_at(at) {
                    Some(level) => {
                        self.streams += 1;
                        self.blocks = 0;
                        self.scan = Scan::Stream {
                            level,
                            cursor: (at + 4) * 8,
                            search_from: 0,
                        };
                    }
                    None if first => fail(
                        self,
                        "bzip2: no stream header (BZh and a level digit): not a bzip2 file".into(),
                    ),
                    None => fail(
                        self,
                        format!(
                            "bzip2: the data after stream {} (at compressed byte {at}) is not another bzip2 stream",
                            self.streams
                        ),
                    ),
                }
                true
            }
            Scan::Stream {
                level,
                cursor,
                search_from,
            } => {
                let Some(marker) = self.bits(cursor, 48) else {
                    return self.more_or_fail(cursor, "a block marker");
                };
                if marker == EOS_MAGIC {
                    let Some(crc) = self.bits(cursor + 48, 32) else {
                        return self.more_or_fail(cursor, "the stream CRC");
                    };
                    self.pending.push_back(Pending::StreamEnd {
                        crc: crc as u32,
                        stream: self.streams,
                    });
                    self.scan = Scan::Header {
                        at: (cursor + 80).div_ceil(8),
                        first: false,
                    };
                    return true;
                }
                if marker != BLOCK_MAGIC {
                    fail(
                        self,
                        format!(
                            "bzip2 stream {}: no block marker at compressed byte {}: corrupt",
                            self.streams,
                            cursor / 8
                        ),
                    );
                    return true;
                }
                match self.find_boundary(search_from.max(cursor + 80)) {
                    Found::At(end, then_block) => {
                        self.dispatch(level, cursor, end, then_block);
                        self.scan = Scan::Stream {
                            level,
                            cursor: end,
                            search_from: 0,
                        };
                    }
                    Found::NeedMore(resume) => {
                        if (self.abs_len() * 8).saturating_sub(cursor) > max_piece_bits(level) {
                            fail(
                                self,
                                format!(
                                    "bzip2 stream {} block {}: no block or end-of-stream marker within {} compressed bytes of compressed byte {}: corrupt",
                                    self.streams,
                                    self.blocks + 1,
                                    max_piece_bits(level) / 8,
                                    cursor / 8
                                ),
                            );
                            return true;
                        }
                        self.scan = Scan::Stream {
                            level,
                            cursor,
                            search_from: resume,
                        };
                        return self.more_or_fail(cursor, "the end of a block");
                    }
                }
                true
            }
        }
    }

    /// Reads more input for the stream at bit `cursor` (the caller looks again), or, when the
    /// input had already ended, queues the truncation error.
    fn more_or_fail(&mut self, cursor: u64, want: &str) -> bool {
        let m = if self.eof {
            format!(
                "bzip2 stream {}: the input ends (after {} compressed bytes) before {want}: truncated, or followed by data that is not bzip2",
                self.streams,
                self.abs_len()
            )
        } else {
            match self.read_more(cursor / 8) {
                Ok(_) => return true,
                Err(e) => format!("bzip2: read error: {e}"),
            }
        };
        self.pending.push_back(Pending::Fail(m));
        self.scan = Scan::Done;
        true
    }

    /// The first block boundary at or after bit `from`: a block marker, or an end-of-stream marker
    /// after which the input ends or another stream starts (`then_block` tells which).
    fn find_boundary(&self, from: u64) -> Found {
        let start = (from / 8 + 1).saturating_sub(self.base);
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        let Some(rest) = self.buf.get(start..) else {
            return Found::NeedMore(from);
        };
        for (k, w) in rest.windows(2).enumerate() {
            let key = u16::from_be_bytes([w[0], w[1]]);
            if !self.filter.hit(key) {
                continue;
            }
            // The marker would start in the byte before the window.
            let Some(byte) = (self.base + (start + k) as u64).checked_sub(1) else {
                continue;
            };
            for &(want, magic, shift) in &self.filter.keys {
                if want != key {
                    continue;
                }
                let p = byte * 8 + u64::from(shift);
                if p < from {
                    continue;
                }
                let Some(v) = self.bits(p, 48) else {
                    return Found::NeedMore(byte * 8);
                };
                if v != magic {
                    continue;
                }
                if magic == BLOCK_MAGIC {
                    return Found::At(p, true);
                }
                let next = (p + 80).div_ceil(8);
                if self.abs_len() < next + 4 && !self.eof {
                    return Found::NeedMore(byte * 8);
                }
                if (self.eof && self.abs_len() == next) || self.header_at(next).is_some() {
                    return Found::At(p, false);
                }
            }
        }
        Found::NeedMore(from.max(self.abs_len().saturating_sub(2) * 8))
    }

    /// Cuts bits `start..end` (a block) into a stream of its own and hands it to a worker.
    fn dispatch(&mut self, level: u8, start: u64, end: u64, then_block: bool) {
        self.blocks += 1;
        let crc = self.bits(start + 48, 32).unwrap_or(0) as u32;
        let what = format!(
            "bzip2 stream {} block {} (compressed bytes {}..{})",
            self.streams,
            self.blocks,
            start / 8,
            end.div_ceil(8)
        );
        let nbits = end - start;
        let mut w = BitWriter::new(self.spare.pop().unwrap_or_default());
        w.header(level);
        w.copy(&self.buf, start.saturating_sub(self.base * 8), nbits);
        w.trailer(crc);
        let job = Job {
            stream: w.finish(),
            nbits,
            level,
            out: self.spare.pop().unwrap_or_default(),
        };
        let worker = self.worker().and_then(|i| Some((i, self.workers.get(i)?)));
        let src = match worker {
            Some((i, w)) => match w.jobs.send(job) {
                Ok(()) => {
                    self.in_flight += 1;
                    Src::Worker(i)
                }
                // The thread is gone: decode here.
                Err(mpsc::SendError(job)) => Src::Ready(decode(job)),
            },
            None => Src::Ready(decode(job)),
        };
        self.pending.push_back(Pending::Piece(Piece {
            src,
            crc,
            level,
            then_block,
            what,
        }));
    }

    /// The worker for the next piece, started on first use; `None`: decode here.
    fn worker(&mut self) -> Option<usize> {
        if self.threads == 0 {
            return None;
        }
        if self.workers.is_empty() {
            let cap = self.limit();
            for i in 0..self.threads {
                let (jobs, rx) = mpsc::sync_channel::<Job>(cap);
                let (tx, done) = mpsc::sync_channel::<Decoded>(cap);
                let spawned = std::thread::Builder::new()
                    .name(format!("bzip2-{i}"))
                    .spawn(move || {
                        for job in rx.iter() {
                            if tx.send(decode(job)).is_err() {
                                return;
                            }
                        }
                    });
                if spawned.is_err() {
                    break;
                }
                self.workers.push(Worker { jobs, done });
            }
            if self.workers.is_empty() {
                self.threads = 0;
                return None;
            }
        }
        let i = self.next_worker % self.workers.len();
        self.next_worker += 1;
        Some(i)
    }

    fn collect(&mut self, src: Src) -> Decoded {
        match src {
            Src::Ready(d) => d,
            Src::Worker(i) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                match self.workers.get(i).map(|w| w.done.recv()) {
                    Some(Ok(d)) => d,
                    _ => Decoded {
                        stream: Vec::new(),
                        nbits: 0,
                        out: Vec::new(),
                        result: Err("a bzip2 decoding thread died".into()),
                    },
                }
            }
        }
    }

    fn recycle(&mut self, v: Vec<u8>) {
        if self.spare.len() < 2 * self.limit() + 2 && v.capacity() > 0 {
            self.spare.push(v);
        }
    }

    /// Takes the next piece's output, or the error that ends the output.
    fn next_output(&mut self) -> Option<Result<(), String>> {
        while self.pending.len() < self.limit() && self.in_flight < self.limit() {
            if !self.scan_step() {
                break;
            }
        }
        let piece = match self.pending.pop_front()? {
            Pending::Fail(m) => return Some(Err(m)),
            Pending::StreamEnd { crc, stream } => {
                let ours = std::mem::take(&mut self.combined);
                if crc != ours {
                    return Some(Err(format!(
                        "bzip2 stream {stream}: stream CRC mismatch (stored {crc:08x}, blocks give {ours:08x}): corrupt"
                    )));
                }
                return Some(Ok(()));
            }
            Pending::Piece(p) => p,
        };
        let mut d = self.collect(piece.src);
        if let Err(first) = d.result {
            // A chance marker inside the block? Join it with the next piece and try again.
            let next = match self.pending.front() {
                Some(Pending::Piece(_)) if piece.then_block => self.pending.pop_front(),
                _ => None,
            };
            let Some(Pending::Piece(next)) = next else {
                return Some(Err(format!("{}: {first}", piece.what)));
            };
            let e = self.collect(next.src);
            let mut w = BitWriter::new(Vec::new());
            w.header(piece.level);
            w.copy(&d.stream, 32, d.nbits);
            w.copy(&e.stream, 32, e.nbits);
            w.trailer(piece.crc);
            let joined = decode(Job {
                stream: w.finish(),
                nbits: d.nbits + e.nbits,
                level: piece.level,
                out: e.out,
            });
            if joined.result.is_err() {
                return Some(Err(format!("{}: {first}", piece.what)));
            }
            self.recycle(d.out);
            self.recycle(d.stream);
            self.recycle(e.stream);
            d = joined;
        }
        self.combined = self.combined.rotate_left(1) ^ piece.crc;
        let old = std::mem::replace(&mut self.out, d.out);
        self.pos = 0;
        self.recycle(old);
        self.recycle(d.stream);
        Some(Ok(()))
    }
}

enum Found {
    /// A boundary at this bit; true if it is a block marker.
    At(u64, bool),
    /// Nothing up to the end of what was read; search again from this bit.
    NeedMore(u64),
}

impl<R: Read> BufRead for ParBzDecoder<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.out.len() {
            if let Some(m) = &self.failed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, m.clone()));
            }
            match self.next_output() {
                None => return Ok(&[]),
                Some(Ok(())) => {}
                Some(Err(m)) => {
                    self.pending.clear();
                    self.scan = Scan::Done;
                    self.failed = Some(m);
                }
            }
        }
        Ok(self.out.get(self.pos..).unwrap_or_default())
    }

    fn consume(&mut self, amt: usize) {
        self.pos = self.pos.saturating_add(amt).min(self.out.len());
    }
}

impl<R: Read> Read for ParBzDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Ok(n)
    }
}

/// Decodes one block cut into a stream of its own.
fn decode(job: Job) -> Decoded {
    let Job {
        stream,
        nbits,
        level,
        mut out,
    } = job;
    out.clear();
    let result = decode_into(&stream, level, &mut out);
    Decoded {
        stream,
        nbits,
        out,
        result,
    }
}

fn decode_into(stream: &[u8], level: u8, out: &mut Vec<u8>) -> Result<(), String> {
    let max = max_block_output(level);
    out.reserve(usize::from(level) * 100_000 + (64 << 10));
    let mut d = Decompress::new(false);
    loop {
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let input = usize::try_from(in_before)
            .ok()
            .and_then(|i| stream.get(i..))
            .unwrap_or_default();
        match d.decompress_vec(input, out) {
            Ok(Status::StreamEnd) => {
                // The block must end exactly where the next marker was found.
                return if d.total_in() == stream.len() as u64 {
                    Ok(())
                } else {
                    Err("the block ends before the next marker: corrupt".into())
                };
            }
            Ok(Status::MemNeeded) => return Err("out of memory".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("corrupt ({e})")),
        }
        if out.len() == out.capacity() {
            if out.len() >= max {
                return Err("the block decodes to more than bzip2 allows: corrupt".into());
            }
            out.reserve(out.len().clamp(1 << 16, max));
        } else if d.total_in() == in_before && d.total_out() == out_before {
            return Err("the block is incomplete: corrupt".into());
        }
    }
}

/// `n` (≤ 57) bits of `buf` from bit `bit` (most significant first), or `None` past its end.
fn read_bits(buf: &[u8], bit: u64, n: u32) -> Option<u64> {
    if n == 0 {
        return Some(0);
    }
    let first = usize::try_from(bit / 8).ok()?;
    let shift = (bit % 8) as u32;
    let need = (shift + n).div_ceil(8) as usize;
    let bytes = buf.get(first..first.checked_add(need)?)?;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (56 - 8 * i as u32);
    }
    Some((v << shift) >> (64 - n))
}

/// Builds a bzip2 stream bit by bit.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    /// Bits waiting in the low end of `acc` (< 8 between calls).
    n: u32,
}

impl BitWriter {
    fn new(mut out: Vec<u8>) -> Self {
        out.clear();
        BitWriter { out, acc: 0, n: 0 }
    }

    /// Appends the low `bits` (≤ 32) bits of `v`.
    fn push(&mut self, v: u64, bits: u32) {
        if bits == 0 {
            return;
        }
        self.acc = (self.acc << bits) | (v & ((1u64 << bits) - 1));
        self.n += bits;
        while self.n >= 8 {
            self.n -= 8;
            self.out.push((self.acc >> self.n) as u8);
        }
        self.acc &= (1u64 << self.n) - 1;
    }

    fn header(&mut self, level: u8) {
        for b in [b'B', b'Z', b'h', b'0' + level] {
            self.push(u64::from(b), 8);
        }
    }

    /// The end-of-stream marker and, for a one-block stream, the block's CRC as combined CRC.
    fn trailer(&mut self, crc: u32) {
        self.push(EOS_MAGIC >> 16, 32);
        self.push(EOS_MAGIC & 0xffff, 16);
        self.push(u64::from(crc), 32);
    }

    /// Appends `nbits` bits of `src` from bit `from` (bits past `src`'s end read as zeros).
    fn copy(&mut self, src: &[u8], from: u64, nbits: u64) {
        let mut at = from;
        let end = from + nbits;
        if self.n == 0 {
            // Aligned here: whole output bytes straight from (at most) two source bytes each.
            let first = usize::try_from(at / 8).unwrap_or(usize::MAX);
            let shift = (at % 8) as u32;
            let extra = usize::from(shift != 0);
            let avail = src.len().saturating_sub(first).saturating_sub(extra);
            let whole = usize::try_from(nbits / 8).unwrap_or(usize::MAX).min(avail);
            if let Some(s) = src.get(first..first.saturating_add(whole + extra)) {
                if shift == 0 {
                    self.out.extend_from_slice(s);
                } else {
                    self.out.extend(
                        s.windows(2)
                            .map(|w| (w[0] << shift) | (w[1] >> (8 - shift))),
                    );
                }
                at += 8 * whole as u64;
            }
        }
        while at < end {
            let k = (end - at).min(32) as u32;
            let v = read_bits(src, at, k).unwrap_or_else(|| {
                // Partly past the end: what there is, zero-padded.
                (0..u64::from(k)).fold(0, |v, i| (v << 1) | read_bits(src, at + i, 1).unwrap_or(0))
            });
            self.push(v, k);
            at += u64::from(k);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.push(0, pad);
        }
        self.out
    }
}

/// The first test for a marker at any bit offset: for each marker and shift, the two whole bytes
/// it puts at the second and third byte it touches, in a bitmap of 2^16 bits.
struct Filter {
    bitmap: Box<[u64; 1024]>,
    /// (key, marker, shift) for both markers and the 8 shifts.
    keys: [(u16, u64, u8); 16],
}

impl Filter {
    fn new() -> Self {
        let mut bitmap = Box::new([0u64; 1024]);
        let mut keys = [(0u16, 0u64, 0u8); 16];
        for (i, slot) in keys.iter_mut().enumerate() {
            let magic = if i < 8 { BLOCK_MAGIC } else { EOS_MAGIC };
            let shift = (i % 8) as u8;
            // Seven bytes, the marker starting at bit `shift` of the first.
            let word = magic << (8 - shift);
            let key = ((word >> 32) & 0xffff) as u16;
            *slot = (key, magic, shift);
            if let Some(w) = bitmap.get_mut(usize::from(key >> 6)) {
                *w |= 1 << (key & 63);
            }
        }
        // Sort by shift so the first hit in a byte is the earliest bit.
        keys.sort_by_key(|&(_, _, s)| s);
        Filter { bitmap, keys }
    }

    fn hit(&self, key: u16) -> bool {
        self.bitmap
            .get(usize::from(key >> 6))
            .is_some_and(|w| w & (1 << (key & 63)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn compress(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(level));
        e.write_all(data).expect("compress");
        e.finish().expect("compress")
    }

    /// Data that compresses a little, so blocks are many and long.
    fn sample(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 { b'a' } else { (x % 40) as u8 }
            })
            .collect()
    }

    fn par(data: &[u8], threads: usize) -> (Vec<u8>, Option<String>) {
        let mut d = ParBzDecoder::with_threads(io::Cursor::new(data.to_vec()), threads);
        let mut out = Vec::new();
        let err = d.read_to_end(&mut out).err().map(|e| e.to_string());
        (out, err)
    }

    #[test]
    fn read_bits_and_bit_writer_agree() {
        let src: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for from in 0..40u64 {
            for nbits in [0u64, 1, 7, 8, 9, 31, 32, 33, 100, 300] {
                for lead in 0..9u32 {
                    let mut w = BitWriter::new(Vec::new());
                    w.push(0x1ff, lead);
                    w.copy(&src, from, nbits);
                    let got = w.finish();
                    for i in 0..nbits {
                        assert_eq!(
                            read_bits(&got, u64::from(lead) + i, 1),
                            read_bits(&src, from + i, 1),
                            "from {from} nbits {nbits} lead {lead} bit {i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn many_blocks_and_streams_decode_like_the_serial_decoder() {
        let data = sample(900_000);
        let mut multi = compress(&data[..400_000], 1);
        multi.extend(compress(&data[400_000..400_001], 9));
        multi.extend(compress(b"", 9));
        multi.extend(compress(&data[400_001..], 2));
        for threads in [0, 1, 3] {
            let (out, err) = par(&multi, threads);
            assert_eq!(err, None, "threads {threads}");
            assert!(out == data, "threads {threads}: output differs");
        }
    }

    #[test]
    fn a_corrupt_block_keeps_the_blocks_before_it() {
        let data = sample(600_000);
        let mut z = compress(&data, 1);
        let whole = z.len();
        // Flip a bit in the middle: in the third or fourth of six blocks.
        z[whole / 2] ^= 0x10;
        for threads in [0, 2] {
            let (out, err) = par(&z, threads);
            let err = err.expect("a corrupt block must fail");
            assert!(err.contains("bzip2 stream 1 block"), "{err}");
            assert!(out.len() >= 200_000, "{}", out.len());
            assert!(data.starts_with(&out), "only good blocks come out");
        }
    }

    #[test]
    fn truncation_and_trailing_garbage_fail_after_the_good_blocks() {
        let data = sample(450_000);
        let z = compress(&data, 1);
        let (out, err) = par(&z[..z.len() - 5000], 2);
        assert!(err.expect("truncated").contains("truncated"));
        assert!(out.len() >= 300_000 && data.starts_with(&out));
        let mut g = z.clone();
        g.extend_from_slice(b"garbage after the stream");
        let (out, err) = par(&g, 2);
        assert!(err.is_some(), "trailing garbage must fail");
        assert!(data.starts_with(&out));
    }

    #[test]
    fn a_block_cut_at_a_chance_marker_is_joined_with_the_next_piece() {
        // A marker pattern inside a block's bits cannot be produced on purpose, so cut a one-block
        // stream in two by hand and queue both pieces as the scan would.
        let data = sample(250_000);
        let z = compress(&data, 9);
        for threads in [0, 2] {
            let mut d = ParBzDecoder::with_threads(io::Cursor::new(z.clone()), threads);
            while d.read_more(0).expect("read") {}
            let Found::At(eos, false) = d.find_boundary(32 + 80) else {
                panic!("no end-of-stream marker found");
            };
            let crc = d.bits(eos + 48, 32).expect("crc") as u32;
            let mid = 32 + (eos - 32) / 2;
            d.streams = 1;
            d.dispatch(9, 32, mid, true);
            d.dispatch(9, mid, eos, false);
            d.pending.push_back(Pending::StreamEnd { crc, stream: 1 });
            d.scan = Scan::Done;
            let mut out = Vec::new();
            d.read_to_end(&mut out).expect("joined");
            assert!(out == data, "threads {threads}");
        }
    }

    #[test]
    fn a_bad_stream_crc_fails_after_the_good_blocks() {
        // Found by the fuzzer holding this decoder to the serial one (fuzz/fuzz_targets/mrt.rs).
        let data = sample(150_000);
        let mut z = compress(&data, 1);
        let mut d = ParBzDecoder::with_threads(io::Cursor::new(z.clone()), 0);
        while d.read_more(0).expect("read") {}
        // Boundaries up to the end-of-stream marker, then flip a bit of the stream CRC after it.
        let mut last = 32;
        loop {
            match d.find_boundary(last + 80) {
                Found::At(next, true) => last = next,
                Found::At(eos, false) => {
                    last = eos;
                    break;
                }
                Found::NeedMore(_) => panic!("no end-of-stream marker found"),
            }
        }
        let bit = last + 48 + 3;
        z[(bit / 8) as usize] ^= 0x80 >> (bit % 8);
        for threads in [0, 2] {
            let (out, err) = par(&z, threads);
            assert!(out == data, "every block is good");
            assert!(err.expect("must fail").contains("stream CRC mismatch"));
        }
    }
}
