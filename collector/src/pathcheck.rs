//! Traceroute vs AS path.
//!
//! A probe burst traces the route toward each touched test's target (the result is stored under
//! the derived test id `<test_id>#traceroute`, see `foureyes_probes::burst_traceroute`; a
//! traceroute test's own results count too). Each answered hop is mapped to the origin AS of its
//! longest matching prefix in the tenant's route table (what the listener's peers announce), and
//! the resulting AS sequence is compared with the AS_PATHs the peers hold toward the target.
//!
//! The comparison ([`compare`], written down in docs/alerts.md):
//! - traced sequence: the mapped hops' origin ASes in TTL order; unmapped hops (no covering route,
//!   or an origin of 0) and `ignore_asns` (IXP LANs) dropped; consecutive duplicates collapsed;
//! - each peer's path: its AS_PATH flattened (AS_SET members in place), `ignore_asns` dropped,
//!   prepends collapsed, preceded by `local_asns` (our own network, which an iBGP path leaves
//!   out);
//! - agree when the traced sequence is a subsequence of at least one peer's path (every traced AS
//!   is on that path, in the same order; ASes the trace did not see, e.g. silent transit, are
//!   fine); mismatch when it is a subsequence of none; no data when nothing was mapped or no peer
//!   has a route toward the target.
//!
//! The alert engine's `path_mismatch` rule and `GET /api/v1/tests/{id}/path-check` both call
//! [`checks`], with the caller's tenant scope.

use std::collections::BTreeMap;
use std::net::IpAddr;

use foureyes_proto::v1 as pb;
use foureyes_store::{IpPrefix, PrefixMatch, ResultFilter, RouteQuery, Scope, Store, StoreError};

/// Traceroutes older than this are not compared unless a rule says otherwise.
pub const DEFAULT_MAX_AGE_S: u32 = 900;
/// Results read per agent search, at most (traceroutes are rare: bursts are rate-limited).
const MAX_RESULTS: usize = 10_000;
const PAGE: usize = 1_000;
/// Hops mapped per traceroute, at most (the executor stops at 255).
const MAX_HOPS: usize = 255;

/// What the comparison ignores and allows, from a `path_mismatch` rule (or the API's defaults).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub local_asns: Vec<u32>,
    pub ignore_asns: Vec<u32>,
    pub max_age_s: u32,
}

impl Options {
    pub fn of(r: &pb::PathMismatchRule) -> Self {
        Options {
            local_asns: r.local_asns.clone(),
            ignore_asns: r.ignore_asns.clone(),
            max_age_s: r.max_age_seconds,
        }
    }

    fn max_age_ms(&self) -> i64 {
        i64::from(if self.max_age_s == 0 {
            DEFAULT_MAX_AGE_S
        } else {
            self.max_age_s
        }) * 1000
    }
}

/// Consecutive duplicates removed (AS_PATH prepends, several hops in one AS).
pub fn collapse(asns: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for a in asns {
        if out.last() != Some(&a) {
            out.push(a);
        }
    }
    out
}

/// The verdict for a traced AS sequence against the peers' paths (both already collapsed, with
/// ignored ASes removed; `local` is allowed before each path), and why.
pub fn compare(traced: &[u32], paths: &[Vec<u32>], local: &[u32]) -> (pb::PathVerdict, String) {
    if traced.is_empty() {
        return (
            pb::PathVerdict::NoData,
            "no traceroute hop maps to an AS".into(),
        );
    }
    if paths.is_empty() {
        return (pb::PathVerdict::NoData, "no route toward the target".into());
    }
    let mut best: Option<(usize, String)> = None;
    for p in paths {
        let allowed: Vec<u32> = local.iter().chain(p.iter()).copied().collect();
        // Greedy subsequence match: each traced AS at or after the previous one's position.
        let mut at = 0usize;
        let mut matched = 0usize;
        let mut why = None;
        for a in traced {
            match allowed.iter().skip(at).position(|x| x == a) {
                Some(i) => {
                    at += i;
                    matched += 1;
                }
                None => {
                    why = Some(if allowed.contains(a) {
                        format!("AS{a} is out of order on the AS_PATH {}", words(p))
                    } else {
                        format!("AS{a} is not on the AS_PATH {}", words(p))
                    });
                    break;
                }
            }
        }
        match why {
            None => {
                return (
                    pb::PathVerdict::Agree,
                    format!("traced {} follows the AS_PATH {}", words(traced), words(p)),
                );
            }
            Some(w) => {
                if best.as_ref().is_none_or(|(m, _)| matched > *m) {
                    best = Some((matched, w));
                }
            }
        }
    }
    let why = best.map(|(_, w)| w).unwrap_or_default();
    (
        pb::PathVerdict::Mismatch,
        format!("traced {}: {why}", words(traced)),
    )
}

