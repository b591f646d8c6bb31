//! The ingest pipeline: verified signed batches → bounded buffer → batched flush → ack.
//!
//! Backpressure: the buffer is bounded in *records* (a semaphore with `capacity_records` permits).
//! A full buffer makes [`Ingest::submit`] wait; the agent link awaits it before reading the next
//! message, so the pressure reaches the agent, which keeps its records in its disk spool. Nothing is
//! dropped here, and nothing is acknowledged before its transaction has committed.
//!
//! The flusher is a dedicated OS thread, not a tokio task: SQLite calls block, and a long flush
//! must not stall the runtime's workers.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::{BatchOutcome, Store, SystemScope};

/// One signed batch from an agent, already verified by the link. `agent_id`, `org` and `team` come
/// from the agent's certificate, `received_ms` from the collector's clock: never from the batch.
#[derive(Clone, Debug, Default)]
pub struct IngestBatch {
    pub agent_id: String,
    pub org: String,
    /// Empty for an org-wide agent.
    pub team: String,
    /// Ascending by `seq`.
    pub records: Vec<foureyes_proto::v1::Record>,
    /// The signed `RecordBatch` bytes, kept as evidence.
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
    pub key_id: Vec<u8>,
    pub received_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestConfig {
    /// Records the buffer holds before `submit` waits.
    pub capacity_records: usize,
    /// Records one flush transaction takes at most (whole batches; one oversize batch goes alone).
    pub max_batch_records: usize,
    /// How long the first queued batch waits for company before a flush starts anyway.
    pub max_delay: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            capacity_records: 100_000,
            max_batch_records: 10_000,
            // A commit costs tens of microseconds in WAL/NORMAL; a few milliseconds of grouping
            // keeps per-agent round trips short while many agents still share a transaction.
            max_delay: Duration::from_millis(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("ingest pipeline stopped")]
    Closed,
    /// The flush transaction failed and was rolled back; the agent must resend.
    #[error("store write failed: {0}")]
    Store(String),
    #[error("agent {0:?} is not in the store")]
    UnknownAgent(String),
}

/// A snapshot of the pipeline's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestMetrics {
    /// Records waiting in the buffer.
    pub queue_depth_records: usize,
    /// Batches waiting in the buffer.
    pub queue_depth_batches: usize,
    /// Committed flush transactions.
    pub flushes: u64,
    /// Batches acknowledged after a commit (including pure replays).
    pub flushed_batches: u64,
    /// Results and gap records stored.
    pub rows: u64,
    /// Records skipped because the agent's watermark already covered them.
    pub duplicates: u64,
    /// Flush transactions that failed (their submits got an error).
    pub failed_flushes: u64,
    /// Wall clock (ms since the epoch) of the last committed flush; 0 before the first.
    pub last_flush_at_ms: i64,
    /// Duration of the last committed flush, in microseconds.
    pub last_flush_us: u64,
    /// Committed flushes by duration: `flush_buckets[i]` counts those that took at most
    /// `FLUSH_BUCKETS_US[i]` (cumulative, as Prometheus histograms are); the count is `flushes`.
    pub flush_buckets: [u64; FLUSH_BUCKETS_US.len()],
    /// Sum of the committed flushes' durations, in microseconds.
    pub flush_us_sum: u64,
}

/// Upper bounds of the flush-duration histogram, in microseconds (1 ms to 5 s). Why a histogram
/// and not only the last flush: an operator alerting on ingest latency needs the slow tail
/// (p99 over a scrape interval), which one sample every scrape cannot show.
pub const FLUSH_BUCKETS_US: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000,
];

#[derive(Default)]
struct Counters {
    flushes: AtomicU64,
    flushed_batches: AtomicU64,
    rows: AtomicU64,
    duplicates: AtomicU64,
    failed_flushes: AtomicU64,
    last_flush_at_ms: AtomicI64,
    last_flush_us: AtomicU64,
    /// Per bucket of `FLUSH_BUCKETS_US`, the flushes that fell in it (not cumulative here).
    flush_buckets: [AtomicU64; FLUSH_BUCKETS_US.len()],
    flush_us_sum: AtomicU64,
}

/// What the flusher sends a submitter: the outcome, and the spent batch, so that the submitter's
/// thread frees its records rather than the flusher (freeing a flush's 10k results costs the
/// flusher several percent of its time, and it is the pipeline's bottleneck).
struct Reply {
    result: Result<u64, IngestError>,
    _spent: IngestBatch,
}

