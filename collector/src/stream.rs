//! The live stream behind `/api/v1/stream` and the post-commit tap behind `/metrics`.
//!
//! Design: a bounded fan-out. The ingest flusher only pokes a `Notify` after each commit (it never
//! waits on the stream). One hub task then reads the committed rows back from the store after its
//! [`StreamCursor`] (results and route events have time-ordered keys that only grow), updates the
//! per-test gauges, and offers each row to every registered client whose tenant and filter match,
//! with `try_send` into the client's bounded queue. A full queue drops that client: its stream ends
//! with an `event: dropped`, a counter increments, and nobody else waits.
//!
//! Reading back instead of forwarding the flusher's records is deliberate: every event then carries
//! the store key of its row as its SSE id, live events and a `Last-Event-ID` replay come from the
//! same rows in the same order, and the flusher hands nothing over. The cost is one extra read of
//! each committed row; the alert engine follows the same commits and takes the hub's pages
//! ([`Hub::shared_page_after`]) rather than reading the rows a second time.
//!
//! Correlations and alert transitions take the same path: the correlator and the alert engine save
//! them, then only wake the hub ([`Hub::publish_correlation`], [`Hub::publish_alert`]), which reads
//! them back like any row. A correlation is saved in place as it grows and gets its verdict, but
//! each save gives it a new change sequence (`StreamCursor::corr_key`): every change is a new event
//! with a new id, and a resume sends each record whose latest change the client missed once, in
//! its newest state (two changes while away arrive as one). A resume reads at most `[stream]
//! max_replay` rows ([`replay`]); past that it ends with a [`Reset`] (`event: reset`) that names
//! the skipped range and jumps to the store's head, so a gap is announced rather than silent.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use foureyes_proto::v1 as pb;
use foureyes_store::{Scope, StreamCursor, StreamItem, StreamPage, StreamRow, SystemScope, Tenant};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::state::Collector;

/// Rows a resuming client gets from the store before it goes live (default of `[stream]
/// max_replay`).
pub const MAX_REPLAY: usize = 10_000;
/// Rows read per store call during a replay.
const REPLAY_PAGE: usize = 1_000;
/// Rows the hub reads per store call.
const READ_PAGE: usize = 5_000;
/// Tests tracked for the per-test gauges; beyond this, new tests are not added (the gauges are a
/// health view, not storage).
const MAX_GAUGES: usize = 50_000;
/// Pages kept for the alert engine, at most; when it falls further behind, it reads the store.
const SHARED_PAGES: usize = 16;

/// What a client asked for.
#[derive(Clone, Debug)]
pub struct StreamFilter {
    pub tenant: Tenant,
    pub results: bool,
    pub route_events: bool,
    pub correlations: bool,
    /// Alert transitions (`alert` events).
    pub alerts: bool,
    pub test_id: Option<String>,
    pub agent_id: Option<String>,
}

/// One SSE event as the hub hands it to clients.
#[derive(Clone, Debug)]
pub struct Event {
    /// `result`, `route_event`, `correlation` or `alert`.
    pub name: &'static str,
    /// The stream position after this event (its SSE id).
    pub id: StreamCursor,
    /// Canonical proto3 JSON of the message.
    pub data: String,
    /// The row's key in its kind (see [`StreamRow::key`]): a client that replayed up to a position
    /// skips live rows it already has.
    pub key: i64,
}

/// The same visibility rule as the store's scope filter: the org, and the team if the credential
/// is narrowed to one.
pub fn visible(t: &Tenant, org: &str, team: &str) -> bool {
    t.org == org && t.team.as_deref().is_none_or(|x| x == team)
}

impl StreamFilter {
    pub fn wants_row(&self, row: &StreamRow) -> bool {
        if !visible(&self.tenant, &row.org, &row.team) {
            return false;
        }
        match &row.item {
            StreamItem::Result(r) => {
                self.results
                    && self.test_id.as_ref().is_none_or(|t| *t == r.test_id)
                    && self.agent_id.as_ref().is_none_or(|a| *a == r.agent_id)
            }
            StreamItem::RouteEvent(e) => {
                // Route events belong to no test: a test filter leaves them out.
                self.route_events
                    && self.test_id.is_none()
                    && self.agent_id.as_ref().is_none_or(|a| *a == e.agent_id)
            }
            StreamItem::Correlation(c) => self.wants_correlation(c),
            StreamItem::Alert(t) => self.wants_alert(t),
        }
    }

