//! Rule conditions as pure functions over plain data, the hysteresis, and rule validation.
//!
//! "No data is not down": result rules look only at agents that reported in the window; with no
//! agent reporting the verdict is [`Verdict::NoData`], which leaves the alert as it is. Only the
//! stale rule fires on silence, and it says STALE, never 100 % loss.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use foureyes_proto::v1 as pb;
use foureyes_store::IpPrefix;

use super::{OriginValidator, RpkiState};

/// Default window of result rules.
pub const DEFAULT_WINDOW_S: u32 = 60;
/// Longest window a result rule may ask for (the engine keeps that much in memory per agent).
pub const MAX_WINDOW_S: u32 = 3600;
/// Samples kept per (test, agent) at most, whatever the window.
pub const MAX_SAMPLES: usize = 10_000;
pub const DEFAULT_MISSED_INTERVALS: u32 = 3;
/// Subjects one rule may report per evaluation (a `within 0.0.0.0/0` rule would list everything).
pub const MAX_SUBJECTS_LISTED: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    Clear,
    /// Nothing to decide on (no agent reported): the alert stays as it is.
    NoData,
}

/// One evaluation of one subject.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub summary: String,
    pub values: BTreeMap<String, f64>,
}

impl Outcome {
    fn new(verdict: Verdict, summary: String) -> Self {
        Self {
            verdict,
            summary,
            values: BTreeMap::new(),
        }
    }
    fn with(mut self, k: &str, v: f64) -> Self {
        self.values.insert(k.to_string(), v);
        self
    }
}

/// One result as the result rules see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// The agent's sequence number: a row read twice (preload, then follow) is seen once.
    pub seq: u64,
    pub received_ms: i64,
    pub ok: bool,
    pub latency_ms: f64,
    pub loss: f64,
}

impl Sample {
    pub fn of(r: &pb::ProbeResult) -> Self {
        Self {
            seq: r.seq,
            received_ms: r
                .received_at
                .as_ref()
                .map(foureyes_proto::timestamp_ms)
                .unwrap_or(0),
            ok: r.status == pb::Status::Ok as i32,
            latency_ms: r.latency_ms,
            loss: r.loss.clamp(0.0, 1.0),
        }
    }
}

pub fn kind_name(k: &pb::alert_rule::Kind) -> &'static str {
    use pb::alert_rule::Kind;
    match k {
        Kind::Latency(_) => "latency",
        Kind::Loss(_) => "loss",
        Kind::Unreachable(_) => "unreachable",
        Kind::Stale(_) => "stale",
        Kind::Visibility(_) => "visibility",
        Kind::OriginChange(_) => "origin_change",
        Kind::MoreSpecific(_) => "more_specific",
        Kind::UnexpectedAs(_) => "unexpected_as",
        Kind::SessionDown(_) => "session_down",
        Kind::RpkiInvalid(_) => "rpki_invalid",
        Kind::PathMismatch(_) => "path_mismatch",
    }
}

fn window_ms(w: u32) -> i64 {
    i64::from(if w == 0 { DEFAULT_WINDOW_S } else { w }) * 1000
}

fn in_window(s: &[Sample], now: i64, w: u32) -> impl Iterator<Item = &Sample> {
    let from = now - window_ms(w);
    s.iter().filter(move |x| x.received_ms >= from)
}

/// Nearest-rank percentile of unsorted values; `None` when empty.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values.get(rank - 1).copied()
}

/// Per-agent votes → the target's verdict with K of N agreement.
fn agree(failing: usize, reporting: usize, min_agents: u32) -> Verdict {
    if reporting == 0 {
        return Verdict::NoData;
    }
    if failing >= (min_agents.max(1) as usize) {
        Verdict::Holds
    } else {
        Verdict::Clear
    }
}

type ByAgent<'a> = &'a BTreeMap<String, Vec<Sample>>;

pub fn latency(r: &pb::LatencyRule, by_agent: ByAgent, now: i64) -> Outcome {
    let p = if r.percentile == pb::Percentile::P95 as i32 {
        (0.95, "p95")
    } else {
        (0.5, "p50")
    };
    let (mut failing, mut reporting, mut worst) = (0, 0, 0.0f64);
    for s in by_agent.values() {
        let mut v: Vec<f64> = in_window(s, now, r.window_seconds)
            .filter(|x| x.ok)
            .map(|x| x.latency_ms)
            .collect();
        if let Some(q) = percentile(&mut v, p.0) {
            reporting += 1;
            worst = worst.max(q);
            if q > r.threshold_ms {
                failing += 1;
            }
        }
    }
    let v = agree(failing, reporting, r.min_agents);
    Outcome::new(
        v,
        format!(
            "{} latency {worst:.1} ms (threshold {} ms) on {failing} of {reporting} agents",
            p.1, r.threshold_ms
        ),
    )
    .with(&format!("{}_ms", p.1), worst)
    .with("failing_agents", failing as f64)
    .with("reporting_agents", reporting as f64)
}