struct Pending {
    batch: IngestBatch,
    done: oneshot::Sender<Reply>,
    /// Released once the batch is committed or failed: that is what frees room. The batch itself then
    /// goes back to its submitter (see [`Reply`]), which frees it as it takes the outcome.
    _room: OwnedSemaphorePermit,
    queued_at: Instant,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Pending>,
    records: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    room: Arc<Semaphore>,
    capacity: u32,
    counters: Counters,
    /// Poked after every committed flush. `notify_one` never blocks, so followers (the stream hub)
    /// cannot slow the flusher down; they read what was committed from the store themselves.
    committed: Arc<tokio::sync::Notify>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }
}

/// Closes the pipeline when the last [`Ingest`] handle goes away; the flusher then drains what is
/// queued and exits.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Handle to the pipeline. Cheap to clone; the flusher stops after the last clone is dropped.
#[derive(Clone)]
pub struct Ingest {
    shared: Arc<Shared>,
    _close: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl Ingest {
    /// Starts the flusher thread. Does not need a tokio runtime; `submit` does.
    pub fn start(store: Arc<dyn Store>, cfg: IngestConfig) -> (Ingest, JoinHandle<()>) {
        let capacity = u32::try_from(cfg.capacity_records.max(1)).unwrap_or(u32::MAX);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            room: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            counters: Counters::default(),
            committed: Arc::new(tokio::sync::Notify::new()),
        });
        let flusher = Flusher {
            shared: shared.clone(),
            store,
            max_records: cfg.max_batch_records.max(1),
            max_delay: cfg.max_delay,
        };
        let handle = std::thread::Builder::new()
            .name("foureyes-ingest".into())
            .spawn(move || flusher.run());
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                // Without a flusher nothing can be acknowledged; fail submits loudly instead.
                tracing::error!(error = %e, "cannot start the ingest thread");
                shared.close();
                shared.room.close();
                std::thread::spawn(|| {})
            }
        };
        let ingest = Ingest {
            _close: Arc::new(CloseOnDrop(shared.clone())),
            shared,
        };
        (ingest, handle)
    }

    /// Waits while the ring buffer is full (backpressure reaches the agent, which keeps spooling),
    /// and resolves once the batch is committed: returns the agent's watermark after the commit
    /// (highest seq stored). A batch already stored (replay) resolves with the watermark without
    /// storing anything twice.
    ///
    /// Cancel-safe in the sense that matters: dropping the future never loses data; a batch that
    /// was queued may still commit, and its resend is then a replay.
    pub async fn submit(&self, batch: IngestBatch) -> Result<u64, IngestError> {
        let want = u32::try_from(batch.records.len())
            .unwrap_or(u32::MAX)
            .clamp(1, self.shared.capacity);
        let room = self
            .shared
            .room
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| IngestError::Closed)?;
        let (done, rx) = oneshot::channel();
        {
            let mut q = self.shared.lock();
            if q.closed {
                return Err(IngestError::Closed);
            }
            q.records += batch.records.len();
            q.items.push_back(Pending {
                batch,
                done,
                _room: room,
                queued_at: Instant::now(),
            });
        }
        self.shared.wake.notify_one();
        rx.await.map_err(|_| IngestError::Closed)?.result
    }

    /// Notified after each committed flush (a stored permit: a follower that was busy still sees
    /// the latest commit).
    pub fn committed(&self) -> Arc<tokio::sync::Notify> {
        self.shared.committed.clone()
    }

    pub fn metrics(&self) -> IngestMetrics {
        let (records, batches) = {
            let q = self.shared.lock();
            (q.records, q.items.len())
        };
        let c = &self.shared.counters;
        IngestMetrics {
            queue_depth_records: records,
            queue_depth_batches: batches,
            flushes: c.flushes.load(Ordering::Relaxed),
            flushed_batches: c.flushed_batches.load(Ordering::Relaxed),
            rows: c.rows.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            failed_flushes: c.failed_flushes.load(Ordering::Relaxed),
            last_flush_at_ms: c.last_flush_at_ms.load(Ordering::Relaxed),
            last_flush_us: c.last_flush_us.load(Ordering::Relaxed),
            flush_buckets: {
                let mut acc = 0;
                std::array::from_fn(|i| {
                    acc += c
                        .flush_buckets
                        .get(i)
                        .map_or(0, |b| b.load(Ordering::Relaxed));
                    acc
                })
            },
            flush_us_sum: c.flush_us_sum.load(Ordering::Relaxed),
        }
    }
}

