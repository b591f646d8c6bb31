//! The correlator: route events ↔ tests.
//!
//! It follows the stored route events (woken by ingest whenever a listener's batch commits, and
//! on a short tick), and for each change finds the tests whose target addresses the changed
//! prefix covers, in the same org. A change counts only where the prefix is (or was) the longest
//! match for the target in that peer's table: a /8 flapping under a stable /24 moves no packet to
//! the /24's addresses. Events of one listener peer that follow each other within
//! `incident_gap` fold into one incident, so a session loss or a burst of thousands of updates is
//! one record, not thousands. Events during a session's initial table transfer (Session Up until
//! End-of-RIB for every family, or `transfer_cap`) are not correlated.
//!
//! The record is saved as soon as it touches a test (provisional, verdict pending), then once the
//! after-window has closed the verdict is decided from the tests' results in the window before
//! the first event and the window after the last one, less its first `settle` (2 s by default:
//! a probe still in flight when a withdraw arrives, or a router that has not yet reprogrammed its
//! forwarding table, says nothing about the new path; the routed end-to-end test saw exactly
//! that). The window statistics (p50/p95 latency, loss, reachability per test and agent) are
//! computed with polars in `foureyes-analysis` (a collector-only crate), through `window.rs`.
//!
//! Verdict rules (per test and agent, thresholds in [`CorrelationConfig`]):
//! - no results in either window: `NO_DATA` (a node that stopped reporting is not 100 % loss);
//! - reachable before (some OK run) and no OK run after: `UNREACHABLE`;
//! - loss up by `loss_delta` or more, or reachability down by that much, or median latency up by
//!   `latency_factor` and at least `latency_min_ms`: `DEGRADED`;
//! - the same the other way round: `IMPROVED`; otherwise `NO_EFFECT`.
//!
//! A test's verdict is the worst over its agents; the incident's the worst over its tests
//! (unreachable > degraded > improved > no effect > no data).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use foureyes_proto::v1 as pb;
use foureyes_store::{
    CorrelationFilter, IpPrefix, PrefixMatch, ResultFilter, RouteEventFilter, RouteQuery, Scope,
    SystemScope,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::server::now_ms;
use crate::state::Collector;

#[derive(Clone, Debug)]
pub struct CorrelationConfig {
    pub before: Duration,
    pub after: Duration,
    pub incident_gap: Duration,
    pub transfer_cap: Duration,
    pub latency_factor: f64,
    pub latency_min_ms: f64,
    pub loss_delta: f64,
    /// Results this soon after the last event are not part of the after window (see
    /// `Correlation.settle_ms` in correlation.proto for why).
    pub settle: Duration,
    /// Runs of a probe burst when a change touches a test (0: no bursts), and their spacing.
    pub burst_runs: u32,
    pub burst_spacing: Duration,
    /// Bursts also trace the route toward the tests' targets (see `pathcheck.rs`).
    pub burst_traceroute: bool,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            before: Duration::from_secs(300),
            after: Duration::from_secs(120),
            incident_gap: Duration::from_secs(10),
            transfer_cap: Duration::from_secs(120),
            latency_factor: 1.5,
            latency_min_ms: 5.0,
            loss_delta: 0.05,
            settle: Duration::from_secs(2),
            burst_runs: 5,
            burst_spacing: Duration::from_secs(1),
            burst_traceroute: true,
        }
    }
}

/// Prefixes listed in one record, at most (the counts keep the whole story).
const MAX_LISTED: usize = 100;
/// At most one probe burst per test in this long (nodes enforce their own floor too).
const BURST_EVERY_MS: i64 = 30_000;
/// How often the correlator looks without being woken, and refreshes its targets.
const TICK: Duration = Duration::from_millis(500);
const TARGET_REFRESH: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
struct Target {
    addr: IpAddr,
    test_id: String,
    test_name: String,
    team: String,
}

struct Incident {
    corr: pb::Correlation,
    last_event_ms: i64,
    dirty: bool,
}

struct Transfer {
    pending: HashSet<i32>,
    until_ms: i64,
}

fn sys() -> Scope {
    Scope::System(SystemScope::collector_internal())
}