pub fn loss(r: &pb::LossRule, by_agent: ByAgent, now: i64) -> Outcome {
    let (mut failing, mut reporting, mut worst) = (0, 0, 0.0f64);
    for s in by_agent.values() {
        let v: Vec<f64> = in_window(s, now, r.window_seconds)
            .map(|x| x.loss)
            .collect();
        if v.is_empty() {
            continue;
        }
        reporting += 1;
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        worst = worst.max(mean);
        if mean > r.threshold {
            failing += 1;
        }
    }
    Outcome::new(
        agree(failing, reporting, r.min_agents),
        format!(
            "loss {:.0} % (threshold {:.0} %) on {failing} of {reporting} agents",
            worst * 100.0,
            r.threshold * 100.0
        ),
    )
    .with("loss", worst)
    .with("failing_agents", failing as f64)
    .with("reporting_agents", reporting as f64)
}

pub fn unreachable(r: &pb::UnreachableRule, by_agent: ByAgent, now: i64) -> Outcome {
    let (mut failing, mut reporting) = (0, 0);
    for s in by_agent.values() {
        let mut any = false;
        let mut ok = false;
        for x in in_window(s, now, r.window_seconds) {
            any = true;
            ok |= x.ok;
        }
        if any {
            reporting += 1;
            if !ok {
                failing += 1;
            }
        }
    }
    Outcome::new(
        agree(failing, reporting, r.min_agents),
        format!("unreachable from {failing} of {reporting} agents"),
    )
    .with("failing_agents", failing as f64)
    .with("reporting_agents", reporting as f64)
}

/// An assigned agent that has not reported for `missed` intervals. `since_ms` is the latest of
/// its last result, the agent's enrollment and the engine's start (no history is not silence).
pub fn stale(r: &pb::StaleRule, since_ms: i64, interval_ms: u32, now: i64) -> Outcome {
    let missed = if r.missed_intervals == 0 {
        DEFAULT_MISSED_INTERVALS
    } else {
        r.missed_intervals
    };
    let limit = i64::from(missed) * i64::from(interval_ms.max(1));
    let silent = (now - since_ms).max(0);
    let verdict = if silent > limit {
        Verdict::Holds
    } else {
        Verdict::Clear
    };
    Outcome::new(
        verdict,
        format!(
            "STALE: no results for {:.0} s ({missed} intervals of {} ms); no data, not loss",
            silent as f64 / 1e3,
            interval_ms
        ),
    )
    .with("silent_seconds", silent as f64 / 1e3)
    .with(
        "missed_intervals",
        silent as f64 / f64::from(interval_ms.max(1)),
    )
}

/// Listener peer identity of a route: the listener and the BGP peer (with its source).
pub fn peer_of(r: &pb::Route) -> String {
    let p = r.peer.as_ref();
    format!(
        "{}/{}/{}",
        r.agent_id,
        p.map(|p| p.address.as_str()).unwrap_or(""),
        p.map(|p| p.source).unwrap_or(0)
    )
}

fn origin_of(r: &pb::Route) -> u32 {
    r.attributes.as_ref().map(|a| a.origin_as).unwrap_or(0)
}

fn flat_path(r: &pb::Route) -> Vec<u32> {
    r.attributes
        .as_ref()
        .map(|a| {
            a.as_path
                .iter()
                .flat_map(|s| s.asns.iter().copied())
                .collect()
        })
        .unwrap_or_default()
}

fn listed<T: std::fmt::Display>(v: &BTreeSet<T>) -> String {
    let mut s: Vec<String> = v
        .iter()
        .take(MAX_SUBJECTS_LISTED)
        .map(|x| x.to_string())
        .collect();
    if v.len() > MAX_SUBJECTS_LISTED {
        s.push(format!("and {} more", v.len() - MAX_SUBJECTS_LISTED));
    }
    s.join(", ")
}

