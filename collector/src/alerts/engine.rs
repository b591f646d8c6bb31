//! The engine task. One round: pull the rows committed since the last round (by store key, with
//! the system scope, like the stream hub), fold results into the in-memory windows of the tests
//! that rules watch, then evaluate only the rules whose data moved: result rules when their test
//! got results, BGP rules when their org got route events (routes are read back with the rule's
//! tenant scope, bounded by the store's route cap), `rpki_invalid` rules also when the RPKI
//! table's generation moves, stale rules on the tick. Duration holds fire when due: the task
//! sleeps until the earliest pending deadline or the tick, whichever comes first.
//!
//! State per (rule, subject) is a [`Track`]; an alert row is written on each transition only, with
//! the transition, in one transaction. After a restart the pending and firing alerts are reloaded
//! and continue.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use foureyes_proto::v1 as pb;
use foureyes_store::{
    AgentRow, IpPrefix, PrefixMatch, ResultFilter, RouteQuery, Scope, StreamCursor, StreamItem,
    SystemScope, Tenant,
};
use tokio_util::sync::CancellationToken;

use super::rules::{self, Hold, Outcome, Sample, Track, Verdict};
use crate::{server::now_ms, state::Collector, stream::visible};

const TICK: Duration = Duration::from_secs(1);
/// Rows read per store call.
const READ_PAGE: usize = 5_000;
/// How often stale rules refresh the tests and agents they expect results from.
const ASSIGNMENT_REFRESH_MS: i64 = 10_000;
/// How often silences are re-read without a change signal (they also expire by time).
const SILENCE_REFRESH_MS: i64 = 5_000;
/// (org, test, agent) last-result times kept for stale rules, at most.
const MAX_LAST_SEEN: usize = 1_000_000;

type TestKey = (String, String);

/// What the engine knows of one listener peer's session: down, team, and the reason when a
/// listener resync found the state.
type SessionSeen = (bool, String, Option<String>);

struct Active {
    track: Track,
    alert: pb::Alert,
}

/// An agent's recent samples of one test, and its team (rules of a team see only their team).
struct AgentSamples {
    team: String,
    samples: VecDeque<Sample>,
}

pub(super) struct Engine {
    c: Arc<Collector>,
    cursor: StreamCursor,
    started_ms: i64,
    seen_changes: u64,
    rules: Vec<pb::AlertRule>,
    /// Each rule as last loaded, without its update time: a changed rule starts its alerts over.
    rule_bodies: HashMap<String, Vec<u8>>,
    silences: Vec<pb::Silence>,
    silences_at_ms: i64,
    /// (org, result test id) → (org, test) of `path_mismatch` rules: a new traceroute (the
    /// derived `#traceroute` series or the test's own) makes the test dirty.
    path_tests: HashMap<TestKey, TestKey>,
    /// (org, test) → window kept (ms), for tests a result rule watches.
    windows: HashMap<TestKey, i64>,
    samples: HashMap<TestKey, BTreeMap<String, AgentSamples>>,
    last_seen: LastSeen,
    dirty_tests: HashSet<TestKey>,
    /// Orgs with new route events since their BGP rules were last evaluated.
    dirty_orgs: HashSet<String>,
    /// The RPKI table generation `rpki_invalid` rules were last judged against.
    rpki_seen: u64,
    /// The VRPs changed since then: every org's `rpki_invalid` rules are judged again.
    rpki_dirty: bool,
    /// (org, listener, peer address) → (down, team, the reason when a listener resync found the
    /// state: its session event was lost in a spool overflow).
    sessions: BTreeMap<(String, String, String), SessionSeen>,
    session_orgs: HashSet<String>,
    peers_known: HashMap<String, BTreeSet<String>>,
    origin_baseline: HashMap<String, Option<BTreeSet<u32>>>,
    /// Per stale rule: its tests and agents, refreshed now and then.
    assignments: HashMap<String, (i64, Vec<pb::Test>, Vec<AgentRow>)>,
    active: HashMap<(String, String), Active>,
}