    /// Alert transitions belong to no agent; a test filter keeps those whose subject is the test.
    pub fn wants_alert(&self, t: &pb::AlertTransition) -> bool {
        self.alerts
            && visible(&self.tenant, &t.org, &t.team)
            && self.agent_id.is_none()
            && self
                .test_id
                .as_ref()
                .is_none_or(|id| t.subject == *id || t.subject.starts_with(&format!("{id}/")))
    }

    pub fn wants_correlation(&self, c: &pb::Correlation) -> bool {
        self.correlations
            && visible(&self.tenant, &c.org, &c.team)
            && self
                .test_id
                .as_ref()
                .is_none_or(|t| c.tests.iter().any(|x| x.test_id == *t))
            && self.agent_id.as_ref().is_none_or(|a| *a == c.listener_id)
    }
}

/// The row as an event, with `id` the position after it.
pub fn row_event(row: &StreamRow, id: StreamCursor) -> Option<Event> {
    let (name, data) = match &row.item {
        StreamItem::Result(r) => ("result", serde_json::to_string(r)),
        StreamItem::RouteEvent(e) => ("route_event", serde_json::to_string(e)),
        StreamItem::Correlation(c) => ("correlation", serde_json::to_string(c)),
        StreamItem::Alert(t) => ("alert", serde_json::to_string(t)),
    };
    Some(Event {
        name,
        id,
        data: data.ok()?,
        key: row.key,
    })
}

/// What a `Last-Event-ID` resume sends before going live.
#[derive(Debug)]
pub struct Replay {
    pub events: Vec<Event>,
    /// Where the live part continues: it skips rows at or before this position (replayed, or in
    /// the gap a reset announced).
    pub pos: StreamCursor,
    /// Set when the replay hit its cap.
    pub reset: Option<Reset>,
}

/// A replay stopped at its cap: the rows after `after` up to and including `resume_from` are not
/// sent; live events continue after `resume_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    pub after: StreamCursor,
    pub resume_from: StreamCursor,
    /// Rows read (the tenant's, before the kinds/test/agent filter) before the replay stopped.
    pub replayed_rows: usize,
}

impl Reset {
    /// `event: reset` data: what was skipped, for a client that wants to fetch it over the API.
    pub fn data(&self) -> String {
        serde_json::json!({
            "reason": "replay_limit",
            "replayedRows": self.replayed_rows,
            "after": self.after.encode(),
            "resumeFrom": self.resume_from.encode(),
            "message": "replay stopped at its limit: rows stored after `after` up to `resumeFrom` are not sent; read them with /api/v1/results, /api/v1/route-events, /api/v1/correlations and /api/v1/alerts (from the time of the last event you have), live events follow",
        })
        .to_string()
    }
}

/// Reads the rows after `from` that `filter` wants, at most `max` rows of the tenant's in all.
/// When more are left, the replay stops with a [`Reset`] that jumps to the store's head: the
/// client is told of the gap instead of silently missing it. `from` should have been through
/// [`Hub::known`] before the client subscribed.
pub fn replay(
    c: &Collector,
    scope: &Scope,
    filter: &StreamFilter,
    from: StreamCursor,
    max: usize,
) -> Result<Replay, foureyes_store::StoreError> {
    let max = max.max(1);
    let from = c.stream.known(from);
    let mut out = Replay {
        events: Vec::new(),
        pos: from,
        reset: None,
    };
    let mut scanned = 0;
    loop {
        let limit = REPLAY_PAGE.min(max - scanned).max(1);
        let page = c.store.stream_rows(scope, out.pos, limit)?;
        let mut at = out.pos;
        for row in &page.rows {
            at.advance(row);
            if filter.wants_row(row)
                && let Some(ev) = row_event(row, at)
            {
                out.events.push(ev);
            }
        }
        scanned += page.rows.len();
        out.pos = page.last;
        if !page.more {
            return Ok(out);
        }
        if scanned >= max {
            // Subscribed before the replay began, so every row after the head arrives live.
            let head = c.store.stream_head(&SystemScope::collector_internal())?;
            let resume_from = head.max(out.pos);
            out.reset = Some(Reset {
                after: out.pos,
                resume_from,
                replayed_rows: scanned,
            });
            out.pos = resume_from;
            return Ok(out);
        }
    }
}

struct Client {
    filter: StreamFilter,
    tx: mpsc::Sender<Arc<Event>>,
    dropped: Arc<AtomicBool>,
}

/// The receiving end a client's SSE response reads.
pub struct Subscription {
    pub rx: mpsc::Receiver<Arc<Event>>,
    /// Set when the hub dropped this client for being slow.
    pub dropped: Arc<AtomicBool>,
}