/// `exact` are the routes of exactly the rule's prefix; `peers_known` the listener peers seen
/// holding it since the engine started (the M of "N of M").
pub fn visibility(r: &pb::VisibilityRule, exact: &[pb::Route], peers_known: usize) -> Outcome {
    let seen: BTreeSet<String> = exact.iter().map(peer_of).collect();
    let need = r.min_peers.max(1) as usize;
    let v = if seen.len() < need {
        Verdict::Holds
    } else {
        Verdict::Clear
    };
    Outcome::new(
        v,
        format!(
            "{} seen by {} of {} listener peers (need {need})",
            r.prefix,
            seen.len(),
            peers_known.max(seen.len())
        ),
    )
    .with("seen_by", seen.len() as f64)
    .with("peers_known", peers_known.max(seen.len()) as f64)
}

/// `baseline` is the first origin set seen when no origins are configured; it is set here.
pub fn origin_change(
    r: &pb::OriginChangeRule,
    exact: &[pb::Route],
    baseline: &mut Option<BTreeSet<u32>>,
) -> Outcome {
    let origins: BTreeSet<u32> = exact.iter().map(origin_of).filter(|o| *o != 0).collect();
    if origins.is_empty() {
        return Outcome::new(Verdict::NoData, format!("{} is not announced", r.prefix));
    }
    let expected: BTreeSet<u32> = if r.expected_origins.is_empty() {
        baseline.get_or_insert_with(|| origins.clone()).clone()
    } else {
        r.expected_origins.iter().copied().collect()
    };
    let bad: BTreeSet<u32> = origins.difference(&expected).copied().collect();
    let v = if bad.is_empty() {
        Verdict::Clear
    } else {
        Verdict::Holds
    };
    Outcome::new(
        v,
        format!(
            "{} originated by AS {} (expected AS {}): possible hijack",
            r.prefix,
            listed(&origins),
            listed(&expected)
        ),
    )
    .with("unexpected_origins", bad.len() as f64)
    .with("origin_as", bad.iter().next().copied().unwrap_or(0) as f64)
}

/// `within` are the routes inside the watched prefix (itself included).
pub fn more_specific(r: &pb::MoreSpecificRule, watched: IpPrefix, within: &[pb::Route]) -> Outcome {
    let allowed: BTreeSet<String> = r
        .allowed
        .iter()
        .filter_map(|a| IpPrefix::parse(a).ok().map(|p| p.to_string()))
        .collect();
    let found: BTreeSet<String> = within
        .iter()
        .filter_map(|x| IpPrefix::parse(&x.prefix).ok())
        .filter(|p| p.len > watched.len)
        .map(|p| p.to_string())
        .filter(|p| !allowed.contains(p))
        .collect();
    let v = if found.is_empty() {
        Verdict::Clear
    } else {
        Verdict::Holds
    };
    Outcome::new(
        v,
        format!(
            "unexpected more-specifics of {}: {}",
            r.prefix,
            listed(&found)
        ),
    )
    .with("more_specifics", found.len() as f64)
}

/// The AS adjacent to us: the first AS of the path after any leading `local_as`.
pub fn adjacent_as(path: &[u32], local_as: u32) -> Option<u32> {
    path.iter()
        .copied()
        .find(|a| local_as == 0 || *a != local_as)
}

pub fn unexpected_as(r: &pb::UnexpectedAsRule, within: &[pb::Route]) -> Outcome {
    let allowed: BTreeSet<u32> = r.allowed_upstreams.iter().copied().collect();
    let mut bad = BTreeSet::new();
    let mut leaked = BTreeSet::new();
    for x in within {
        if let Some(a) = adjacent_as(&flat_path(x), r.local_as)
            && !allowed.contains(&a)
        {
            bad.insert(a);
            leaked.insert(x.prefix.clone());
        }
    }
    let v = if bad.is_empty() {
        Verdict::Clear
    } else {
        Verdict::Holds
    };
    Outcome::new(
        v,
        format!(
            "routes within {} via unexpected AS {} (allowed: {}): possible leak; prefixes {}",
            r.prefix,
            listed(&bad),
            listed(&allowed),
            listed(&leaked)
        ),
    )
    .with(
        "unexpected_as",
        bad.iter().next().copied().unwrap_or(0) as f64,
    )
    .with("routes", leaked.len() as f64)
}

