//! Correlations by prefix (`CorrelationFilter::prefix`) against a real SQLite file: exact,
//! covering and covered (within) matches, IPv6, a session loss found by the prefixes that routed
//! its tests, re-saving, tenant scopes, and the index the lookups use.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use foureyes_proto::v1 as pb;
use foureyes_store::{CorrelationFilter, IpPrefix, PrefixMatch, Scope, Store};

fn corr(
    id: &str,
    org: &str,
    team: &str,
    at_ms: i64,
    prefixes: &[&str],
    tests: &[&str],
) -> pb::Correlation {
    pb::Correlation {
        id: id.into(),
        org: org.into(),
        team: team.into(),
        opened_at: Some(foureyes_proto::timestamp_from_ms(at_ms)),
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        tests: tests
            .iter()
            .enumerate()
            .map(|(i, p)| pb::AffectedTest {
                test_id: format!("{id}-t{i}"),
                prefix: p.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn ids(s: &dyn Store, scope: &Scope, prefix: &str, how: PrefixMatch) -> Vec<String> {
    let f = CorrelationFilter {
        prefix: Some((IpPrefix::parse(prefix).unwrap(), how)),
        ..Default::default()
    };
    let mut v: Vec<String> = s
        .correlations(scope, &f, None, 1000)
        .unwrap()
        .correlations
        .into_iter()
        .map(|c| c.id)
        .collect();
    v.sort();
    v
}

#[test]
fn correlations_are_found_by_exact_covering_and_covered_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    tenants(&s);
    let saves = [
        corr(
            "c-24",
            "a",
            "",
            1_000,
            &["198.51.100.0/24"],
            &["198.51.100.0/24"],
        ),
        corr(
            "c-32",
            "a",
            "x",
            2_000,
            &["198.51.100.7/32"],
            &["198.51.100.7/32"],
        ),
        corr(
            "c-16",
            "a",
            "",
            3_000,
            &["198.51.0.0/16", "203.0.113.0/24"],
            &["198.51.0.0/16"],
        ),
        // A session loss changes no prefix: it is found by the announcements its tests used.
        corr("c-down", "a", "y", 4_000, &[], &["192.0.2.0/24"]),
        corr(
            "c-v6",
            "a",
            "",
            5_000,
            &["2001:db8:1::/48"],
            &["2001:db8:1::/48"],
        ),
        // Same prefix, other org.
        corr(
            "c-b",
            "b",
            "x",
            6_000,
            &["198.51.100.0/24"],
            &["198.51.100.0/24"],
        ),
    ];
    for c in &saves {
        s.save_correlation(&sys(), c, false).unwrap();
    }
    let a = org("a");
    use PrefixMatch::*;
    assert_eq!(ids(&s, &a, "198.51.100.0/24", Exact), ["c-24"]);
    // Host bits are cleared, as everywhere else a prefix is parsed.
    assert_eq!(ids(&s, &a, "198.51.100.9/24", Exact), ["c-24"]);
    assert_eq!(ids(&s, &a, "198.51.100.7/32", Exact), ["c-32"]);
    // Covering: incidents on prefixes that contain the address, however short.
    assert_eq!(
        ids(&s, &a, "198.51.100.7", Covering),
        ["c-16", "c-24", "c-32"]
    );
    assert_eq!(
        ids(&s, &a, "198.51.100.7", Longest),
        ["c-16", "c-24", "c-32"]
    );
    assert_eq!(ids(&s, &a, "198.51.100.8/32", Covering), ["c-16", "c-24"]);
    assert_eq!(ids(&s, &a, "198.51.0.0/16", Covering), ["c-16"]);
    // Covered: more-specifics inside the query, the query itself included.
    assert_eq!(ids(&s, &a, "198.51.100.0/24", Within), ["c-24", "c-32"]);
    assert_eq!(ids(&s, &a, "198.0.0.0/8", Within), ["c-16", "c-24", "c-32"]);
    assert_eq!(ids(&s, &a, "198.51.101.0/24", Within), Vec::<String>::new());
    // A second prefix of an incident counts too.
    assert_eq!(ids(&s, &a, "203.0.113.5", Covering), ["c-16"]);
    assert_eq!(ids(&s, &a, "192.0.2.1", Covering), ["c-down"]);
    // IPv6 does not match IPv4 queries of the same bytes, and the other way round.
    assert_eq!(ids(&s, &a, "2001:db8:1:2::1", Covering), ["c-v6"]);
    assert_eq!(ids(&s, &a, "2001:db8::/32", Within), ["c-v6"]);
    assert_eq!(
        ids(&s, &a, "0.0.0.0/0", Within),
        ["c-16", "c-24", "c-32", "c-down"]
    );
    assert_eq!(ids(&s, &a, "::/0", Within), ["c-v6"]);

    // Scopes: a team sees its own team's records; another org sees none of org a's.
    assert_eq!(
        ids(&s, &team("a", "x"), "198.51.100.0/24", Within),
        ["c-32"]
    );
    assert_eq!(ids(&s, &team("a", "y"), "0.0.0.0/0", Within), ["c-down"]);
    assert_eq!(ids(&s, &org("b"), "198.51.100.7", Covering), ["c-b"]);
    assert_eq!(
        ids(&s, &team("b", "y"), "0.0.0.0/0", Within),
        Vec::<String>::new()
    );

    // Re-saving (the verdict) replaces the record's prefixes rather than adding to them.
    let mut moved = saves[0].clone();
    moved.prefixes = vec!["198.51.200.0/24".into()];
    moved.tests[0].prefix = "198.51.200.0/24".into();
    s.save_correlation(&sys(), &moved, true).unwrap();
    assert_eq!(ids(&s, &a, "198.51.100.0/24", Exact), Vec::<String>::new());
    assert_eq!(ids(&s, &a, "198.51.200.0/24", Exact), ["c-24"]);

    // The lookups seek the prefix table's primary key; no scan of the correlations.
    drop(s);
    let conn = rusqlite::Connection::open(dir.path().join("store.sqlite")).unwrap();
    let plan = |sql: &str| -> String {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows: Vec<String> = st
            .query_map([], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.join(" | ")
    };
    let p = plan(
        "SELECT corr_key FROM correlation_prefixes WHERE afi = 1 AND net >= x'c6336400' AND net <= x'c63364ff' AND len >= 24",
    );
    assert!(
        p.contains("USING PRIMARY KEY (afi=? AND net>? AND net<?)"),
        "{p}"
    );
    let p = plan(
        "SELECT corr_key FROM correlation_prefixes WHERE afi = 1 AND (net, len) IN (VALUES (x'c6336400', 24), (x'c6330000', 16))",
    );
    assert!(
        p.contains("USING PRIMARY KEY (afi=? AND net=? AND len=?)"),
        "{p}"
    );
}
