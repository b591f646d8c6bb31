//! The correlator: route events ↔ tests.
//!
//! It follows the stored route events (woken by ingest whenever a listener's batch commits, and
//! on a short tick), and for each change finds the tests whose target addresses the changed
//! prefix covers, in the same org. A change counts only where the prefix is (or was) the longest
//! match for the target in that peer's table: a /8 flapping under a stable /24 moves no packet to
//! the /24's addresses. Events of one listener peer that follow each other within
//! `incident_gap` fold into one incident, so a session loss or a burst of thousands of updates is
//! one record, not thousands; an incident open for `max_incident` (10 min by default) is closed
//! even while its peer keeps changing, and the next event opens a new one. Events during a
//! session's initial table transfer (Session Up until End-of-RIB for every family, or
//! `transfer_cap`) are not correlated.
//!
//! The record is saved as soon as it touches a test (provisional, verdict pending), then once the
//! after-window has closed the verdict is decided from the tests' results in the window before
//! the first event and the window after the last one, less its first `settle` (2 s by default:
//! a probe still in flight when a withdraw arrives, or a router that has not yet reprogrammed its
//! forwarding table, says nothing about the new path; the routed end-to-end test saw exactly
//! that). The window statistics (p50/p95 latency, loss, reachability per test and agent) are
//! computed with polars in `foureyes-analysis` (a collector-only crate), through `window.rs`.
//!
//! The verdict rules and their thresholds ([`CorrelationConfig`], `[correlation]` in the config)
//! are in `docs/correlation.md`; [`judge`] is their one implementation.

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
use bursts::BurstGate;
use targets::{OrgTargets, Resolver, Target, TargetChanges, Wanted};

#[derive(Clone, Debug)]
pub struct CorrelationConfig {
    pub before: Duration,
    pub after: Duration,
    pub incident_gap: Duration,
    /// An incident this old is closed even while its peer keeps changing (a prefix that flaps
    /// for hours gets a verdict every `max_incident`, not never); the next event opens another.
    pub max_incident: Duration,
    pub transfer_cap: Duration,
    pub latency_factor: f64,
    pub latency_min_ms: f64,
    /// The same test on the 95th percentile: a path whose tail got worse (queues, a lossy
    /// detour with retransmits) while its median held.
    pub latency_p95_factor: f64,
    pub latency_p95_min_ms: f64,
    pub loss_delta: f64,
    /// Results this soon after the last event are not part of the after window (see
    /// `Correlation.settle_ms` in correlation.proto for why).
    pub settle: Duration,
    /// Runs of a probe burst when a change touches a test (0: no bursts), and their spacing.
    pub burst_runs: u32,
    pub burst_spacing: Duration,
    /// A node gets at most one burst message in this long (tests asked for meanwhile wait and go
    /// together); besides each test's own 30 s.
    pub burst_node_interval: Duration,
    /// Bursts also trace the route toward the tests' targets (see `pathcheck.rs`).
    pub burst_traceroute: bool,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            before: Duration::from_secs(300),
            after: Duration::from_secs(120),
            incident_gap: Duration::from_secs(10),
            max_incident: Duration::from_secs(600),
            transfer_cap: Duration::from_secs(120),
            latency_factor: 1.5,
            latency_min_ms: 5.0,
            latency_p95_factor: 2.0,
            latency_p95_min_ms: 10.0,
            loss_delta: 0.05,
            settle: Duration::from_secs(2),
            burst_runs: 5,
            burst_spacing: Duration::from_secs(1),
            burst_node_interval: Duration::from_secs(5),
            burst_traceroute: true,
        }
    }
}

impl CorrelationConfig {
    /// Refuses values the verdict rules cannot mean (NaN, negative, a factor below 1, a zero
    /// window), with the `[correlation]` key in the message.
    pub fn check(&self) -> Result<(), String> {
        let key = |k: &str| format!("correlation.{k}");
        for (k, v) in [
            ("latency_factor", self.latency_factor),
            ("latency_p95_factor", self.latency_p95_factor),
        ] {
            if !v.is_finite() || v < 1.0 {
                return Err(format!(
                    "{} must be a number of at least 1 (a ratio of latencies), not {v}",
                    key(k)
                ));
            }
        }
        for (k, v) in [
            ("latency_min_ms", self.latency_min_ms),
            ("latency_p95_min_ms", self.latency_p95_min_ms),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!(
                    "{} must be 0 or more milliseconds, not {v}",
                    key(k)
                ));
            }
        }
        let v = self.loss_delta;
        if !v.is_finite() || v <= 0.0 || v > 1.0 {
            return Err(format!(
                "{} must be more than 0 and at most 1 (a share of runs), not {v}",
                key("loss_delta")
            ));
        }
        for (k, d) in [
            ("before", self.before),
            ("after", self.after),
            ("incident_gap", self.incident_gap),
            ("max_incident", self.max_incident),
        ] {
            if d.is_zero() {
                return Err(format!("{} must be longer than 0", key(k)));
            }
        }
        if self.max_incident < self.incident_gap {
            return Err(format!(
                "{} must be at least incident_gap ({:?})",
                key("max_incident"),
                self.incident_gap
            ));
        }
        Ok(())
    }
}