struct Flusher {
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    max_records: usize,
    max_delay: Duration,
}

impl Flusher {
    fn run(self) {
        let sys = SystemScope::collector_internal();
        while let Some(group) = self.next_group() {
            self.flush(&sys, group);
        }
        self.shared.room.close();
        tracing::debug!("ingest flusher stopped");
    }

    /// Blocks until a group is due: `max_records` queued, or the oldest batch has waited
    /// `max_delay`, or the pipeline is closing. `None` once closed and drained.
    fn next_group(&self) -> Option<Vec<Pending>> {
        let mut q = self.shared.lock();
        loop {
            if q.items.is_empty() {
                if q.closed {
                    return None;
                }
                q = self.shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let due = q
                .items
                .front()
                .map(|p| p.queued_at + self.max_delay)
                .unwrap_or_else(Instant::now);
            let now = Instant::now();
            if q.records >= self.max_records || q.closed || now >= due {
                break;
            }
            q = self
                .shared
                .wake
                .wait_timeout(q, due - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let mut group = Vec::new();
        let mut taken = 0;
        while let Some(front) = q.items.front() {
            let n = front.batch.records.len();
            if !group.is_empty() && taken + n > self.max_records {
                break;
            }
            taken += n;
            if let Some(p) = q.items.pop_front() {
                group.push(p);
            }
        }
        q.records -= taken;
        Some(group)
    }

    fn flush(&self, sys: &SystemScope, group: Vec<Pending>) {
        let started = Instant::now();
        // The ingest path's spans (exported over OTLP when configured): the flush, its commit,
        // and the acknowledgements.
        let flush = tracing::info_span!(
            "ingest.flush",
            batches = group.len(),
            records = group.iter().map(|p| p.batch.records.len()).sum::<usize>(),
            rows = tracing::field::Empty,
        );
        let _flush = flush.enter();
        let (batches, waiters): (Vec<IngestBatch>, Vec<_>) = group
            .into_iter()
            .map(|p| (p.batch, (p.done, p._room)))
            .unzip();
        let c = &self.shared.counters;
        let written = tracing::info_span!("ingest.store_commit")
            .in_scope(|| self.store.write_batches(sys, &batches));
        match written {
            Ok(outcomes) => {
                let us = started.elapsed().as_micros() as u64;
                c.flushes.fetch_add(1, Ordering::Relaxed);
                c.last_flush_us.store(us, Ordering::Relaxed);
                c.flush_us_sum.fetch_add(us, Ordering::Relaxed);
                // Slower than the last bound: only in the count (the `+Inf` bucket).
                if let Some(b) = FLUSH_BUCKETS_US
                    .iter()
                    .position(|le| us <= *le)
                    .and_then(|i| c.flush_buckets.get(i))
                {
                    b.fetch_add(1, Ordering::Relaxed);
                }
                c.last_flush_at_ms.store(crate::now_ms(), Ordering::Relaxed);
                let mut rows_total = 0;
                let n = batches.len();
                let _ack = tracing::info_span!("ingest.ack", batches = n).entered();
                for ((b, (done, room)), outcome) in batches.into_iter().zip(waiters).zip(outcomes) {
                    let reply = match outcome {
                        BatchOutcome::Stored {
                            watermark,
                            rows,
                            duplicates,
                        } => {
                            c.flushed_batches.fetch_add(1, Ordering::Relaxed);
                            c.rows.fetch_add(rows, Ordering::Relaxed);
                            c.duplicates.fetch_add(duplicates, Ordering::Relaxed);
                            rows_total += rows;
                            Ok(watermark)
                        }
                        BatchOutcome::UnknownAgent => {
                            Err(IngestError::UnknownAgent(b.agent_id.clone()))
                        }
                    };
                    drop(room);
                    // The submitter may have gone away (agent disconnected): its resend is a replay.
                    let _ = done.send(Reply {
                        result: reply,
                        _spent: b,
                    });
                }
                self.shared.committed.notify_one();
                flush.record("rows", rows_total);
                tracing::debug!(batches = n, rows = rows_total, us, "ingest flush committed");
            }
            Err(e) => {
                c.failed_flushes.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, batches = batches.len(), "ingest flush failed; nothing acknowledged");
                let msg = e.to_string();
                for (b, (done, room)) in batches.into_iter().zip(waiters) {
                    drop(room);
                    let _ = done.send(Reply {
                        result: Err(IngestError::Store(msg.clone())),
                        _spent: b,
                    });
                }
            }
        }
    }
}