/// The address a test probes, if it names one (host, URL host, DNS server).
fn target_host(t: &pb::Test) -> Option<String> {
    use pb::probe_config::Kind;
    let host = match t.config.as_ref()?.kind.as_ref()? {
        Kind::Icmp(c) => c.host.clone(),
        Kind::Tcp(c) => c.host.clone(),
        Kind::Traceroute(c) => c.host.clone(),
        Kind::Dns(c) => c.server.clone(),
        Kind::Http(c) => {
            let rest = c.url.split_once("://").map(|(_, r)| r).unwrap_or(&c.url);
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let authority = authority.rsplit('@').next().unwrap_or(authority);
            if let Some(v6) = authority.strip_prefix('[') {
                v6.split(']').next().unwrap_or("").to_string()
            } else {
                authority.split(':').next().unwrap_or("").to_string()
            }
        }
    };
    (!host.is_empty()).then_some(host)
}

pub struct Correlator {
    c: Arc<Collector>,
    cfg: CorrelationConfig,
    cursor: Option<foureyes_store::ResultCursor>,
    start_ms: i64,
    targets: HashMap<String, Vec<Target>>,
    resolved: HashMap<String, (Vec<IpAddr>, i64)>,
    targets_at_ms: i64,
    agents: HashMap<String, (String, String)>,
    transfers: HashMap<(String, String), Transfer>,
    open: HashMap<(String, String), Incident>,
    /// Closed incidents waiting for their after-window: (decide at ms, record).
    waiting: Vec<(i64, pb::Correlation)>,
    /// When each test last got a probe burst.
    bursts: HashMap<String, i64>,
}

/// Starts the correlator; it runs until `shutdown`.
pub fn spawn(
    c: Arc<Collector>,
    cfg: CorrelationConfig,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut k = Correlator::new(c, cfg);
        k.load_pending();
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.cancelled() => return,
            }
            // The store is synchronous; the correlator's work is short and bounded per round.
            k = match tokio::task::spawn_blocking(move || {
                k.round();
                k
            })
            .await
            {
                Ok(k) => k,
                Err(e) => {
                    tracing::error!(error = %e, "correlator round panicked; correlator stopped");
                    return;
                }
            };
        }
    })
}

impl Correlator {
    fn new(c: Arc<Collector>, cfg: CorrelationConfig) -> Self {
        Correlator {
            c,
            cfg,
            cursor: None,
            start_ms: now_ms(),
            targets: HashMap::new(),
            resolved: HashMap::new(),
            targets_at_ms: 0,
            agents: HashMap::new(),
            transfers: HashMap::new(),
            open: HashMap::new(),
            waiting: Vec::new(),
            bursts: HashMap::new(),
        }
    }

    /// Records a restart left pending are decided when their window has passed.
    fn load_pending(&mut self) {
        let f = CorrelationFilter {
            pending_only: true,
            ..Default::default()
        };
        let mut after = None;
        loop {
            let Ok(page) = self.c.store.correlations(&sys(), &f, after, 1000) else {
                return;
            };
            for corr in page.correlations {
                let last = corr
                    .last_event_at
                    .as_ref()
                    .map(foureyes_proto::timestamp_ms)
                    .unwrap_or(0);
                let at = last + i64::from(corr.after_window_seconds) * 1000;
                self.waiting.push((at, corr));
            }
            match page.next {
                Some(c) => after = Some(c),
                None => return,
            }
        }
    }

    fn round(&mut self) {
        self.round_at(now_ms());
    }

    /// One round as of `now` (the golden test drives the clock).
    fn round_at(&mut self, now: i64) {
        if now - self.targets_at_ms >= TARGET_REFRESH.as_millis() as i64 {
            self.refresh_targets(now);
        }
        self.pull(now);
        self.close_idle(now);
        self.decide(now);
    }