fn words(asns: &[u32]) -> String {
    if asns.is_empty() {
        return "(empty)".into();
    }
    asns.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ")
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

fn host_prefix(a: IpAddr) -> IpPrefix {
    IpPrefix::new(a, if a.is_ipv4() { 32 } else { 128 })
}

/// The longest prefix covering `addr` in any peer's table and its origin AS (the most common
/// origin among peers holding that prefix; the lowest on a tie).
fn map_hop(store: &dyn Store, scope: &Scope, addr: IpAddr) -> Result<(String, u32), StoreError> {
    let q = RouteQuery {
        prefix: host_prefix(addr),
        how: PrefixMatch::Longest,
        agent_id: None,
        peer: None,
    };
    let routes = store.routes(scope, &q)?;
    let Some(best) = routes
        .iter()
        .filter_map(|r| IpPrefix::parse(&r.prefix).ok())
        .map(|p| p.len)
        .max()
    else {
        return Ok((String::new(), 0));
    };
    let mut prefix = String::new();
    let mut votes: BTreeMap<u32, usize> = BTreeMap::new();
    for r in &routes {
        if IpPrefix::parse(&r.prefix).is_ok_and(|p| p.len == best) {
            prefix = r.prefix.clone();
            let o = r.attributes.as_ref().map(|a| a.origin_as).unwrap_or(0);
            if o != 0 {
                *votes.entry(o).or_default() += 1;
            }
        }
    }
    let origin = votes
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(o, _)| *o)
        .unwrap_or(0);
    Ok((prefix, origin))
}

/// Each peer's longest route toward `dest`, as comparable paths.
fn as_paths(
    store: &dyn Store,
    scope: &Scope,
    dest: IpAddr,
    ignore: &[u32],
) -> Result<Vec<pb::PeerAsPath>, StoreError> {
    let q = RouteQuery {
        prefix: host_prefix(dest),
        how: PrefixMatch::Longest,
        agent_id: None,
        peer: None,
    };
    Ok(store
        .routes(scope, &q)?
        .iter()
        .map(|r| pb::PeerAsPath {
            listener_id: r.agent_id.clone(),
            peer: r
                .peer
                .as_ref()
                .map(|p| p.address.clone())
                .unwrap_or_default(),
            prefix: r.prefix.clone(),
            asns: collapse(flat_path(r).into_iter().filter(|a| !ignore.contains(a))),
        })
        .collect())
}

/// Compares one traceroute result with the routes the tenant's listeners hold now.
pub fn check_one(
    store: &dyn Store,
    scope: &Scope,
    test_id: &str,
    r: &pb::ProbeResult,
    opts: &Options,
) -> Result<pb::PathCheck, StoreError> {
    let mut out = pb::PathCheck {
        test_id: test_id.to_string(),
        trace_test_id: r.test_id.clone(),
        agent_id: r.agent_id.clone(),
        traced_at: r.sent_at.or(r.received_at),
        ..Default::default()
    };
    let Some(pb::probe_result::Detail::Traceroute(tr)) = &r.detail else {
        out.verdict = pb::PathVerdict::NoData as i32;
        out.reason = "not a traceroute result".into();
        return Ok(out);
    };
    out.destination = tr.destination.clone();
    for h in tr.hops.iter().take(MAX_HOPS) {
        let Ok(addr) = h.address.parse::<IpAddr>() else {
            // A silent hop (`*`): nothing to map.
            continue;
        };
        let (prefix, asn) = map_hop(store, scope, addr.to_canonical())?;
        out.hops.push(pb::PathHop {
            ttl: h.ttl,
            address: h.address.clone(),
            prefix,
            asn,
        });
    }
    out.traced_asns = collapse(
        out.hops
            .iter()
            .map(|h| h.asn)
            .filter(|a| *a != 0 && !opts.ignore_asns.contains(a)),
    );
    let Ok(dest) = tr.destination.parse::<IpAddr>() else {
        out.verdict = pb::PathVerdict::NoData as i32;
        out.reason = "the traceroute has no destination address".into();
        return Ok(out);
    };
    out.as_paths = as_paths(store, scope, dest.to_canonical(), &opts.ignore_asns)?;
    let paths: Vec<Vec<u32>> = out.as_paths.iter().map(|p| p.asns.clone()).collect();
    let (v, why) = compare(&out.traced_asns, &paths, &opts.local_asns);
    out.verdict = v as i32;
    out.reason = why;
    Ok(out)
}