/// Latest figures of one test, for the per-test gauges.
#[derive(Clone, Debug, Default)]
pub struct TestGauge {
    pub latency_ms: f64,
    pub loss: f64,
    pub received_ms: i64,
    pub results: u64,
}

#[derive(Default)]
pub struct HubCounters {
    pub events: AtomicU64,
    pub dropped_clients: AtomicU64,
    /// Stays 0 now that the hub reads correlations back from the store (nothing is queued to
    /// drop); kept so the exported series does not vanish from dashboards.
    pub dropped_correlations: AtomicU64,
    pub correlations_open: AtomicI64,
    pub correlations_pending: AtomicI64,
    /// Listener resync snapshots applied and discarded, and the route changes they found (kept
    /// by the correlator, which reads every stored route event).
    pub route_resyncs_applied: AtomicU64,
    pub route_resyncs_discarded: AtomicU64,
    pub route_resync_changes: AtomicU64,
    /// Session events listener resyncs stored because the stored state disagreed: a missed
    /// session_down, a missed session_up, a peer the listener no longer has.
    pub session_resyncs_down: AtomicU64,
    pub session_resyncs_up: AtomicU64,
    pub session_resyncs_gone: AtomicU64,
}

pub struct Hub {
    clients: Mutex<Vec<Client>>,
    client_buffer: usize,
    /// Poked after a correlation or alert transition was saved: the hub reads it back.
    wake: Notify,
    gauges: Mutex<Gauges>,
    position: Mutex<StreamCursor>,
    /// The pages the hub read (with the cursor each was read from), for the alert engine: it
    /// follows the same commits, so each committed row is read from SQLite and decoded once.
    shared: Mutex<VecDeque<(StreamCursor, Arc<StreamPage>)>>,
    pub counters: HubCounters,
}

/// Latest figures per test, keyed org → test id so that a result of a known test is looked up
/// with the row's own strings (no key is built per result).
#[derive(Default)]
struct Gauges {
    by_org: HashMap<String, HashMap<String, TestGauge>>,
    len: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub fn new(client_buffer: usize) -> Self {
        Self {
            clients: Mutex::new(Vec::new()),
            client_buffer: client_buffer.max(1),
            wake: Notify::new(),
            gauges: Mutex::new(Gauges::default()),
            position: Mutex::new(StreamCursor::default()),
            shared: Mutex::new(VecDeque::new()),
            counters: HubCounters::default(),
        }
    }

    /// Registers a client. Rows committed after this call reach it live.
    pub fn subscribe(&self, filter: StreamFilter) -> Subscription {
        let (tx, rx) = mpsc::channel(self.client_buffer);
        let dropped = Arc::new(AtomicBool::new(false));
        lock(&self.clients).push(Client {
            filter,
            tx,
            dropped: dropped.clone(),
        });
        Subscription { rx, dropped }
    }

    /// Clients still connected (those that hung up are forgotten here too, not only on the next
    /// event they would have got).
    pub fn client_count(&self) -> usize {
        let mut clients = lock(&self.clients);
        clients.retain(|c| !c.tx.is_closed());
        clients.len()
    }

    pub fn position(&self) -> StreamCursor {
        *lock(&self.position)
    }

    /// `from` with the kinds it has no position for (an `s1.` id knows none for correlations
    /// and alerts) set to where the hub's fan-out is: those kinds start live, as they did when
    /// the id was handed out. Called before subscribing, so a row the hub hands out in between
    /// is replayed from the store rather than missed.
    pub fn known(&self, from: StreamCursor) -> StreamCursor {
        let at = self.position();
        StreamCursor {
            corr_key: if from.corr_key < 0 {
                at.corr_key
            } else {
                from.corr_key
            },
            alert_key: if from.alert_key < 0 {
                at.alert_key
            } else {
                from.alert_key
            },
            ..from
        }
    }