    fn refresh_targets(&mut self, now: i64) {
        self.targets_at_ms = now;
        let mut by_org: HashMap<String, Vec<Target>> = HashMap::new();
        let orgs = self
            .c
            .store
            .list_orgs(&SystemScope::collector_internal())
            .unwrap_or_default();
        for org in orgs {
            let scope = Scope::Tenant(foureyes_store::Tenant {
                org: org.clone(),
                team: None,
            });
            let mut after: Option<String> = None;
            loop {
                let Ok(tests) = self.c.store.list_tests(&scope, after.as_deref(), 1000) else {
                    break;
                };
                let n = tests.len();
                for t in tests {
                    after = Some(t.id.clone());
                    let Some(host) = target_host(&t) else {
                        continue;
                    };
                    for addr in self.resolve(&host, now) {
                        by_org.entry(org.clone()).or_default().push(Target {
                            addr,
                            test_id: t.id.clone(),
                            test_name: t.name.clone(),
                            team: t.team.clone(),
                        });
                    }
                }
                if n < 1000 {
                    break;
                }
            }
        }
        tracing::debug!(
            orgs = by_org.len(),
            targets = by_org.values().map(Vec::len).sum::<usize>(),
            "correlator targets refreshed"
        );
        self.targets = by_org;
    }