/// The tail rule needs this many OK runs in each window: below 20, the nearest-rank 95th
/// percentile is the slowest run, and one slow reply on a busy host would decide the verdict.
const P95_MIN_OK: u32 = 20;
/// Prefixes listed in one record, at most (the counts keep the whole story).
const MAX_LISTED: usize = 100;
/// At most one probe burst per test in this long (nodes enforce their own floor too).
const BURST_EVERY_MS: i64 = 30_000;
/// How often the correlator looks without being woken.
const TICK: Duration = Duration::from_millis(500);
/// Every org's tests are reloaded this often besides the reloads a test change asks for (a
/// safety net, and when stale names get looked up again).
const TARGET_REFRESH: Duration = Duration::from_secs(30);

/// A test's target as configured (a name or an address).
struct TestHost {
    host: String,
    test_id: String,
    test_name: String,
    team: String,
}

struct Incident {
    corr: pb::Correlation,
    opened_ms: i64,
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
pub(crate) fn target_host(t: &pb::Test) -> Option<String> {
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
    /// Per org: its tests' targets as configured, and their addresses in a trie.
    tests: HashMap<String, Vec<TestHost>>,
    targets: HashMap<String, OrgTargets>,
    changes: Arc<TargetChanges>,
    resolver: Arc<Resolver>,
    /// Names the last target build wanted looked up.
    wanted: Wanted,
    targets_at_ms: i64,
    agents: HashMap<String, (String, String)>,
    transfers: HashMap<(String, String), Transfer>,
    open: HashMap<(String, String), Incident>,
    /// Closed incidents waiting for their after-window: (decide at ms, record).
    waiting: Vec<(i64, pb::Correlation)>,
    bursts: BurstGate,
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
        let changes = k.changes.clone();
        let resolver = k.resolver.clone();
        k.load_pending();
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = changes.changed() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.cancelled() => return,
            }
            // Targets first, so a test created just before a route change is in the set when
            // the change is read. The store is synchronous; each step is short and bounded.
            let Some(mut next) = blocking(k, |k| k.refresh_targets(now_ms())).await else {
                return;
            };
            let wanted = std::mem::take(&mut next.wanted);
            if !wanted.stale.is_empty() {
                let r = resolver.clone();
                tokio::spawn(async move { r.resolve(wanted.stale).await });
            }
            if !wanted.fresh.is_empty() {
                // A new name is worth waiting for (bounded by the lookup timeout): its test was
                // just created, and the route change it is meant to see may be next.
                tokio::select! {
                    _ = resolver.resolve(wanted.fresh) => {}
                    _ = shutdown.cancelled() => return,
                }
                let Some(n) = blocking(next, |k| k.refresh_targets(now_ms())).await else {
                    return;
                };
                next = n;
            }
            let Some(n) = blocking(next, |k| k.process(now_ms())).await else {
                return;
            };
            k = n;
        }
    })
}

/// Runs `f` on the blocking pool; `None` if it panicked (the correlator stops, logged).
async fn blocking(
    mut k: Correlator,
    f: impl FnOnce(&mut Correlator) + Send + 'static,
) -> Option<Correlator> {
    match tokio::task::spawn_blocking(move || {
        f(&mut k);
        k
    })
    .await
    {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::error!(error = %e, "correlator round panicked; correlator stopped");
            None
        }
    }
}

