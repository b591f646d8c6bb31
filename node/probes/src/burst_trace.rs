//! The traceroute a probe burst may add: toward the target of a test the node already holds.
//!
//! The collector only switches it on (`ProbeBurst.traceroute`); the address comes from the
//! assigned test's own typed config, so a burst cannot aim a traceroute anywhere the tenant did
//! not already ask this node to probe.

use foureyes_proto::v1::{ProbeConfig, Test, TracerouteConfig, probe_config::Kind};

/// Suffix of the derived test id a burst traceroute's result is stored under: the parent test's
/// own series (latency, loss, alert windows) never sees a traceroute run.
pub const TRACE_SUFFIX: &str = "#traceroute";
/// Hops a burst traceroute tries at most.
pub const BURST_TRACE_MAX_HOPS: u32 = 30;
/// Per-hop wait bounds, so a burst traceroute ends within `max_hops * MAX` whatever the test says.
pub const BURST_TRACE_MIN_TIMEOUT_MS: u32 = 300;
pub const BURST_TRACE_MAX_TIMEOUT_MS: u32 = 2_000;

/// The derived id of `test_id`'s burst traceroute results.
pub fn trace_test_id(test_id: &str) -> String {
    format!("{test_id}{TRACE_SUFFIX}")
}

/// The parent test id of a derived traceroute id.
pub fn parent_test_id(trace_id: &str) -> Option<&str> {
    trace_id.strip_suffix(TRACE_SUFFIX)
}

/// The host an HTTP(S) URL names, brackets of an IPv6 literal removed.
fn url_host(url: &str) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| host.to_string())
}

/// The traceroute a burst runs alongside `test`, or `None` when the test is a traceroute itself
/// (its own burst runs already trace) or names no host.
pub fn burst_traceroute(test: &Test) -> Option<Test> {
    let (host, family) = match test.config.as_ref()?.kind.as_ref()? {
        Kind::Icmp(c) => (c.host.clone(), c.family),
        Kind::Tcp(c) => (c.host.clone(), c.family),
        Kind::Dns(c) => (c.server.clone(), 0),
        Kind::Http(c) => (url_host(&c.url)?, c.family),
        Kind::Traceroute(_) => return None,
    };
    if host.is_empty() {
        return None;
    }
    let timeout = if test.timeout_ms == 0 {
        1_000
    } else {
        test.timeout_ms
            .clamp(BURST_TRACE_MIN_TIMEOUT_MS, BURST_TRACE_MAX_TIMEOUT_MS)
    };
    Some(Test {
        id: trace_test_id(&test.id),
        name: format!("{} (traceroute)", test.name),
        interval_ms: 0,
        timeout_ms: timeout,
        count: 0,
        config: Some(ProbeConfig {
            kind: Some(Kind::Traceroute(TracerouteConfig {
                host,
                max_hops: BURST_TRACE_MAX_HOPS,
                family,
                protocol: 0,
                probes_per_hop: 0,
            })),
        }),
        team: test.team.clone(),
        agent_ids: test.agent_ids.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use foureyes_proto::v1::{DnsConfig, HttpConfig, IcmpConfig};

    fn t(kind: Kind) -> Test {
        Test {
            id: "t1".into(),
            timeout_ms: 50_000,
            config: Some(ProbeConfig { kind: Some(kind) }),
            ..Default::default()
        }
    }

    fn host(t: &Test) -> String {
        match t.config.as_ref().and_then(|c| c.kind.as_ref()) {
            Some(Kind::Traceroute(c)) => c.host.clone(),
            other => panic!("not a traceroute: {other:?}"),
        }
    }

    #[test]
    fn the_trace_goes_to_the_tests_own_target_with_capped_waits() {
        let tr = burst_traceroute(&t(Kind::Icmp(IcmpConfig {
            host: "198.51.100.7".into(),
            family: 1,
            ..Default::default()
        })))
        .expect("a traceroute");
        assert_eq!(tr.id, "t1#traceroute");
        assert_eq!(parent_test_id(&tr.id), Some("t1"));
        assert_eq!(host(&tr), "198.51.100.7");
        assert_eq!(tr.timeout_ms, BURST_TRACE_MAX_TIMEOUT_MS);
        let tr = burst_traceroute(&t(Kind::Http(HttpConfig {
            url: "https://[2001:db8::5]:8443/x".into(),
            ..Default::default()
        })))
        .expect("a traceroute");
        assert_eq!(host(&tr), "2001:db8::5");
        let tr = burst_traceroute(&t(Kind::Dns(DnsConfig {
            server: "192.0.2.53".into(),
            ..Default::default()
        })))
        .expect("a traceroute");
        assert_eq!(host(&tr), "192.0.2.53");
        assert!(
            burst_traceroute(&t(Kind::Traceroute(TracerouteConfig {
                host: "192.0.2.1".into(),
                ..Default::default()
            })))
            .is_none()
        );
        assert!(
            burst_traceroute(&t(Kind::Icmp(IcmpConfig::default()))).is_none(),
            "no host, no trace"
        );
    }
}