    fn resolve(&mut self, host: &str, now: i64) -> Vec<IpAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![ip.to_canonical()];
        }
        if let Some((v, at)) = self.resolved.get(host)
            && now - at < 300_000
        {
            return v.clone();
        }
        let v: Vec<IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
            .map(|it| it.map(|a| a.ip().to_canonical()).collect())
            .unwrap_or_default();
        self.resolved.insert(host.to_string(), (v.clone(), now));
        v
    }

    fn agent(&mut self, id: &str) -> Option<(String, String)> {
        if let Some(a) = self.agents.get(id) {
            return Some(a.clone());
        }
        let a = self.c.store.get_agent(&sys(), id).ok().flatten()?;
        let v = (a.org, a.team.unwrap_or_default());
        self.agents.insert(id.to_string(), v.clone());
        Some(v)
    }

    fn pull(&mut self, now: i64) {
        let filter = RouteEventFilter {
            from_ms: Some(self.start_ms),
            ..Default::default()
        };
        // Bounded per round so verdicts and closing still happen under a flood.
        for _ in 0..20 {
            let page = match self
                .c
                .store
                .route_events(&sys(), &filter, self.cursor, 5000)
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "correlator cannot read route events");
                    return;
                }
            };
            for ev in page.events {
                self.on_event(ev, now);
            }
            self.cursor = page.last.or(self.cursor);
            if page.next.is_none() {
                break;
            }
        }
        self.flush_dirty();
    }

    fn on_event(&mut self, ev: pb::RouteEvent, now: i64) {
        use pb::RouteEventType as T;
        // A resync's end is counted; the changes it found happened at an unknown time while the
        // listener's spool dropped events, so they are not fresh changes to correlate.
        if ev.r#type == T::ResyncEnd as i32 {
            count_resync(&self.c.stream.counters, &ev);
            return;
        }
        if foureyes_store::is_resync_reason(&ev.reason) {
            count_session_resync(&self.c.stream.counters, &ev);
            return;
        }
        let Some((org, team)) = self.agent(&ev.agent_id) else {
            return;
        };
        let key = (
            ev.agent_id.clone(),
            foureyes_store::peer_key(ev.peer.as_ref()).0,
        );
        let at = ev
            .received_at
            .as_ref()
            .map(foureyes_proto::timestamp_ms)
            .unwrap_or(now);
        let t = T::try_from(ev.r#type).unwrap_or(T::Unspecified);
        match t {
            T::SessionUp => {
                let pending = ev
                    .session
                    .as_ref()
                    .map(|s| s.families.iter().copied().collect())
                    .unwrap_or_default();
                self.transfers.insert(
                    key,
                    Transfer {
                        pending,
                        until_ms: at + self.cfg.transfer_cap.as_millis() as i64,
                    },
                );
                return;
            }
            T::EndOfRib => {
                if let Some(tr) = self.transfers.get_mut(&key) {
                    tr.pending.remove(&ev.afi_safi);
                    if tr.pending.is_empty() {
                        self.transfers.remove(&key);
                    }
                }
                return;
            }
            T::Announce | T::Withdraw | T::AttributeChange | T::SessionDown => {}
            _ => return,
        }
        if t != T::SessionDown
            && let Some(tr) = self.transfers.get(&key)
        {
            if at < tr.until_ms {
                return;
            }
            self.transfers.remove(&key);
        }
        if t == T::SessionDown {
            self.transfers.remove(&key);
        }
        let touched = self.touched(&org, &team, &ev, t);
        tracing::debug!(agent = %ev.agent_id, seq = ev.seq, prefix = %ev.prefix, kind = ?t, touched = touched.len(), "route event");
        let cfg = self.cfg.clone();
        let inc = self.open.entry(key).or_insert_with(|| Incident {
            corr: pb::Correlation {
                id: format!("c-{}", uuid::Uuid::now_v7().simple()),
                org: org.clone(),
                team: team.clone(),
                opened_at: Some(foureyes_proto::timestamp_from_ms(at)),
                listener_id: ev.agent_id.clone(),
                peer: ev.peer.clone(),
                before_window_seconds: cfg.before.as_secs() as u32,
                after_window_seconds: cfg.after.as_secs() as u32,
                settle_ms: cfg.settle.min(cfg.after).as_millis() as u32,
                ..Default::default()
            },
            last_event_ms: at,
            dirty: false,
        });
        let c = &mut inc.corr;
        c.event_count += 1;
        match t {
            T::Announce => c.announces += 1,
            T::Withdraw => c.withdraws += 1,
            T::AttributeChange => c.attribute_changes += 1,
            _ => c.session_downs += 1,
        }
        if c.event_seqs.len() < MAX_LISTED {
            c.event_seqs.push(ev.seq);
        }
        if !ev.prefix.is_empty()
            && c.prefixes.len() < MAX_LISTED
            && !c.prefixes.contains(&ev.prefix)
        {
            c.prefixes.push(ev.prefix.clone());
        }
        c.last_event_at = Some(foureyes_proto::timestamp_from_ms(at));
        inc.last_event_ms = at;
        let mut fresh = Vec::new();
        for (target, prefix) in touched {
            if c.tests.iter().any(|x| x.test_id == target.test_id) {
                continue;
            }
            // A team's listener only speaks for its team's tests and the org's; the record
            // belongs to the test's team when the listener is org-wide.
            if c.team.is_empty() && !target.team.is_empty() {
                c.team = target.team.clone();
            }
            fresh.push(target.test_id.clone());
            c.tests.push(pb::AffectedTest {
                test_id: target.test_id.clone(),
                test_name: target.test_name.clone(),
                target: target.addr.to_string(),
                prefix,
                ..Default::default()
            });
        }
        if !c.tests.is_empty() {
            c.summary = summary(c);
            inc.dirty = true;
        }
        let id = c.id.clone();
        self.burst(&org, fresh, &id, now);
    }

    /// Asks the org's nodes to run the touched tests now, so the after-window fills in seconds.
    fn burst(&mut self, org: &str, tests: Vec<String>, reason: &str, now: i64) {
        if self.cfg.burst_runs == 0 {
            return;
        }
        let due: Vec<String> = tests
            .into_iter()
            .filter(|t| {
                self.bursts
                    .get(t)
                    .is_none_or(|at| now - at >= BURST_EVERY_MS)
            })
            .collect();
        if due.is_empty() {
            return;
        }
        for t in &due {
            self.bursts.insert(t.clone(), now);
        }
        let n = self.c.registry.burst(
            org,
            &pb::ProbeBurst {
                test_ids: due,
                runs: self.cfg.burst_runs,
                spacing_ms: self.cfg.burst_spacing.as_millis() as u32,
                reason: reason.to_string(),
                traceroute: self.cfg.burst_traceroute,
            },
        );
        tracing::debug!(org, nodes = n, "probe burst requested");
    }

    /// The targets (with the covering prefix) this event touches.
    fn touched(
        &self,
        org: &str,
        team: &str,
        ev: &pb::RouteEvent,
        t: pb::RouteEventType,
    ) -> Vec<(Target, String)> {
        let Some(targets) = self.targets.get(org) else {
            return Vec::new();
        };
        let visible = |x: &Target| team.is_empty() || x.team.is_empty() || x.team == team;
        let peer = ev.peer.clone().unwrap_or_default();
        let peer_addr: Option<IpAddr> = peer.address.parse().ok();
        let mut out = Vec::new();
        if t == pb::RouteEventType::SessionDown {
            // The peer's table is gone: the targets it routed are those an announcement from it
            // covered.
            for x in targets.iter().filter(|x| visible(x)) {
                let f = RouteEventFilter {
                    agent_id: Some(ev.agent_id.clone()),
                    peer: peer_addr,
                    prefix: Some((IpPrefix::new(x.addr, 128), PrefixMatch::Covering)),
                    types: vec![pb::RouteEventType::Announce],
                    ..Default::default()
                };
                if let Ok(p) = self.c.store.route_events(&sys(), &f, None, 1)
                    && let Some(e) = p.events.first()
                {
                    out.push((x.clone(), e.prefix.clone()));
                }
            }
            return out;
        }
        let Ok(prefix) = IpPrefix::parse(&ev.prefix) else {
            return out;
        };
        let inside = |a: &IpAddr| IpPrefix::new(*a, prefix.len).addr == prefix.addr;
        for x in targets
            .iter()
            .filter(|x| visible(x) && x.addr.is_ipv4() == prefix.addr.is_ipv4())
        {
            if !inside(&x.addr) {
                continue;
            }
            // Longest match: a more-specific route of the same peer covering the target governs
            // it, whatever happens to this prefix.
            let q = RouteQuery {
                prefix: IpPrefix::new(x.addr, 128),
                how: PrefixMatch::Longest,
                agent_id: Some(ev.agent_id.clone()),
                peer: peer_addr,
            };
            let shadowed = self
                .c
                .store
                .routes(&sys(), &q)
                .map(|rs| {
                    rs.iter().any(|r| {
                        r.peer.as_ref().map(|p| p.source) == Some(peer.source)
                            && IpPrefix::parse(&r.prefix).is_ok_and(|p| p.len > prefix.len)
                    })
                })
                .unwrap_or(false);
            if !shadowed {
                out.push((x.clone(), ev.prefix.clone()));
            }
        }
        out
    }

    fn flush_dirty(&mut self) {
        for inc in self.open.values_mut() {
            if inc.dirty {
                inc.dirty = false;
                match self.c.store.save_correlation(
                    &SystemScope::collector_internal(),
                    &inc.corr,
                    false,
                ) {
                    Ok(()) => self.c.stream.publish_correlation(&inc.corr),
                    Err(e) => tracing::warn!(error = %e, "cannot save a correlation"),
                }
            }
        }
        self.report_gauges();
    }

    /// Open and pending incident counts for `/metrics`.
    fn report_gauges(&self) {
        let h = &self.c.stream.counters;
        h.correlations_open.store(
            i64::try_from(self.open.len()).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        h.correlations_pending.store(
            i64::try_from(self.waiting.len()).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn close_idle(&mut self, now: i64) {
        let gap = self.cfg.incident_gap.as_millis() as i64;
        let after = self.cfg.after.as_millis() as i64;
        let idle: Vec<_> = self
            .open
            .iter()
            .filter(|(_, i)| now - i.last_event_ms >= gap)
            .map(|(k, _)| k.clone())
            .collect();
        for k in idle {
            if let Some(inc) = self.open.remove(&k)
                && !inc.corr.tests.is_empty()
            {
                self.waiting.push((inc.last_event_ms + after, inc.corr));
            }
        }
    }

    fn decide(&mut self, now: i64) {
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.waiting = rest;
        for (_, mut corr) in due {
            self.verdict(&mut corr, now);
            match self
                .c
                .store
                .save_correlation(&SystemScope::collector_internal(), &corr, true)
            {
                Ok(()) => self.c.stream.publish_correlation(&corr),
                Err(e) => tracing::warn!(error = %e, "cannot save a correlation verdict"),
            }
        }
        self.report_gauges();
    }

    fn verdict(&self, corr: &mut pb::Correlation, now: i64) {
        let opened = corr
            .opened_at
            .as_ref()
            .map(foureyes_proto::timestamp_ms)
            .unwrap_or(now);
        let last = corr
            .last_event_at
            .as_ref()
            .map(foureyes_proto::timestamp_ms)
            .unwrap_or(opened);
        let before = (
            opened - i64::from(corr.before_window_seconds) * 1000,
            opened,
        );
        let end = last + i64::from(corr.after_window_seconds) * 1000;
        let after = ((last + i64::from(corr.settle_ms)).min(end), end);
        let mut worst = pb::Verdict::Pending;
        for t in &mut corr.tests {
            let b = self.results(&t.test_id, before);
            let a = self.results(&t.test_id, after);
            let w = match window::compare(&b, &a) {
                Ok(w) => w,
                Err(e) => {
                    // Not expected (the frames are plain columns); the test says "no data"
                    // rather than a verdict the figures do not support.
                    tracing::error!(error = %e, test = %t.test_id, "window statistics failed");
                    window::TestWindows::default()
                }
            };
            let mut test_worst = pb::Verdict::Pending;
            for (agent, (bs, as_)) in w.agents {
                let v = judge(&self.cfg, &bs, &as_);
                test_worst = worse(test_worst, v);
                t.agents.push(pb::AgentImpact {
                    agent_id: agent,
                    before: Some(bs),
                    after: Some(as_),
                    verdict: v as i32,
                });
            }
            if test_worst == pb::Verdict::Pending {
                test_worst = judge(&self.cfg, &w.before, &w.after);
            }
            t.before = Some(w.before);
            t.after = Some(w.after);
            t.verdict = test_worst as i32;
            worst = worse(worst, test_worst);
        }
        corr.verdict = worst as i32;
        corr.decided_at = Some(foureyes_proto::timestamp_from_ms(now));
        corr.summary = summary(corr);
    }

    fn results(&self, test_id: &str, (from, to): (i64, i64)) -> Vec<pb::ProbeResult> {
        let f = ResultFilter {
            test_id: Some(test_id.to_string()),
            agent_id: None,
            from_ms: Some(from),
            to_ms: Some(to),
        };
        self.c
            .store
            .results(&sys(), &f, None, 10_000)
            .map(|p| p.results)
            .unwrap_or_default()
    }
}

fn rank(v: pb::Verdict) -> u8 {
    match v {
        pb::Verdict::Pending => 0,
        pb::Verdict::NoData => 1,
        pb::Verdict::NoEffect => 2,
        pb::Verdict::Improved => 3,
        pb::Verdict::Degraded => 4,
        pb::Verdict::Unreachable => 5,
    }
}

fn worse(a: pb::Verdict, b: pb::Verdict) -> pb::Verdict {
    if rank(b) > rank(a) { b } else { a }
}

pub fn judge(cfg: &CorrelationConfig, b: &pb::WindowStats, a: &pb::WindowStats) -> pb::Verdict {
    if b.runs == 0 || a.runs == 0 {
        return pb::Verdict::NoData;
    }
    if b.ok > 0 && a.ok == 0 {
        return pb::Verdict::Unreachable;
    }
    let slower = a.latency_p50_ms > b.latency_p50_ms * cfg.latency_factor
        && a.latency_p50_ms - b.latency_p50_ms >= cfg.latency_min_ms;
    let faster = b.latency_p50_ms > a.latency_p50_ms * cfg.latency_factor
        && b.latency_p50_ms - a.latency_p50_ms >= cfg.latency_min_ms;
    if a.loss - b.loss >= cfg.loss_delta
        || b.reachability - a.reachability >= cfg.loss_delta
        || (slower && a.ok > 0 && b.ok > 0)
    {
        return pb::Verdict::Degraded;
    }
    if b.loss - a.loss >= cfg.loss_delta
        || a.reachability - b.reachability >= cfg.loss_delta
        || (faster && a.ok > 0 && b.ok > 0)
    {
        return pb::Verdict::Improved;
    }
    pb::Verdict::NoEffect
}

fn summary(c: &pb::Correlation) -> String {
    let peer = c.peer.as_ref().map(|p| p.address.as_str()).unwrap_or("?");
    let what = if c.session_downs > 0 {
        "session down".to_string()
    } else {
        let mut parts = Vec::new();
        if c.announces > 0 {
            parts.push(format!("{} announce", c.announces));
        }
        if c.withdraws > 0 {
            parts.push(format!("{} withdraw", c.withdraws));
        }
        if c.attribute_changes > 0 {
            parts.push(format!("{} change", c.attribute_changes));
        }
        parts.join(", ")
    };
    let verdict = pb::Verdict::try_from(c.verdict)
        .map(|v| {
            v.as_str_name()
                .trim_start_matches("VERDICT_")
                .to_lowercase()
        })
        .unwrap_or_default();
    format!(
        "{what} from {peer} ({}) touched {} test(s): {verdict}",
        c.prefixes.first().map(String::as_str).unwrap_or("session"),
        c.tests.len()
    )
}

/// `/metrics` counts of resync snapshots (see the store's `resync.rs`).
fn count_resync(h: &crate::stream::HubCounters, end: &pb::RouteEvent) {
    use std::sync::atomic::Ordering::Relaxed;
    let applied = end.resync.as_ref().filter(|o| o.applied);
    if let Some(o) = applied {
        h.route_resyncs_applied.fetch_add(1, Relaxed);
        h.route_resync_changes
            .fetch_add(o.added + o.changed + o.removed, Relaxed);
    } else {
        h.route_resyncs_discarded.fetch_add(1, Relaxed);
    }
}

/// `/metrics` counts of the session events resyncs stored (see the store's `resync_state.rs`).
fn count_session_resync(h: &crate::stream::HubCounters, ev: &pb::RouteEvent) {
    use pb::RouteEventType as T;
    use std::sync::atomic::Ordering::Relaxed;
    let counter = match T::try_from(ev.r#type) {
        Ok(T::SessionUp) => &h.session_resyncs_up,
        Ok(T::SessionDown) if ev.reason == foureyes_store::RESYNC_REASON => &h.session_resyncs_down,
        Ok(T::SessionDown) => &h.session_resyncs_gone,
        _ => return,
    };
    counter.fetch_add(1, Relaxed);
}

#[cfg(test)]
mod golden;
mod window;

#[cfg(test)]
mod tests {
    use super::*;

    fn w(runs: u32, ok: u32, p50: f64, loss: f64) -> pb::WindowStats {
        pb::WindowStats {
            runs,
            ok,
            latency_p50_ms: p50,
            latency_p95_ms: p50,
            loss,
            reachability: if runs > 0 {
                f64::from(ok) / f64::from(runs)
            } else {
                0.0
            },
        }
    }

    #[test]
    fn verdicts_follow_the_documented_rules() {
        let c = CorrelationConfig::default();
        use pb::Verdict as V;
        assert_eq!(judge(&c, &w(0, 0, 0.0, 0.0), &w(5, 5, 1.0, 0.0)), V::NoData);
        assert_eq!(judge(&c, &w(5, 5, 1.0, 0.0), &w(0, 0, 0.0, 0.0)), V::NoData);
        assert_eq!(
            judge(&c, &w(5, 5, 1.0, 0.0), &w(5, 0, 0.0, 1.0)),
            V::Unreachable
        );
        assert_eq!(
            judge(&c, &w(5, 5, 10.0, 0.0), &w(5, 5, 20.0, 0.0)),
            V::Degraded
        );
        // Slower by 1.5x but less than 5 ms: noise.
        assert_eq!(
            judge(&c, &w(5, 5, 1.0, 0.0), &w(5, 5, 2.0, 0.0)),
            V::NoEffect
        );
        assert_eq!(
            judge(&c, &w(5, 5, 10.0, 0.0), &w(5, 5, 10.0, 0.2)),
            V::Degraded
        );
        assert_eq!(
            judge(&c, &w(5, 5, 20.0, 0.2), &w(5, 5, 10.0, 0.0)),
            V::Improved
        );
        assert_eq!(
            judge(&c, &w(5, 5, 10.0, 0.01), &w(5, 5, 11.0, 0.02)),
            V::NoEffect
        );
        assert_eq!(worse(V::Degraded, V::NoData), V::Degraded);
        assert_eq!(worse(V::NoEffect, V::Unreachable), V::Unreachable);
    }

    #[test]
    fn targets_come_from_every_probe_kind() {
        let t = |k: pb::probe_config::Kind| pb::Test {
            config: Some(pb::ProbeConfig { kind: Some(k) }),
            ..Default::default()
        };
        use pb::probe_config::Kind;
        assert_eq!(
            target_host(&t(Kind::Http(pb::HttpConfig {
                url: "https://user@[2001:db8::1]:8443/x?y".into(),
                ..Default::default()
            }))),
            Some("2001:db8::1".into())
        );
        assert_eq!(
            target_host(&t(Kind::Http(pb::HttpConfig {
                url: "http://example.net:81/".into(),
                ..Default::default()
            }))),
            Some("example.net".into())
        );
        assert_eq!(
            target_host(&t(Kind::Dns(pb::DnsConfig {
                server: "192.0.2.53".into(),
                ..Default::default()
            }))),
            Some("192.0.2.53".into())
        );
    }
}