/// Last result time per (org, test, agent), nested so that updating a known triple (every result)
/// looks up with the row's own strings and allocates nothing.
#[derive(Default)]
struct LastSeen {
    by_org: HashMap<String, HashMap<String, HashMap<String, i64>>>,
    len: usize,
}

impl LastSeen {
    fn get(&self, org: &str, test: &str, agent: &str) -> Option<i64> {
        self.by_org.get(org)?.get(test)?.get(agent).copied()
    }

    fn set(&mut self, org: &str, test: &str, agent: &str, ms: i64) {
        if let Some(v) = self
            .by_org
            .get_mut(org)
            .and_then(|t| t.get_mut(test))
            .and_then(|a| a.get_mut(agent))
        {
            *v = ms;
            return;
        }
        if self.len >= MAX_LAST_SEEN {
            return;
        }
        self.len += 1;
        self.by_org
            .entry(org.to_string())
            .or_default()
            .entry(test.to_string())
            .or_default()
            .insert(agent.to_string(), ms);
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn sys() -> SystemScope {
    SystemScope::collector_internal()
}

fn tenant_of(r: &pb::AlertRule) -> Tenant {
    Tenant {
        org: r.org.clone(),
        team: (!r.team.is_empty()).then(|| r.team.clone()),
    }
}

fn new_id() -> String {
    format!("a-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// Starts the engine (and the SIGHUP reloader when a rules file is configured).
pub fn spawn(c: Arc<Collector>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    if c.alerts.rules_file.is_some() {
        let c = c.clone();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::error!(
                    "cannot install the SIGHUP handler: the rules file will not reload"
                );
                return;
            };
            loop {
                tokio::select! { _ = hup.recv() => {}, _ = sd.cancelled() => return }
                let c2 = c.clone();
                let _ = tokio::task::spawn_blocking(move || super::file::reload(&c2)).await;
            }
        });
    }
    tokio::spawn(async move {
        let head = c.store.stream_head(&sys()).unwrap_or_default();
        let mut e = Engine::new(c.clone(), head);
        e = match tokio::task::spawn_blocking(move || {
            e.load_active();
            e
        })
        .await
        {
            Ok(e) => e,
            Err(err) => {
                tracing::error!(error = %err, "alert engine failed to start");
                return;
            }
        };
        let mut tick = tokio::time::interval(TICK);
        // A new VRP table (each RTR End of Data, an expiry) starts a round: the round compares
        // generations itself, this only wakes it.
        let mut rpki = c.rpki.subscribe();
        let mut rpki_live = true;
        loop {
            // A duration hold fires when it is due, not at the next tick.
            let due = e.next_due_ms().map(|at| {
                let wait = u64::try_from(at - now_ms()).unwrap_or(0);
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            let ticked = tokio::select! {
                _ = c.alerts.wake.notified() => false,
                _ = until(due) => false,
                r = rpki.changed(), if rpki_live => {
                    rpki_live = r.is_ok();
                    false
                }
                _ = tick.tick() => true,
                _ = shutdown.cancelled() => return,
            };
            e = match tokio::task::spawn_blocking(move || {
                e.round(now_ms(), ticked);
                e
            })
            .await
            {
                Ok(e) => e,
                Err(err) => {
                    tracing::error!(error = %err, "alert engine round panicked; engine stopped");
                    return;
                }
            };
        }
    })
}

impl Engine {
    fn new(c: Arc<Collector>, cursor: StreamCursor) -> Self {
        Engine {
            c,
            cursor,
            started_ms: now_ms(),
            seen_changes: 0,
            rules: Vec::new(),
            rule_bodies: HashMap::new(),
            silences: Vec::new(),
            silences_at_ms: 0,
            windows: HashMap::new(),
            path_tests: HashMap::new(),
            samples: HashMap::new(),
            last_seen: LastSeen::default(),
            dirty_tests: HashSet::new(),
            dirty_orgs: HashSet::new(),
            rpki_seen: 0,
            rpki_dirty: false,
            sessions: BTreeMap::new(),
            session_orgs: HashSet::new(),
            peers_known: HashMap::new(),
            origin_baseline: HashMap::new(),
            assignments: HashMap::new(),
            active: HashMap::new(),
        }
    }

    /// Pending and firing alerts left by a previous run carry on where they were.
    fn load_active(&mut self) {
        match self.c.alerts.store.active_alerts(&sys()) {
            Ok(v) => {
                for a in v {
                    let state = pb::AlertState::try_from(a.state).unwrap_or_default();
                    let since = a
                        .started_at
                        .as_ref()
                        .map(foureyes_proto::timestamp_ms)
                        .unwrap_or(0);
                    // A firing alert stays firing until it clears; a pending one proves its hold
                    // settings again.
                    let track = Track {
                        state,
                        holds: if state == pb::AlertState::Firing {
                            u32::MAX / 2
                        } else {
                            0
                        },
                        clears: 0,
                        since_ms: since,
                    };
                    self.active.insert(
                        (a.rule_id.clone(), a.subject.clone()),
                        Active { track, alert: a },
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "alerts: cannot load active alerts"),
        }
    }

    pub(super) fn round(&mut self, now: i64, ticked: bool) {
        let changes = self.c.alerts.change_count();
        if changes != self.seen_changes {
            self.seen_changes = changes;
            self.reload(now);
        } else if now - self.silences_at_ms > SILENCE_REFRESH_MS {
            self.load_silences(now);
        }
        self.pull();
        let generation = self.c.rpki.generation();
        if generation != self.rpki_seen {
            self.rpki_seen = generation;
            self.rpki_dirty = true;
        }
        let rules = std::mem::take(&mut self.rules);
        for r in &rules {
            self.evaluate(r, now, ticked);
        }
        self.rules = rules;
        self.dirty_tests.clear();
        self.dirty_orgs.clear();
        self.rpki_dirty = false;
        self.session_orgs.clear();
        if ticked || self.next_due_ms().is_some_and(|at| at <= now) {
            self.tick(now);
        }
        self.count();
    }

    /// When the earliest pending alert's duration hold is met (collector clock, ms): one that
    /// held for its `fire_after` evaluations and waits only for `fire_after_seconds`.
    fn next_due_ms(&self) -> Option<i64> {
        if self.active.is_empty() {
            return None;
        }
        let holds: HashMap<&str, Hold> = self
            .rules
            .iter()
            .filter(|r| r.fire_after_seconds > 0)
            .map(|r| (r.id.as_str(), Hold::of(r)))
            .collect();
        self.active
            .iter()
            .filter(|(_, a)| a.track.state == pb::AlertState::Pending)
            .filter_map(|(k, a)| {
                let h = holds.get(k.0.as_str())?;
                (a.track.holds >= h.fire_after).then_some(a.track.since_ms + h.fire_after_ms)
            })
            .min()
    }

    fn load_silences(&mut self, now: i64) {
        self.silences_at_ms = now;
        match self.c.alerts.store.silences(&Scope::System(sys()), now) {
            Ok(s) => self.silences = s,
            Err(e) => tracing::warn!(error = %e, "alerts: cannot read silences"),
        }
    }

    fn reload(&mut self, now: i64) {
        self.load_silences(now);
        let rules = match self.c.alerts.store.list_alert_rules(&Scope::System(sys())) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "alerts: cannot read rules");
                return;
            }
        };
        // Alerts of rules that are gone or changed resolve (and say so); a file reload that
        // leaves a rule as it was keeps its alerts.
        let bodies: HashMap<String, Vec<u8>> = rules
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.updated_at = None;
                (r.id.clone(), prost::Message::encode_to_vec(&r))
            })
            .collect();
        let stale_rule = |id: &str| match (self.rule_bodies.get(id), bodies.get(id)) {
            (_, None) => Some("rule deleted"),
            (Some(old), Some(new)) if old != new => Some("rule changed"),
            _ => None,
        };
        let ended: Vec<((String, String), &'static str)> = self
            .active
            .keys()
            .filter_map(|k| stale_rule(&k.0).map(|why| (k.clone(), why)))
            .collect();
        for (k, why) in ended {
            if let Some(mut a) = self.active.remove(&k) {
                let from = a.track.state;
                a.alert.summary = format!("{why}; was: {}", a.alert.summary);
                self.transition(&mut a.alert, from, pb::AlertState::Resolved, &[], now);
            }
            self.origin_baseline.remove(&k.0);
            self.peers_known.remove(&k.0);
        }
        self.rule_bodies = bodies;
        let mut windows = HashMap::new();
        self.path_tests.clear();
        for r in &rules {
            use pb::alert_rule::Kind;
            if let Some(Kind::PathMismatch(k)) = &r.kind {
                let parent = (r.org.clone(), k.test_id.clone());
                for id in [
                    foureyes_probes::trace_test_id(&k.test_id),
                    k.test_id.clone(),
                ] {
                    self.path_tests.insert((r.org.clone(), id), parent.clone());
                }
                self.dirty_tests.insert(parent);
            }
            let (test, w) = match &r.kind {
                Some(Kind::Latency(k)) => (&k.test_id, k.window_seconds),
                Some(Kind::Loss(k)) => (&k.test_id, k.window_seconds),
                Some(Kind::Unreachable(k)) => (&k.test_id, k.window_seconds),
                _ => {
                    self.dirty_orgs.insert(r.org.clone());
                    self.session_orgs.insert(r.org.clone());
                    continue;
                }
            };
            let w = i64::from(if w == 0 { rules::DEFAULT_WINDOW_S } else { w }) * 1000;
            let e = windows.entry((r.org.clone(), test.clone())).or_insert(0);
            *e = (*e).max(w);
        }
        for (k, w) in &windows {
            if self.windows.get(k).is_none_or(|old| old < w) {
                self.preload(k, *w, now);
            }
            self.dirty_tests.insert(k.clone());
        }
        self.samples.retain(|k, _| windows.contains_key(k));
        self.windows = windows;
        self.rules = rules;
        self.assignments.clear();
    }

    /// Reads a newly watched test's recent results, so a rule judges from its first round.
    fn preload(&mut self, (org, test): &TestKey, window: i64, now: i64) {
        let scope = Scope::Tenant(Tenant {
            org: org.clone(),
            team: None,
        });
        let filter = ResultFilter {
            test_id: Some(test.clone()),
            from_ms: Some(now - window),
            ..Default::default()
        };
        let page = match self
            .c
            .store
            .results(&scope, &filter, None, rules::MAX_SAMPLES)
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "alerts: cannot preload results");
                return;
            }
        };
        let mut by_agent: BTreeMap<String, AgentSamples> = BTreeMap::new();
        // Results do not carry the agent's team; the agent row does.
        let teams: HashMap<String, String> = self
            .c
            .store
            .list_agents(&scope)
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.id, a.team.unwrap_or_default()))
            .collect();
        for r in &page.results {
            let team = teams.get(&r.agent_id).cloned().unwrap_or_default();
            by_agent
                .entry(r.agent_id.clone())
                .or_insert_with(|| AgentSamples {
                    team,
                    samples: VecDeque::new(),
                })
                .samples
                .push_back(Sample::of(r));
        }
        self.samples.insert((org.clone(), test.clone()), by_agent);
    }

    /// Folds the rows committed since the last round into the windows and dirty sets.
    fn pull(&mut self) {
        let scope = Scope::System(sys());
        loop {
            // The stream hub usually read these rows already: take its page when it covers what
            // follows our cursor, and read the store only when it does not hold one.
            let (page, shared) = match self.c.stream.shared_page_after(self.cursor) {
                Some(p) => (p, true),
                None => match self.c.store.stream_rows(&scope, self.cursor, READ_PAGE) {
                    Ok(p) => (Arc::new(p), false),
                    Err(e) => {
                        tracing::warn!(error = %e, "alerts: cannot read committed rows");
                        return;
                    }
                },
            };
            let seen = self.cursor;
            for row in &page.rows {
                // A shared page may start before our cursor: its rows up to it are done.
                if seen.has_seen(row) {
                    continue;
                }
                match &row.item {
                    StreamItem::Result(r) => self.on_result(&row.org, &row.team, r),
                    StreamItem::RouteEvent(e) => {
                        self.dirty_orgs.insert(row.org.clone());
                        let t = pb::RouteEventType::try_from(e.r#type).unwrap_or_default();
                        let down = match t {
                            pb::RouteEventType::SessionUp => false,
                            pb::RouteEventType::SessionDown => true,
                            _ => continue,
                        };
                        let peer = e
                            .peer
                            .as_ref()
                            .map(|p| p.address.clone())
                            .unwrap_or_default();
                        let resync =
                            foureyes_store::is_resync_reason(&e.reason).then(|| e.reason.clone());
                        self.sessions.insert(
                            (row.org.clone(), e.agent_id.clone(), peer),
                            (down, row.team.clone(), resync),
                        );
                        self.session_orgs.insert(row.org.clone());
                    }
                    // The stream's own kinds; rules do not read them.
                    StreamItem::Correlation(_) | StreamItem::Alert(_) => {}
                }
            }
            self.cursor = seen.max(page.last);
            // A page the hub read may have a newer one behind it (one poke for several reads).
            if !(page.more || (shared && self.c.stream.has_shared_page())) {
                return;
            }
        }
    }

    fn on_result(&mut self, org: &str, team: &str, r: &pb::ProbeResult) {
        let s = Sample::of(r);
        self.last_seen
            .set(org, &r.test_id, &r.agent_id, s.received_ms);
        // Most results belong to tests no rule watches: no key is built for them.
        if self.path_tests.is_empty() && self.windows.is_empty() {
            return;
        }
        let key = (org.to_string(), r.test_id.clone());
        if let Some(parent) = self.path_tests.get(&key)
            && matches!(r.detail, Some(pb::probe_result::Detail::Traceroute(_)))
        {
            self.dirty_tests.insert(parent.clone());
        }
        let Some(window) = self.windows.get(&key).copied() else {
            return;
        };
        self.dirty_tests.insert(key.clone());
        let agents = self.samples.entry(key).or_default();
        let a = agents
            .entry(r.agent_id.clone())
            .or_insert_with(|| AgentSamples {
                team: team.to_string(),
                samples: VecDeque::new(),
            });
        if a.samples.back().is_some_and(|last| last.seq >= s.seq) {
            // Already preloaded (or a replay): counted once.
            return;
        }
        a.samples.push_back(s);
        while a
            .samples
            .front()
            .is_some_and(|f| f.received_ms < s.received_ms - window)
            || a.samples.len() > rules::MAX_SAMPLES
        {
            a.samples.pop_front();
        }
    }

    /// The samples of a test a rule may see (its tenant's agents only).
    fn visible_samples(&self, r: &pb::AlertRule, test: &str) -> BTreeMap<String, Vec<Sample>> {
        let t = tenant_of(r);
        self.samples
            .get(&(r.org.clone(), test.to_string()))
            .map(|m| {
                m.iter()
                    .filter(|(_, a)| visible(&t, &r.org, &a.team))
                    .map(|(id, a)| (id.clone(), a.samples.iter().copied().collect()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn test_dirty(&self, r: &pb::AlertRule, test: &str) -> bool {
        self.dirty_tests
            .contains(&(r.org.clone(), test.to_string()))
    }

    fn evaluate(&mut self, r: &pb::AlertRule, now: i64, ticked: bool) {
        use pb::alert_rule::Kind;
        let Some(kind) = &r.kind else { return };
        match kind {
            Kind::Latency(k) if self.test_dirty(r, &k.test_id) => {
                let o = rules::latency(k, &self.visible_samples(r, &k.test_id), now);
                self.apply(r, k.test_id.clone(), o, now);
            }
            Kind::Loss(k) if self.test_dirty(r, &k.test_id) => {
                let o = rules::loss(k, &self.visible_samples(r, &k.test_id), now);
                self.apply(r, k.test_id.clone(), o, now);
            }
            Kind::Unreachable(k) if self.test_dirty(r, &k.test_id) => {
                let o = rules::unreachable(k, &self.visible_samples(r, &k.test_id), now);
                self.apply(r, k.test_id.clone(), o, now);
            }
            Kind::Stale(k) if ticked => self.evaluate_stale(r, k, now),
            Kind::SessionDown(k) if self.session_orgs.contains(&r.org) => {
                let t = tenant_of(r);
                let subjects: Vec<(String, bool, Option<String>)> = self
                    .sessions
                    .iter()
                    .filter(|((org, _, peer), (_, team, _))| {
                        visible(&t, org, team) && (k.peer.is_empty() || *peer == k.peer)
                    })
                    .map(|((_, agent, peer), (down, _, resync))| {
                        (format!("{agent}/{peer}"), *down, resync.clone())
                    })
                    .collect();
                for (subject, down, resync) in subjects {
                    let v = if down { Verdict::Holds } else { Verdict::Clear };
                    // A state a resync found: the real change was lost with the listener's
                    // spool overflow, so when it happened is unknown.
                    let found = resync
                        .map(|why| format!(" (found by a listener resync: {why})"))
                        .unwrap_or_default();
                    let o = Outcome {
                        verdict: v,
                        summary: format!(
                            "BGP session {subject} is {}{found}",
                            if down { "down" } else { "up" }
                        ),
                        values: BTreeMap::new(),
                    };
                    self.apply(r, subject, o, now);
                }
            }
            Kind::Visibility(k) if self.dirty_orgs.contains(&r.org) => {
                let Some(exact) = self.routes(r, &k.prefix, PrefixMatch::Exact) else {
                    return;
                };
                let known = self.peers_known.entry(r.id.clone()).or_default();
                for x in &exact {
                    known.insert(rules::peer_of(x));
                }
                let o = rules::visibility(k, &exact, known.len());
                self.apply(r, k.prefix.clone(), o, now);
            }
            Kind::OriginChange(k) if self.dirty_orgs.contains(&r.org) => {
                let Some(exact) = self.routes(r, &k.prefix, PrefixMatch::Exact) else {
                    return;
                };
                let base = self.origin_baseline.entry(r.id.clone()).or_default();
                let o = rules::origin_change(k, &exact, base);
                self.apply(r, k.prefix.clone(), o, now);
            }
            Kind::MoreSpecific(k) if self.dirty_orgs.contains(&r.org) => {
                let (Ok(p), Some(within)) = (
                    IpPrefix::parse(&k.prefix),
                    self.routes(r, &k.prefix, PrefixMatch::Within),
                ) else {
                    return;
                };
                let o = rules::more_specific(k, p, &within);
                self.apply(r, k.prefix.clone(), o, now);
            }
            Kind::UnexpectedAs(k) if self.dirty_orgs.contains(&r.org) => {
                let Some(within) = self.routes(r, &k.prefix, PrefixMatch::Within) else {
                    return;
                };
                let o = rules::unexpected_as(k, &within);
                self.apply(r, k.prefix.clone(), o, now);
            }
            Kind::RpkiInvalid(k) if self.rpki_dirty || self.dirty_orgs.contains(&r.org) => {
                let Some(within) = self.routes(r, &k.prefix, PrefixMatch::Within) else {
                    return;
                };
                let v = self.c.alerts.validator();
                let o = rules::rpki_invalid(k, &within, v.as_deref());
                self.apply(r, k.prefix.clone(), o, now);
            }
            Kind::PathMismatch(k)
                if self.test_dirty(r, &k.test_id) || self.dirty_orgs.contains(&r.org) =>
            {
                let scope = Scope::Tenant(tenant_of(r));
                let opts = crate::pathcheck::Options::of(k);
                match crate::pathcheck::checks(&*self.c.store, &scope, &k.test_id, &opts, now) {
                    Ok(checks) => {
                        let o = rules::path_mismatch(k, &checks);
                        self.apply(r, k.test_id.clone(), o, now);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, rule = %r.id, "alerts: cannot check paths")
                    }
                }
            }
            _ => {}
        }
    }

    /// The rule's tenant's current routes for a prefix; `None` when they cannot be read.
    fn routes(&self, r: &pb::AlertRule, prefix: &str, how: PrefixMatch) -> Option<Vec<pb::Route>> {
        let p = IpPrefix::parse(prefix).ok()?;
        let q = RouteQuery {
            prefix: p,
            how,
            agent_id: None,
            peer: None,
        };
        match self.c.store.routes(&Scope::Tenant(tenant_of(r)), &q) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, rule = %r.id, "alerts: cannot read routes");
                None
            }
        }
    }

    fn evaluate_stale(&mut self, r: &pb::AlertRule, k: &pb::StaleRule, now: i64) {
        let fresh = self
            .assignments
            .get(&r.id)
            .is_some_and(|(at, _, _)| now - at < ASSIGNMENT_REFRESH_MS);
        if !fresh {
            let scope = Scope::Tenant(tenant_of(r));
            let mut tests = Vec::new();
            let mut after: Option<String> = None;
            loop {
                match self.c.store.list_tests(&scope, after.as_deref(), 1000) {
                    Ok(page) => {
                        let n = page.len();
                        after = page.last().map(|t| t.id.clone());
                        tests.extend(
                            page.into_iter()
                                .filter(|t| k.test_id.is_empty() || t.id == k.test_id),
                        );
                        if n < 1000 {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "alerts: cannot read tests");
                        return;
                    }
                }
            }
            let agents = match self.c.store.list_agents(&scope) {
                Ok(a) => a
                    .into_iter()
                    .filter(|a| a.kind == pb::AgentKind::Node && !a.revoked)
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "alerts: cannot read agents");
                    return;
                }
            };
            self.assignments.insert(r.id.clone(), (now, tests, agents));
        }
        let Some((_, tests, agents)) = self.assignments.get(&r.id) else {
            return;
        };
        let mut outcomes = Vec::new();
        for t in tests {
            for a in agents {
                let team = a.team.clone().unwrap_or_default();
                let assigned = (t.team.is_empty() || t.team == team)
                    && (t.agent_ids.is_empty() || t.agent_ids.contains(&a.id));
                if !assigned {
                    continue;
                }
                let last = self.last_seen.get(&r.org, &t.id, &a.id).unwrap_or(0);
                let since = last.max(self.started_ms).max(a.created_at_ms);
                let o = rules::stale(k, since, t.interval_ms, now);
                outcomes.push((format!("{}/{}", t.id, a.id), o));
            }
        }
        // Subjects no longer assigned (test deleted, agent revoked) clear.
        let gone: Vec<String> = {
            let seen: HashSet<&String> = outcomes.iter().map(|(s, _)| s).collect();
            self.active
                .keys()
                .filter(|(rule, subject)| *rule == r.id && !seen.contains(subject))
                .map(|(_, s)| s.clone())
                .collect()
        };
        for subject in gone {
            let o = Outcome {
                verdict: Verdict::Clear,
                summary: "no longer assigned: not expected to report".into(),
                values: BTreeMap::new(),
            };
            outcomes.push((subject, o));
        }
        for (subject, o) in outcomes {
            self.apply(r, subject, o, now);
        }
    }

    fn silenced(&self, a: &pb::Alert, now: i64) -> bool {
        self.silences
            .iter()
            .any(|s| rules::silence_matches(s, a, now))
    }

    fn apply(&mut self, r: &pb::AlertRule, subject: String, o: Outcome, now: i64) {
        let key = (r.id.clone(), subject);
        if !self.active.contains_key(&key) {
            if o.verdict != Verdict::Holds {
                return;
            }
            let kind = r.kind.as_ref().map(rules::kind_name).unwrap_or("");
            let alert = pb::Alert {
                id: new_id(),
                org: r.org.clone(),
                team: r.team.clone(),
                rule_id: r.id.clone(),
                rule_name: r.name.clone(),
                kind: kind.into(),
                subject: key.1.clone(),
                severity: r.severity,
                labels: rules::labels(r),
                started_at: Some(foureyes_proto::timestamp_from_ms(now)),
                ..Default::default()
            };
            self.active.insert(
                key.clone(),
                Active {
                    track: Track::default(),
                    alert,
                },
            );
        }
        let Some(mut a) = self.active.remove(&key) else {
            return;
        };
        let steps = a.track.observe(o.verdict, now, Hold::of(r));
        if o.verdict != Verdict::NoData {
            a.alert.summary = o.summary;
            a.alert.values = o.values.into_iter().collect();
        }
        a.alert.rule_name = r.name.clone();
        a.alert.severity = r.severity;
        a.alert.labels = rules::labels(r);
        for (from, to) in steps {
            self.transition(&mut a.alert, from, to, &r.notifiers, now);
        }
        if a.track.state != pb::AlertState::Resolved {
            self.active.insert(key, a);
        }
    }

    /// Time-based holds and silence changes of active alerts.
    fn tick(&mut self, now: i64) {
        let holds: HashMap<&str, (Hold, &Vec<String>)> = self
            .rules
            .iter()
            .map(|r| (r.id.as_str(), (Hold::of(r), &r.notifiers)))
            .collect();
        let mut fired = Vec::new();
        let mut resilenced = Vec::new();
        for (k, a) in self.active.iter_mut() {
            if let Some((h, n)) = holds.get(k.0.as_str())
                && let Some(step) = a.track.tick(now, *h)
            {
                fired.push((k.clone(), step, (*n).clone()));
                continue;
            }
            let s = self
                .silences
                .iter()
                .any(|s| rules::silence_matches(s, &a.alert, now));
            if s != a.alert.silenced {
                resilenced.push(k.clone());
            }
        }
        for (k, (from, to), notifiers) in fired {
            if let Some(mut a) = self.active.remove(&k) {
                self.transition(&mut a.alert, from, to, &notifiers, now);
                self.active.insert(k, a);
            }
        }
        for k in resilenced {
            if let Some(mut a) = self.active.remove(&k) {
                a.alert.silenced = self.silenced(&a.alert, now);
                a.alert.updated_at = Some(foureyes_proto::timestamp_from_ms(now));
                if let Err(e) = self.c.alerts.store.save_alert(&sys(), &a.alert, None) {
                    tracing::warn!(error = %e, "alerts: cannot save alert");
                }
                self.active.insert(k, a);
            }
        }
    }

    fn transition(
        &mut self,
        a: &mut pb::Alert,
        from: pb::AlertState,
        to: pb::AlertState,
        notifiers: &[String],
        now: i64,
    ) {
        let at = foureyes_proto::timestamp_from_ms(now);
        a.state = to as i32;
        a.updated_at = Some(at);
        match to {
            pb::AlertState::Firing => a.fired_at = Some(at),
            pb::AlertState::Resolved => a.resolved_at = Some(at),
            _ => {}
        }
        a.silenced = self.silenced(a, now);
        // Users hear of firing, and of the all-clear of what fired; pending comes and goes quietly.
        let worth_telling = to == pb::AlertState::Firing
            || (to == pb::AlertState::Resolved && from == pb::AlertState::Firing);
        let t = pb::AlertTransition {
            alert_id: a.id.clone(),
            rule_id: a.rule_id.clone(),
            rule_name: a.rule_name.clone(),
            org: a.org.clone(),
            team: a.team.clone(),
            subject: a.subject.clone(),
            from: from as i32,
            to: to as i32,
            at: Some(at),
            notify: worth_telling && !a.silenced,
            notifiers: notifiers.to_vec(),
            alert: Some(a.clone()),
        };
        if let Err(e) = self.c.alerts.store.save_alert(&sys(), a, Some(&t)) {
            tracing::error!(error = %e, alert = %a.id, "alerts: cannot save a transition");
        }
        tracing::info!(
            alert = %a.id, rule = %a.rule_name, org = %a.org, subject = %a.subject,
            from = from.as_str_name(), to = to.as_str_name(), silenced = a.silenced,
            "alert transition"
        );
        let counters = &self.c.alerts.counters;
        counters.transitions.fetch_add(1, Ordering::Relaxed);
        if worth_telling && a.silenced {
            counters
                .silenced_transitions
                .fetch_add(1, Ordering::Relaxed);
        }
        self.c.stream.publish_alert(&t);
        self.c.alerts.emit(Arc::new(t));
    }

    fn count(&self) {
        let (mut p, mut f) = (0, 0);
        for a in self.active.values() {
            match a.track.state {
                pb::AlertState::Pending => p += 1,
                pb::AlertState::Firing => f += 1,
                _ => {}
            }
        }
        let c = &self.c.alerts.counters;
        c.pending.store(p, Ordering::Relaxed);
        c.firing.store(f, Ordering::Relaxed);
    }
}