impl Correlator {
    fn new(c: Arc<Collector>, cfg: CorrelationConfig) -> Self {
        let changes = c.registry.targets.clone();
        let bursts = BurstGate::new(BURST_EVERY_MS, cfg.burst_node_interval.as_millis() as i64);
        Correlator {
            resolver: Arc::new(Resolver::new(changes.clone(), targets::LOOKUP_TIMEOUT)),
            changes,
            c,
            cfg,
            cursor: None,
            start_ms: now_ms(),
            tests: HashMap::new(),
            targets: HashMap::new(),
            wanted: Wanted::default(),
            targets_at_ms: i64::MIN / 2,
            agents: HashMap::new(),
            transfers: HashMap::new(),
            open: HashMap::new(),
            waiting: Vec::new(),
            bursts,
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

    /// One round as of `now` (the golden test drives the clock; names are not looked up).
    #[cfg(test)]
    fn round_at(&mut self, now: i64) {
        self.refresh_targets(now);
        self.process(now);
    }

    fn process(&mut self, now: i64) {
        self.pull(now);
        self.send_bursts(now);
        self.close_idle(now);
        self.decide(now);
    }

    /// Reloads the tests of orgs whose tests changed (all of them every [`TARGET_REFRESH`]) and
    /// rebuilds the tries of those orgs and of orgs using a name whose addresses changed.
    fn refresh_targets(&mut self, now: i64) {
        let (mut orgs, hosts) = self.changes.take();
        let mut full = false;
        if now - self.targets_at_ms >= TARGET_REFRESH.as_millis() as i64 {
            self.targets_at_ms = now;
            match self.c.store.list_orgs(&SystemScope::collector_internal()) {
                Ok(all) => {
                    self.tests.retain(|o, _| all.contains(o));
                    self.targets.retain(|o, _| all.contains(o));
                    orgs.extend(all);
                    full = true;
                }
                Err(e) => tracing::warn!(error = %e, "correlator cannot list orgs"),
            }
        }
        for org in &orgs {
            match self.load_tests(org) {
                Some(t) if !t.is_empty() => {
                    self.tests.insert(org.clone(), t);
                }
                Some(_) => {
                    self.tests.remove(org);
                }
                // A failed read keeps what the org had.
                None => {}
            }
        }
        if full {
            let used: HashSet<&str> = self
                .tests
                .values()
                .flatten()
                .map(|t| t.host.as_str())
                .collect();
            self.resolver.retain(&used);
        }
        if !hosts.is_empty() {
            for (org, tests) in &self.tests {
                if tests.iter().any(|t| hosts.contains(&t.host)) {
                    orgs.insert(org.clone());
                }
            }
        }
        for org in orgs {
            let Some(tests) = self.tests.get(&org) else {
                self.targets.remove(&org);
                continue;
            };
            let mut set = OrgTargets::default();
            for t in tests {
                for addr in self.resolver.addrs(&t.host, now, &mut self.wanted) {
                    set.insert(Target {
                        addr,
                        test_id: t.test_id.clone(),
                        test_name: t.test_name.clone(),
                        team: t.team.clone(),
                    });
                }
            }
            tracing::debug!(org, targets = set.len(), "correlator targets rebuilt");
            self.targets.insert(org, set);
        }
    }

    /// The org's tests with a target, or `None` if the store could not say.
    fn load_tests(&self, org: &str) -> Option<Vec<TestHost>> {
        let scope = Scope::Tenant(foureyes_store::Tenant {
            org: org.to_string(),
            team: None,
        });
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let tests = match self.c.store.list_tests(&scope, after.as_deref(), 1000) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(org, error = %e, "correlator cannot list tests");
                    return None;
                }
            };
            let n = tests.len();
            for t in tests {
                after = Some(t.id.clone());
                if let Some(host) = target_host(&t) {
                    out.push(TestHost {
                        host,
                        test_id: t.id,
                        test_name: t.name,
                        team: t.team,
                    });
                }
            }
            if n < 1000 {
                return Some(out);
            }
        }
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
        if self
            .open
            .get(&key)
            .is_some_and(|i| at - i.opened_ms >= cfg.max_incident.as_millis() as i64)
            && let Some(inc) = self.open.remove(&key)
        {
            self.close(inc);
        }
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
            opened_ms: at,
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

    /// Asks the org's nodes to run the touched tests now, so the after-window fills in seconds
    /// (within the limits of `bursts.rs`).
    fn burst(&mut self, org: &str, tests: Vec<String>, reason: &str, now: i64) {
        if self.cfg.burst_runs == 0 || tests.is_empty() {
            return;
        }
        self.bursts.request(org, tests, reason, now);
    }