/// The latest traceroute of `test_id` per agent (the burst's derived series and the test's own
/// results, if it is a traceroute test) within the options' age, each compared with the current
/// routes. Agents sorted by id.
pub fn checks(
    store: &dyn Store,
    scope: &Scope,
    test_id: &str,
    opts: &Options,
    now_ms: i64,
) -> Result<Vec<pb::PathCheck>, StoreError> {
    let mut latest: BTreeMap<String, pb::ProbeResult> = BTreeMap::new();
    let ts = |r: &pb::ProbeResult| {
        r.sent_at
            .as_ref()
            .or(r.received_at.as_ref())
            .map(foureyes_proto::timestamp_ms)
            .unwrap_or(0)
    };
    // A traceroute test's own runs count; other tests' runs are not read at all.
    let own = store.get_test(scope, test_id)?.is_some_and(|t| {
        matches!(
            t.config.and_then(|c| c.kind),
            Some(pb::probe_config::Kind::Traceroute(_))
        )
    });
    let mut ids = vec![foureyes_probes::trace_test_id(test_id)];
    if own {
        ids.push(test_id.to_string());
    }
    for id in ids {
        let f = ResultFilter {
            test_id: Some(id),
            agent_id: None,
            from_ms: Some(now_ms - opts.max_age_ms()),
            to_ms: None,
        };
        let mut after = None;
        let mut read = 0usize;
        loop {
            let page = store.results(scope, &f, after, PAGE)?;
            read += page.results.len();
            for r in page.results {
                if !matches!(r.detail, Some(pb::probe_result::Detail::Traceroute(_))) {
                    continue;
                }
                if latest.get(&r.agent_id).is_none_or(|old| ts(old) <= ts(&r)) {
                    latest.insert(r.agent_id.clone(), r);
                }
            }
            match page.next {
                Some(c) if read < MAX_RESULTS => after = Some(c),
                _ => break,
            }
        }
    }
    latest
        .values()
        .map(|r| check_one(store, scope, test_id, r, opts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::PathVerdict as V;

    #[test]
    fn collapse_removes_prepends_and_repeated_hops() {
        assert_eq!(collapse([1, 1, 2, 2, 2, 3, 1]), vec![1, 2, 3, 1]);
        assert_eq!(collapse([]), Vec::<u32>::new());
    }

    #[test]
    fn the_comparison_follows_the_documented_rules() {
        // (traced, peers' paths, local ASes, verdict)
        type Case<'a> = (&'a [u32], &'a [&'a [u32]], &'a [u32], V);
        let cases: &[Case] = &[
            // Every traced AS on the path, in order.
            (
                &[65001, 65020, 65030],
                &[&[65001, 65010, 65020, 65030]],
                &[],
                V::Agree,
            ),
            // Silent transit (65010 never answered) is fine.
            (&[65020, 65030], &[&[65010, 65020, 65030]], &[], V::Agree),
            // A traced AS missing from the path.
            (&[65020, 65030], &[&[65001, 65010, 65030]], &[], V::Mismatch),
            // Out of order.
            (&[65030, 65020], &[&[65010, 65020, 65030]], &[], V::Mismatch),
            // Our own AS before an iBGP path's first AS needs local_asns...
            (&[64500, 65010, 65030], &[&[65010, 65030]], &[], V::Mismatch),
            (
                &[64500, 65010, 65030],
                &[&[65010, 65030]],
                &[64500],
                V::Agree,
            ),
            // ...and only before it.
            (
                &[65010, 64500, 65030],
                &[&[65010, 65030]],
                &[64500],
                V::Mismatch,
            ),
            // One peer's path that explains the trace is enough.
            (
                &[65020, 65030],
                &[&[65010, 65030], &[65011, 65020, 65030]],
                &[],
                V::Agree,
            ),
            // Nothing mapped, or no route: no data, never a mismatch.
            (&[], &[&[65010]], &[], V::NoData),
            (&[65010], &[], &[], V::NoData),
        ];
        for (traced, paths, local, want) in cases {
            let paths: Vec<Vec<u32>> = paths.iter().map(|p| p.to_vec()).collect();
            let (got, why) = compare(traced, &paths, local);
            assert_eq!(
                got, *want,
                "{traced:?} vs {paths:?} (local {local:?}): {why}"
            );
        }
        let (_, why) = compare(&[65020, 65030], &[vec![65001, 65010, 65030]], &[]);
        assert!(
            why.contains("AS65020 is not on the AS_PATH 65001 65010 65030"),
            "{why}"
        );
    }
}