pub fn rpki_invalid(
    r: &pb::RpkiInvalidRule,
    within: &[pb::Route],
    validator: Option<&dyn OriginValidator>,
) -> Outcome {
    let Some(val) = validator else {
        return Outcome::new(Verdict::NoData, "no RPKI validator configured".into());
    };
    let mut invalid = BTreeSet::new();
    let mut unknown = 0usize;
    for x in within {
        let Ok(p) = IpPrefix::parse(&x.prefix) else {
            continue;
        };
        match val.validate(p.addr, p.len, origin_of(x)) {
            RpkiState::Invalid => {
                invalid.insert(format!("{} AS{}", p, origin_of(x)));
            }
            RpkiState::Unknown => unknown += 1,
            RpkiState::Valid | RpkiState::NotFound => {}
        }
    }
    let v = if !invalid.is_empty() {
        Verdict::Holds
    } else if unknown > 0 && unknown == within.len() {
        Verdict::NoData
    } else {
        Verdict::Clear
    };
    Outcome::new(
        v,
        format!(
            "RPKI invalid routes within {}: {}",
            r.prefix,
            listed(&invalid)
        ),
    )
    .with("invalid_routes", invalid.len() as f64)
}

/// Per-agent path checks (`pathcheck::checks`) → the test's verdict with K of N agreement.
pub fn path_mismatch(r: &pb::PathMismatchRule, checks: &[pb::PathCheck]) -> Outcome {
    let (mut failing, mut reporting) = (0, 0);
    let mut why = Vec::new();
    for c in checks {
        match pb::PathVerdict::try_from(c.verdict).unwrap_or_default() {
            pb::PathVerdict::Agree => reporting += 1,
            pb::PathVerdict::Mismatch => {
                reporting += 1;
                failing += 1;
                if why.len() < MAX_SUBJECTS_LISTED {
                    why.push(format!("{}: {}", c.agent_id, c.reason));
                }
            }
            _ => {}
        }
    }
    let v = agree(failing, reporting, r.min_agents);
    let summary = if failing > 0 {
        format!(
            "forward path of {} disagrees with BGP on {failing} of {reporting} agents: {}",
            r.test_id,
            why.join("; ")
        )
    } else {
        format!(
            "forward path of {} agrees with BGP on {reporting} agents",
            r.test_id
        )
    };
    Outcome::new(v, summary)
        .with("failing_agents", failing as f64)
        .with("reporting_agents", reporting as f64)
}

/// Checks a rule before it is stored (API and rules file). Messages name the field.
pub fn validate(r: &pb::AlertRule) -> Result<(), String> {
    use pb::alert_rule::Kind;
    if r.name.trim().is_empty() || r.name.len() > 200 {
        return Err("name: 1 to 200 characters".into());
    }
    if r.fire_after > 1000 || r.clear_after > 1000 || r.fire_after_seconds > 86_400 {
        return Err("fireAfter/clearAfter at most 1000, fireAfterSeconds at most 86400".into());
    }
    if r.notifiers.len() > 20 || r.labels.len() > 20 {
        return Err("at most 20 notifiers and 20 labels".into());
    }
    let window = |w: u32| {
        if w > MAX_WINDOW_S {
            Err(format!("windowSeconds at most {MAX_WINDOW_S}"))
        } else {
            Ok(())
        }
    };
    let test = |t: &str| {
        if t.is_empty() {
            Err("testId is required".to_string())
        } else {
            Ok(())
        }
    };
    let prefix = |p: &str| IpPrefix::parse(p).map(|_| ());
    match r
        .kind
        .as_ref()
        .ok_or("a rule needs a kind (latency, loss, ...)")?
    {
        Kind::Latency(k) => {
            test(&k.test_id)?;
            window(k.window_seconds)?;
            if k.threshold_ms.is_nan() || k.threshold_ms <= 0.0 {
                return Err("latency.thresholdMs must be above 0".into());
            }
        }
        Kind::Loss(k) => {
            test(&k.test_id)?;
            window(k.window_seconds)?;
            if !(0.0..1.0).contains(&k.threshold) {
                return Err("loss.threshold must be in [0, 1)".into());
            }
        }
        Kind::Unreachable(k) => {
            test(&k.test_id)?;
            window(k.window_seconds)?;
        }
        Kind::Stale(k) => {
            if k.missed_intervals > 10_000 {
                return Err("stale.missedIntervals at most 10000".into());
            }
        }
        Kind::Visibility(k) => prefix(&k.prefix)?,
        Kind::OriginChange(k) => prefix(&k.prefix)?,
        Kind::MoreSpecific(k) => {
            prefix(&k.prefix)?;
            for a in &k.allowed {
                prefix(a)?;
            }
        }
        Kind::UnexpectedAs(k) => {
            prefix(&k.prefix)?;
            if k.allowed_upstreams.is_empty() {
                return Err("unexpectedAs.allowedUpstreams must name at least one AS".into());
            }
        }
        Kind::SessionDown(k) => {
            if !k.peer.is_empty() && k.peer.parse::<std::net::IpAddr>().is_err() {
                return Err(format!(
                    "sessionDown.peer {:?} is not an IP address",
                    k.peer
                ));
            }
        }
        Kind::RpkiInvalid(k) => prefix(&k.prefix)?,
        Kind::PathMismatch(k) => {
            test(&k.test_id)?;
            if k.local_asns.len() > 100 || k.ignore_asns.len() > 100 {
                return Err("pathMismatch: at most 100 localAsns and 100 ignoreAsns".into());
            }
            if k.max_age_seconds > 86_400 {
                return Err("pathMismatch.maxAgeSeconds at most 86400".into());
            }
        }
    }
    Ok(())
}