    pub fn gauges(&self) -> Vec<((String, String), TestGauge)> {
        let mut v: Vec<_> = lock(&self.gauges)
            .by_org
            .iter()
            .flat_map(|(org, tests)| {
                tests
                    .iter()
                    .map(|(test, g)| ((org.clone(), test.clone()), g.clone()))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Called by the correlator after it saved a record. Never waits: the hub reads the saved
    /// change back (with its sequence), so live and replayed correlations are the same events.
    pub fn publish_correlation(&self, _c: &pb::Correlation) {
        self.wake.notify_one();
    }

    /// Called by the alert engine after it saved a transition. Never waits (the hub reads it back).
    pub fn publish_alert(&self, _t: &pb::AlertTransition) {
        self.wake.notify_one();
    }

    /// Offers an event to every matching client; a client whose queue is full is dropped.
    fn fan_out(&self, event: Event, wants: impl Fn(&StreamFilter) -> bool) {
        let event = Arc::new(event);
        let mut clients = lock(&self.clients);
        clients.retain(|c| {
            if c.tx.is_closed() {
                return false;
            }
            if !wants(&c.filter) {
                return true;
            }
            match c.tx.try_send(event.clone()) {
                Ok(()) => {
                    self.counters.events.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    c.dropped.store(true, Ordering::Relaxed);
                    self.counters
                        .dropped_clients
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(org = %c.filter.tenant.org, "stream client too slow, dropped");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    fn tap(&self, row: &StreamRow) {
        let StreamItem::Result(r) = &row.item else {
            return;
        };
        let mut g = lock(&self.gauges);
        let Gauges { by_org, len } = &mut *g;
        let e = match by_org
            .get_mut(&row.org)
            .and_then(|tests| tests.get_mut(&r.test_id))
        {
            Some(e) => e,
            None if *len >= MAX_GAUGES => return,
            None => {
                *len += 1;
                by_org
                    .entry(row.org.clone())
                    .or_default()
                    .entry(r.test_id.clone())
                    .or_default()
            }
        };
        e.latency_ms = r.latency_ms;
        e.loss = r.loss;
        e.received_ms = r
            .received_at
            .as_ref()
            .map(foureyes_proto::timestamp_ms)
            .unwrap_or(0);
        e.results += 1;
    }

    /// Hands a committed row to the clients that want it. The JSON is built only when one does:
    /// with no client interested (the usual case under load) a row costs a filter check.
    fn offer_row(&self, row: &StreamRow, pos: StreamCursor) {
        if !lock(&self.clients).iter().any(|c| c.filter.wants_row(row)) {
            return;
        }
        if let Some(ev) = row_event(row, pos) {
            self.fan_out(ev, |f| f.wants_row(row));
        }
    }

    /// Reads everything committed after the hub's position and hands it out.
    fn catch_up(&self, c: &Collector, sys: &Scope) {
        // The taps' share of the ingest path, exported over OTLP when configured.
        let span = tracing::info_span!("ingest.taps", rows = tracing::field::Empty);
        let _span = span.enter();
        let mut rows = 0;
        loop {
            let from = self.position();
            let page = match c.store.stream_rows(sys, from, READ_PAGE) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    tracing::warn!(error = %e, "stream: cannot read committed rows");
                    return;
                }
            };
            let mut pos = from;
            for row in &page.rows {
                pos.advance(row);
                self.tap(row);
                self.offer_row(row, pos);
            }
            *lock(&self.position) = page.last;
            rows += page.rows.len();
            let more = page.more;
            self.share(from, page);
            if !more {
                span.record("rows", rows);
                return;
            }
        }
    }

    /// Keeps a page read from `from` for the alert engine, dropping the oldest beyond the bound.
    fn share(&self, from: StreamCursor, page: Arc<StreamPage>) {
        if page.rows.is_empty() {
            return;
        }
        let mut q = lock(&self.shared);
        if q.len() >= SHARED_PAGES {
            q.pop_front();
        }
        q.push_back((from, page));
    }

    /// The oldest page the hub read that holds rows after `after` and leaves none out between
    /// `after` and its end (it was read from `after` or earlier), if it still holds one. Pages
    /// wholly before `after` are dropped. The caller skips the page's rows at or before `after`:
    /// a page holds every row committed between its start and its end, as both keys only grow.
    /// `None` means "read the store yourself", which is always correct, only slower.
    pub fn shared_page_after(&self, after: StreamCursor) -> Option<Arc<StreamPage>> {
        let mut q = lock(&self.shared);
        while let Some((start, page)) = q.pop_front() {
            if after.covers(&page.last) {
                continue;
            }
            if after.covers(&start) {
                return Some(page);
            }
            // Rows between `after` and this page's start are not here: keep it for later.
            q.push_front((start, page));
            return None;
        }
        None
    }

    /// Whether a page is waiting for the alert engine.
    pub fn has_shared_page(&self) -> bool {
        !lock(&self.shared).is_empty()
    }
}

/// Runs the hub until shutdown.
pub fn spawn(c: Arc<Collector>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let sys = SystemScope::collector_internal();
        let head = c.store.stream_head(&sys).unwrap_or_default();
        *lock(&c.stream.position) = head;
        let sys = Scope::System(sys);
        let committed = c.ingest.committed();
        // Rows written by another process (the admin CLI) have no flush to announce them.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = committed.notified() => {}
                _ = tick.tick() => {}
                _ = c.stream.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            // SQLite reads block: keep them off the async workers.
            let c2 = c.clone();
            let sys2 = sys.clone();
            let _ = tokio::task::spawn_blocking(move || c2.stream.catch_up(&c2, &sys2)).await;
            // The alert engine follows the same commits (one `Notify` wakes one waiter).
            c.alerts.poke();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(org: &str, team: Option<&str>) -> Tenant {
        Tenant {
            org: org.into(),
            team: team.map(Into::into),
        }
    }

    fn filter(t: Tenant) -> StreamFilter {
        StreamFilter {
            tenant: t,
            results: true,
            route_events: true,
            correlations: true,
            alerts: true,
            test_id: None,
            agent_id: None,
        }
    }

    fn result_row(org: &str, team: &str, test: &str) -> StreamRow {
        StreamRow {
            key: 1,
            org: org.into(),
            team: team.into(),
            item: StreamItem::Result(Box::new(pb::ProbeResult {
                test_id: test.into(),
                agent_id: "n-1".into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn rows_of_another_tenant_or_team_are_never_wanted() {
        let row = result_row("acme", "noc", "t1");
        assert!(filter(tenant("acme", None)).wants_row(&row));
        assert!(filter(tenant("acme", Some("noc"))).wants_row(&row));
        assert!(!filter(tenant("acme", Some("ops"))).wants_row(&row));
        assert!(!filter(tenant("other", None)).wants_row(&row));
        let mut f = filter(tenant("acme", None));
        f.test_id = Some("t2".into());
        assert!(!f.wants_row(&row));
        f.test_id = Some("t1".into());
        f.results = false;
        assert!(!f.wants_row(&row));
    }

    fn page(from: (i64, i64), last: (i64, i64)) -> (StreamCursor, Arc<StreamPage>) {
        let c = |(r, e)| StreamCursor {
            result_key: r,
            event_key: e,
            ..Default::default()
        };
        let mut row = result_row("acme", "", "t1");
        row.key = last.0;
        let page = StreamPage {
            rows: vec![row],
            last: c(last),
            more: false,
        };
        (c(from), Arc::new(page))
    }

    #[test]
    fn the_engine_gets_only_pages_that_leave_no_rows_out() {
        let hub = Hub::new(2);
        let at = |r, e| StreamCursor {
            result_key: r,
            event_key: e,
            ..Default::default()
        };
        for (from, last) in [((0, 0), (10, 0)), ((10, 0), (20, 5)), ((20, 5), (30, 5))] {
            let (f, p) = page(from, last);
            hub.share(f, p);
        }
        // A reader at 12 skips the first page (all seen) and gets the second, which covers it.
        let p = hub.shared_page_after(at(12, 0)).expect("covering page");
        assert_eq!(p.last, at(20, 5));
        // A reader past a page's start in one key but before it in the other would miss rows:
        // it must read the store, and the page stays for later.
        assert!(hub.shared_page_after(at(25, 3)).is_none());
        assert!(hub.has_shared_page());
        let p = hub.shared_page_after(at(20, 5)).expect("next page");
        assert_eq!(p.last, at(30, 5));
        assert!(hub.shared_page_after(at(30, 5)).is_none());
        // The queue is bounded: the oldest pages go first.
        for i in 0..(SHARED_PAGES as i64 + 4) {
            let (f, p) = page((i, 0), (i + 1, 0));
            hub.share(f, p);
        }
        assert!(hub.shared_page_after(at(0, 0)).is_none());
        assert!(hub.shared_page_after(at(4, 0)).is_some());
    }

    #[test]
    fn a_full_client_is_dropped_and_counted_without_blocking() {
        let hub = Hub::new(2);
        let slow = hub.subscribe(filter(tenant("acme", None)));
        let mut fast = hub.subscribe(filter(tenant("acme", None)));
        let row = result_row("acme", "noc", "t1");
        for i in 0..5 {
            if let Some(ev) = row_event(&row, StreamCursor::default()) {
                hub.fan_out(ev, |f| f.wants_row(&row));
            }
            if i < 4 {
                // The fast client keeps up.
                assert!(fast.rx.try_recv().is_ok());
            }
        }
        assert!(slow.dropped.load(Ordering::Relaxed));
        assert!(!fast.dropped.load(Ordering::Relaxed));
        assert_eq!(hub.counters.dropped_clients.load(Ordering::Relaxed), 1);
        assert_eq!(hub.client_count(), 1);
    }
}