    fn send_bursts(&mut self, now: i64) {
        for due in self.bursts.due(now) {
            let n = self.c.registry.burst(
                &due.org,
                &pb::ProbeBurst {
                    test_ids: due.tests,
                    runs: self.cfg.burst_runs,
                    spacing_ms: self.cfg.burst_spacing.as_millis() as u32,
                    reason: due.reason,
                    traceroute: self.cfg.burst_traceroute,
                },
            );
            tracing::debug!(org = %due.org, nodes = n, "probe burst requested");
        }
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
        let visible = |x: &&Target| team.is_empty() || x.team.is_empty() || x.team == team;
        let peer = ev.peer.clone().unwrap_or_default();
        let peer_addr: Option<IpAddr> = peer.address.parse().ok();
        let mut out = Vec::new();
        if t == pb::RouteEventType::SessionDown {
            // The peer's table is gone: the targets it routed are those an announcement from it
            // covered.
            for x in targets.all().filter(visible) {
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
        for x in targets.within(&prefix).into_iter().filter(visible) {
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
        let dirty: Vec<_> = self
            .open
            .iter_mut()
            .filter(|(_, i)| i.dirty)
            .map(|(k, i)| {
                i.dirty = false;
                k.clone()
            })
            .collect();
        for k in dirty {
            if let Some(inc) = self.open.get(&k) {
                self.save_provisional(&inc.corr);
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

    /// Closes incidents idle for `incident_gap` or open for `max_incident`.
    fn close_idle(&mut self, now: i64) {
        let gap = self.cfg.incident_gap.as_millis() as i64;
        let max = self.cfg.max_incident.as_millis() as i64;
        let done: Vec<_> = self
            .open
            .iter()
            .filter(|(_, i)| now - i.last_event_ms >= gap || now - i.opened_ms >= max)
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            if let Some(inc) = self.open.remove(&k) {
                self.close(inc);
            }
        }
    }

    /// An incident takes no more events; its verdict comes once its after-window has passed.
    fn close(&mut self, inc: Incident) {
        if inc.corr.tests.is_empty() {
            return;
        }
        if inc.dirty {
            self.save_provisional(&inc.corr);
        }
        let after = self.cfg.after.as_millis() as i64;
        self.waiting.push((inc.last_event_ms + after, inc.corr));
    }

    fn save_provisional(&self, corr: &pb::Correlation) {
        match self
            .c
            .store
            .save_correlation(&SystemScope::collector_internal(), corr, false)
        {
            Ok(()) => self.c.stream.publish_correlation(corr),
            Err(e) => tracing::warn!(error = %e, "cannot save a correlation"),
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
    // `x` is worse than `y` by the factor and by at least the minimum.
    let up = |x: f64, y: f64, factor: f64, min: f64| x > y * factor && x - y >= min;
    let tails = a.ok >= P95_MIN_OK && b.ok >= P95_MIN_OK;
    let slower = up(
        a.latency_p50_ms,
        b.latency_p50_ms,
        cfg.latency_factor,
        cfg.latency_min_ms,
    ) || tails
        && up(
            a.latency_p95_ms,
            b.latency_p95_ms,
            cfg.latency_p95_factor,
            cfg.latency_p95_min_ms,
        );
    let faster = up(
        b.latency_p50_ms,
        a.latency_p50_ms,
        cfg.latency_factor,
        cfg.latency_min_ms,
    ) || tails
        && up(
            b.latency_p95_ms,
            a.latency_p95_ms,
            cfg.latency_p95_factor,
            cfg.latency_p95_min_ms,
        );
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

mod bursts;

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
pub(crate) mod targets;
mod window;

#[cfg(test)]
mod tests {
    use super::*;

    fn w(runs: u32, ok: u32, p50: f64, loss: f64) -> pb::WindowStats {
        w95(runs, ok, p50, p50, loss)
    }

    fn w95(runs: u32, ok: u32, p50: f64, p95: f64, loss: f64) -> pb::WindowStats {
        pb::WindowStats {
            runs,
            ok,
            latency_p50_ms: p50,
            latency_p95_ms: p95,
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
        // The tail alone: the median held, the 95th percentile went from 12 to 60 ms.
        assert_eq!(
            judge(
                &c,
                &w95(40, 40, 10.0, 12.0, 0.0),
                &w95(40, 40, 10.5, 60.0, 0.0)
            ),
            V::Degraded
        );
        assert_eq!(
            judge(
                &c,
                &w95(40, 40, 10.5, 60.0, 0.0),
                &w95(40, 40, 10.0, 12.0, 0.0)
            ),
            V::Improved
        );
        // Twice the tail but under the 10 ms minimum, or +20 ms but under 2x: noise.
        assert_eq!(
            judge(&c, &w95(40, 40, 1.0, 2.0, 0.0), &w95(40, 40, 1.0, 9.0, 0.0)),
            V::NoEffect
        );
        assert_eq!(
            judge(
                &c,
                &w95(40, 40, 10.0, 30.0, 0.0),
                &w95(40, 40, 10.0, 50.0, 0.0)
            ),
            V::NoEffect
        );
        // Too few runs for a 95th percentile: one slow reply is not a tail.
        assert_eq!(
            judge(
                &c,
                &w95(40, 40, 10.0, 12.0, 0.0),
                &w95(8, 8, 10.5, 60.0, 0.0)
            ),
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