/// Hold settings of a rule, with defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    pub fire_after: u32,
    pub fire_after_ms: i64,
    pub clear_after: u32,
}

impl Hold {
    pub fn of(r: &pb::AlertRule) -> Self {
        Self {
            fire_after: r.fire_after.max(1),
            fire_after_ms: i64::from(r.fire_after_seconds) * 1000,
            clear_after: r.clear_after.max(1),
        }
    }
}

/// The hysteresis of one (rule, subject): pending → firing → resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub state: pb::AlertState,
    /// Consecutive evaluations the condition held (pending) or cleared (firing).
    pub holds: u32,
    pub clears: u32,
    /// When the condition started to hold.
    pub since_ms: i64,
}

/// (from, to) state changes of one step.
pub type Steps = Vec<(pb::AlertState, pb::AlertState)>;

impl Default for Track {
    fn default() -> Self {
        Self {
            state: pb::AlertState::Unspecified,
            holds: 0,
            clears: 0,
            since_ms: 0,
        }
    }
}

impl Track {
    /// One evaluation. `NoData` changes nothing.
    pub fn observe(&mut self, v: Verdict, now: i64, h: Hold) -> Steps {
        use pb::AlertState as S;
        let mut out = Vec::new();
        match (v, self.state) {
            (Verdict::NoData, _) => {}
            (Verdict::Holds, S::Unspecified | S::Resolved) => {
                *self = Track {
                    state: S::Pending,
                    holds: 1,
                    clears: 0,
                    since_ms: now,
                };
                out.push((S::Unspecified, S::Pending));
                out.extend(self.tick(now, h));
            }
            (Verdict::Holds, S::Pending) => {
                self.holds = self.holds.saturating_add(1);
                out.extend(self.tick(now, h));
            }
            (Verdict::Holds, S::Firing) => self.clears = 0,
            (Verdict::Clear, S::Pending) => {
                self.state = S::Resolved;
                out.push((S::Pending, S::Resolved));
            }
            (Verdict::Clear, S::Firing) => {
                self.clears = self.clears.saturating_add(1);
                if self.clears >= h.clear_after {
                    self.state = S::Resolved;
                    out.push((S::Firing, S::Resolved));
                }
            }
            (Verdict::Clear, _) => {}
        }
        out
    }

    /// Time passing: a pending alert whose duration has been met fires.
    pub fn tick(&mut self, now: i64, h: Hold) -> Option<(pb::AlertState, pb::AlertState)> {
        if self.state == pb::AlertState::Pending
            && self.holds >= h.fire_after
            && now - self.since_ms >= h.fire_after_ms
        {
            self.state = pb::AlertState::Firing;
            self.clears = 0;
            return Some((pb::AlertState::Pending, pb::AlertState::Firing));
        }
        None
    }
}

/// Whether a live silence matches the alert: every matcher it sets must match.
pub fn silence_matches(s: &pb::Silence, a: &pb::Alert, now: i64) -> bool {
    let live = s
        .expires_at
        .as_ref()
        .map(foureyes_proto::timestamp_ms)
        .is_some_and(|e| e > now);
    live && s.org == a.org
        && (s.team.is_empty() || s.team == a.team)
        && (s.rule_id.is_empty() || s.rule_id == a.rule_id || s.rule_id == a.rule_name)
        && (s.subject.is_empty() || s.subject == a.subject)
        && s.labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
}

/// Labels as the alert carries them (sorted for stable output).
pub fn labels(r: &pb::AlertRule) -> HashMap<String, String> {
    r.labels.clone()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pb::AlertState as S;

    fn s(ms: i64, ok: bool, lat: f64, loss: f64) -> Sample {
        Sample {
            seq: ms as u64,
            received_ms: ms,
            ok,
            latency_ms: lat,
            loss,
        }
    }

    fn agents(v: &[(&str, Vec<Sample>)]) -> BTreeMap<String, Vec<Sample>> {
        v.iter().map(|(a, s)| (a.to_string(), s.clone())).collect()
    }

    #[test]
    fn path_mismatch_needs_k_agents_and_ignores_no_data() {
        let c = |agent: &str, v: pb::PathVerdict| pb::PathCheck {
            agent_id: agent.into(),
            verdict: v as i32,
            reason: format!("{agent} says so"),
            ..Default::default()
        };
        use pb::PathVerdict as P;
        let one = pb::PathMismatchRule {
            test_id: "t1".into(),
            ..Default::default()
        };
        let two = pb::PathMismatchRule {
            min_agents: 2,
            ..one.clone()
        };
        let checks = [c("n1", P::Mismatch), c("n2", P::Agree), c("n3", P::NoData)];
        let o = path_mismatch(&one, &checks);
        assert_eq!(o.verdict, Verdict::Holds);
        assert!(o.summary.contains("n1: n1 says so"), "{}", o.summary);
        assert_eq!(o.values.get("reporting_agents"), Some(&2.0));
        assert_eq!(path_mismatch(&two, &checks).verdict, Verdict::Clear);
        assert_eq!(
            path_mismatch(&one, &[c("n3", P::NoData)]).verdict,
            Verdict::NoData
        );
        assert_eq!(path_mismatch(&one, &[]).verdict, Verdict::NoData);
    }

    #[test]
    fn hysteresis_fires_after_n_and_resolves_after_m() {
        let h = Hold {
            fire_after: 3,
            fire_after_ms: 0,
            clear_after: 2,
        };
        let mut t = Track::default();
        assert_eq!(
            t.observe(Verdict::Holds, 0, h),
            vec![(S::Unspecified, S::Pending)]
        );
        assert!(t.observe(Verdict::NoData, 1, h).is_empty());
        assert!(t.observe(Verdict::Holds, 2, h).is_empty());
        assert_eq!(
            t.observe(Verdict::Holds, 3, h),
            vec![(S::Pending, S::Firing)]
        );
        assert!(t.observe(Verdict::Clear, 4, h).is_empty());
        // A hold in between starts the clear count over.
        assert!(t.observe(Verdict::Holds, 5, h).is_empty());
        assert!(t.observe(Verdict::Clear, 6, h).is_empty());
        assert_eq!(
            t.observe(Verdict::Clear, 7, h),
            vec![(S::Firing, S::Resolved)]
        );
        // A pending alert whose condition goes away resolves without firing.
        let mut t = Track::default();
        t.observe(Verdict::Holds, 0, h);
        assert_eq!(
            t.observe(Verdict::Clear, 1, h),
            vec![(S::Pending, S::Resolved)]
        );
        // N = 1 fires on the first evaluation.
        let one = Hold {
            fire_after: 1,
            fire_after_ms: 0,
            clear_after: 1,
        };
        let mut t = Track::default();
        assert_eq!(
            t.observe(Verdict::Holds, 0, one),
            vec![(S::Unspecified, S::Pending), (S::Pending, S::Firing)]
        );
    }

    #[test]
    fn a_duration_hold_fires_on_a_tick() {
        let h = Hold {
            fire_after: 1,
            fire_after_ms: 10_000,
            clear_after: 1,
        };
        let mut t = Track::default();
        assert_eq!(
            t.observe(Verdict::Holds, 1_000, h),
            vec![(S::Unspecified, S::Pending)]
        );
        assert_eq!(t.tick(5_000, h), None);
        assert_eq!(t.tick(11_000, h), Some((S::Pending, S::Firing)));
    }

    #[test]
    fn latency_needs_k_of_n_agents_and_ignores_silent_ones() {
        let r = pb::LatencyRule {
            test_id: "t".into(),
            percentile: pb::Percentile::P95 as i32,
            threshold_ms: 100.0,
            window_seconds: 10,
            min_agents: 2,
        };
        let now = 100_000;
        let slow: Vec<Sample> = (0..20)
            .map(|i| s(now - i * 100, true, 150.0, 0.0))
            .collect();
        let fast: Vec<Sample> = (0..20).map(|i| s(now - i * 100, true, 10.0, 0.0)).collect();
        let old_slow = vec![s(now - 60_000, true, 500.0, 0.0)];
        assert_eq!(
            latency(
                &r,
                &agents(&[("a", slow.clone()), ("b", fast.clone())]),
                now
            )
            .verdict,
            Verdict::Clear
        );
        let o = latency(
            &r,
            &agents(&[("a", slow.clone()), ("b", slow.clone())]),
            now,
        );
        assert_eq!(o.verdict, Verdict::Holds);
        assert_eq!(o.values["p95_ms"], 150.0);
        // Results outside the window do not count; no agent in the window is no data.
        assert_eq!(
            latency(&r, &agents(&[("a", old_slow)]), now).verdict,
            Verdict::NoData
        );
        // p50 vs p95: one slow result in twenty moves p95 only.
        let mut mixed = fast.clone();
        mixed[0].latency_ms = 900.0;
        let mut r1 = r.clone();
        r1.min_agents = 1;
        r1.percentile = pb::Percentile::P50 as i32;
        assert_eq!(
            latency(&r1, &agents(&[("a", mixed.clone())]), now).verdict,
            Verdict::Clear
        );
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
    }

    #[test]
    fn loss_and_unreachable() {
        let now = 50_000;
        let lossy = vec![s(now, false, 0.0, 1.0), s(now - 1, true, 1.0, 0.2)];
        let fine = vec![s(now, true, 1.0, 0.0)];
        let r = pb::LossRule {
            test_id: "t".into(),
            threshold: 0.5,
            window_seconds: 10,
            min_agents: 1,
        };
        assert_eq!(
            loss(&r, &agents(&[("a", lossy.clone())]), now).verdict,
            Verdict::Holds
        );
        assert_eq!(
            loss(&r, &agents(&[("a", fine.clone())]), now).verdict,
            Verdict::Clear
        );
        assert_eq!(loss(&r, &agents(&[]), now).verdict, Verdict::NoData);
        let u = pb::UnreachableRule {
            test_id: "t".into(),
            window_seconds: 10,
            min_agents: 2,
        };
        let dead = vec![s(now, false, 0.0, 1.0)];
        assert_eq!(
            unreachable(
                &u,
                &agents(&[("a", dead.clone()), ("b", fine.clone())]),
                now
            )
            .verdict,
            Verdict::Clear
        );
        assert_eq!(
            unreachable(
                &u,
                &agents(&[("a", dead.clone()), ("b", dead.clone())]),
                now
            )
            .verdict,
            Verdict::Holds
        );
        // Some OK run in the window: reachable.
        assert_eq!(
            unreachable(&u, &agents(&[("a", lossy.clone()), ("b", dead)]), now).verdict,
            Verdict::Clear
        );
    }

    #[test]
    fn stale_counts_intervals_and_says_stale() {
        let r = pb::StaleRule {
            test_id: String::new(),
            missed_intervals: 3,
        };
        assert_eq!(stale(&r, 0, 1000, 2_500).verdict, Verdict::Clear);
        let o = stale(&r, 0, 1000, 3_500);
        assert_eq!(o.verdict, Verdict::Holds);
        assert!(o.summary.starts_with("STALE"), "{}", o.summary);
        assert!(!o.values.contains_key("loss"));
    }

    fn route(agent: &str, peer: &str, prefix: &str, path: &[u32]) -> pb::Route {
        pb::Route {
            agent_id: agent.into(),
            peer: Some(pb::BgpPeer {
                address: peer.into(),
                ..Default::default()
            }),
            prefix: prefix.into(),
            attributes: Some(pb::RouteAttributes {
                as_path: vec![pb::AsPathSegment {
                    r#type: 2,
                    asns: path.to_vec(),
                }],
                origin_as: path.last().copied().unwrap_or(0),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn bgp_rules() {
        let p = "203.0.113.0/24";
        let a = route("l1", "192.0.2.1", p, &[65001, 64500]);
        let b = route("l1", "192.0.2.2", p, &[65002, 64500]);
        let vis = pb::VisibilityRule {
            prefix: p.into(),
            min_peers: 2,
        };
        assert_eq!(
            visibility(&vis, &[a.clone(), b.clone()], 2).verdict,
            Verdict::Clear
        );
        let o = visibility(&vis, std::slice::from_ref(&a), 2);
        assert_eq!(o.verdict, Verdict::Holds);
        assert_eq!(o.values["seen_by"], 1.0);
        assert_eq!(visibility(&vis, &[], 2).verdict, Verdict::Holds);

        let oc = pb::OriginChangeRule {
            prefix: p.into(),
            expected_origins: vec![],
        };
        let mut base = None;
        assert_eq!(
            origin_change(&oc, std::slice::from_ref(&a), &mut base).verdict,
            Verdict::Clear
        );
        let hijack = route("l1", "192.0.2.1", p, &[65001, 666]);
        assert_eq!(
            origin_change(&oc, std::slice::from_ref(&hijack), &mut base).verdict,
            Verdict::Holds
        );
        let fixed = pb::OriginChangeRule {
            prefix: p.into(),
            expected_origins: vec![666],
        };
        assert_eq!(
            origin_change(&fixed, &[hijack], &mut None).verdict,
            Verdict::Clear
        );
        assert_eq!(
            origin_change(&fixed, &[], &mut None).verdict,
            Verdict::NoData
        );

        let watched = IpPrefix::parse(p).unwrap();
        let ms = pb::MoreSpecificRule {
            prefix: p.into(),
            allowed: vec!["203.0.113.0/25".into()],
        };
        let m25 = route("l1", "192.0.2.1", "203.0.113.0/25", &[65001, 64500]);
        let m26 = route("l1", "192.0.2.1", "203.0.113.192/26", &[65001, 64500]);
        assert_eq!(
            more_specific(&ms, watched, &[a.clone(), m25]).verdict,
            Verdict::Clear
        );
        let o = more_specific(&ms, watched, &[a.clone(), m26]);
        assert_eq!(o.verdict, Verdict::Holds);
        assert!(o.summary.contains("203.0.113.192/26"), "{}", o.summary);

        let ua = pb::UnexpectedAsRule {
            prefix: p.into(),
            local_as: 65001,
            allowed_upstreams: vec![64500],
        };
        assert_eq!(adjacent_as(&[65001, 65001, 64500, 1], 65001), Some(64500));
        assert_eq!(
            unexpected_as(&ua, std::slice::from_ref(&a)).verdict,
            Verdict::Clear
        );
        let leak = route("l1", "192.0.2.1", p, &[65001, 64999, 64500]);
        assert_eq!(
            unexpected_as(&ua, &[a.clone(), leak]).verdict,
            Verdict::Holds
        );

        struct V;
        impl OriginValidator for V {
            fn validate(&self, _p: std::net::IpAddr, len: u8, origin: u32) -> RpkiState {
                if origin == 64500 && len <= 24 {
                    RpkiState::Valid
                } else if origin == 64500 {
                    RpkiState::Invalid
                } else {
                    RpkiState::NotFound
                }
            }
        }
        let rr = pb::RpkiInvalidRule { prefix: p.into() };
        assert_eq!(
            rpki_invalid(&rr, std::slice::from_ref(&a), Some(&V)).verdict,
            Verdict::Clear
        );
        let too_long = route("l1", "192.0.2.1", "203.0.113.0/25", &[65001, 64500]);
        assert_eq!(
            rpki_invalid(&rr, &[a.clone(), too_long], Some(&V)).verdict,
            Verdict::Holds
        );
        assert_eq!(rpki_invalid(&rr, &[a], None).verdict, Verdict::NoData);
    }

    #[test]
    fn silences_match_on_rule_subject_labels_and_expire() {
        let a = pb::Alert {
            org: "acme".into(),
            rule_id: "r-1".into(),
            rule_name: "lat".into(),
            subject: "t-1".into(),
            labels: [("svc".to_string(), "api".to_string())].into(),
            ..Default::default()
        };
        let mut s = pb::Silence {
            org: "acme".into(),
            rule_id: "lat".into(),
            labels: [("svc".to_string(), "api".to_string())].into(),
            expires_at: Some(foureyes_proto::timestamp_from_ms(1000)),
            ..Default::default()
        };
        assert!(silence_matches(&s, &a, 999));
        assert!(!silence_matches(&s, &a, 1000));
        s.subject = "t-2".into();
        assert!(!silence_matches(&s, &a, 0));
        s.subject.clear();
        s.org = "other".into();
        assert!(!silence_matches(&s, &a, 0));
    }

    #[test]
    fn validation_names_the_field() {
        let mut r = pb::AlertRule {
            name: "x".into(),
            ..Default::default()
        };
        assert!(validate(&r).unwrap_err().contains("kind"));
        r.kind = Some(pb::alert_rule::Kind::Visibility(pb::VisibilityRule {
            prefix: "10.0.0.0/33".into(),
            min_peers: 1,
        }));
        assert!(validate(&r).unwrap_err().contains("10.0.0.0/33"));
        r.kind = Some(pb::alert_rule::Kind::Loss(pb::LossRule {
            test_id: "t".into(),
            threshold: 2.0,
            ..Default::default()
        }));
        assert!(validate(&r).unwrap_err().contains("loss.threshold"));
    }
}
