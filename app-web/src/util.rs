//! Small pure helpers: time ranges, formatting, test health, address matching.

use std::net::IpAddr;

use foureyes_proto::v1 as pb;

/// The ranges the picker offers, with their length in milliseconds.
pub const RANGES: &[(&str, i64)] = &[
    ("15m", 15 * 60_000),
    ("1h", 3_600_000),
    ("6h", 6 * 3_600_000),
    ("24h", 24 * 3_600_000),
    ("7d", 7 * 24 * 3_600_000),
];
pub const DEFAULT_RANGE: &str = "1h";

pub fn range_ms(name: &str) -> i64 {
    RANGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, ms)| *ms)
        .unwrap_or(3_600_000)
}

pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

pub fn ts_ms(t: &Option<foureyes_proto::Timestamp>) -> i64 {
    t.as_ref().map(foureyes_proto::timestamp_ms).unwrap_or(0)
}

/// `2026-12-01 12:34:56Z`, or "never" for 0.
pub fn fmt_time(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let s: String = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64))
        .to_iso_string()
        .into();
    // 2026-12-01T12:34:56.789Z
    match (s.get(0..10), s.get(11..19)) {
        (Some(d), Some(t)) => format!("{d} {t}Z"),
        _ => s,
    }
}

/// `12:34` (or `12:34:56` for short ranges), for axis labels.
pub fn fmt_clock(ms: i64, seconds: bool) -> String {
    let s: String = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64))
        .to_iso_string()
        .into();
    s.get(11..if seconds { 19 } else { 16 })
        .unwrap_or_default()
        .to_string()
}

pub fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

pub fn fmt_loss(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

/// Green, amber or red for a test, from its latest result; stale when results stopped coming;
/// grey without any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Green,
    Amber,
    Red,
    /// No result for three intervals: no data, which says nothing about the target.
    Stale,
    Unknown,
}

impl Health {
    pub fn class(self) -> &'static str {
        match self {
            Health::Green => "green",
            Health::Amber => "amber",
            Health::Red => "red",
            Health::Stale => "stale",
            Health::Unknown => "unknown",
        }
    }
}

/// Honest state: a silent test (no result for three intervals, at least 30 s) is stale whatever
/// its last run said, since a node that stopped reporting is no data, not a target that is down;
/// otherwise a failing latest run is red, any loss amber; never green by default.
pub fn health(test: &pb::Test, latest: Option<&pb::ProbeResult>, now: i64) -> Health {
    let Some(r) = latest else {
        return Health::Unknown;
    };
    let stale_after = (i64::from(test.interval_ms) * 3).max(30_000);
    if now - ts_ms(&r.received_at) > stale_after {
        return Health::Stale;
    }
    let ok = r.status == pb::Status::Ok as i32;
    let degraded = r.status == pb::Status::Degraded as i32;
    if (!ok && !degraded) || r.loss >= 1.0 {
        return Health::Red;
    }
    if degraded || r.loss > 0.0 {
        return Health::Amber;
    }
    Health::Green
}

/// The address or host a test probes, as configured.
pub fn target(test: &pb::Test) -> String {
    use pb::probe_config::Kind;
    match test.config.as_ref().and_then(|c| c.kind.as_ref()) {
        Some(Kind::Icmp(c)) => c.host.clone(),
        Some(Kind::Tcp(c)) => c.host.clone(),
        Some(Kind::Http(c)) => url_host(&c.url),
        Some(Kind::Dns(c)) => c.server.clone(),
        Some(Kind::Traceroute(c)) => c.host.clone(),
        None => String::new(),
    }
}

pub fn kind_name(test: &pb::Test) -> &'static str {
    use pb::probe_config::Kind;
    match test.config.as_ref().and_then(|c| c.kind.as_ref()) {
        Some(Kind::Icmp(_)) => "icmp",
        Some(Kind::Tcp(_)) => "tcp",
        Some(Kind::Http(_)) => "http",
        Some(Kind::Dns(_)) => "dns",
        Some(Kind::Traceroute(_)) => "traceroute",
        None => "?",
    }
}

fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default().to_string();
    }
    authority.split(':').next().unwrap_or_default().to_string()
}

/// Whether `addr` lies inside `prefix` (`a.b.c.d/len` or an address).
pub fn prefix_contains(prefix: &str, addr: IpAddr) -> bool {
    let (net, len) = match prefix.split_once('/') {
        Some((n, l)) => (n, l.parse::<u32>().ok()),
        None => (prefix, None),
    };
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// `p`-th percentile (0..=100) of `v` (sorted in place).
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v.get(idx.min(v.len() - 1)).copied().unwrap_or(0.0)
}

pub fn event_type_name(t: i32) -> String {
    pb::RouteEventType::try_from(t)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("ROUTE_EVENT_TYPE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

pub fn verdict_name(v: i32) -> String {
    pb::Verdict::try_from(v)
        .map(|v| {
            v.as_str_name()
                .trim_start_matches("VERDICT_")
                .to_ascii_lowercase()
                .replace('_', " ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

pub fn as_path(a: &Option<pb::RouteAttributes>) -> String {
    a.as_ref()
        .map(|a| {
            a.as_path
                .iter()
                .map(|s| {
                    let asns = s
                        .asns
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(" ");
                    // AS_SET (type 1) in braces.
                    if s.r#type == 1 {
                        format!("{{{asns}}}")
                    } else {
                        asns
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: pb::Status, loss: f64, received_ms: i64) -> pb::ProbeResult {
        pb::ProbeResult {
            status: status as i32,
            loss,
            received_at: Some(foureyes_proto::timestamp_from_ms(received_ms)),
            ..Default::default()
        }
    }

    /// A node that stopped reporting leaves its last result in place: once it is older than three
    /// intervals (30 s at least) the test is stale, not red, even when that last run failed.
    #[test]
    fn staleness_wins_over_the_last_result() {
        let test = pb::Test {
            interval_ms: 1_000,
            ..Default::default()
        };
        let now = 1_000_000;
        let fresh = now - 1_000;
        let old = now - 31_000;
        let h = |s, loss, at| health(&test, Some(&result(s, loss, at)), now);
        assert_eq!(h(pb::Status::Ok, 0.0, fresh), Health::Green);
        assert_eq!(h(pb::Status::Ok, 0.5, fresh), Health::Amber);
        assert_eq!(h(pb::Status::Degraded, 0.0, fresh), Health::Amber);
        assert_eq!(h(pb::Status::Timeout, 1.0, fresh), Health::Red);
        assert_eq!(h(pb::Status::Ok, 1.0, fresh), Health::Red);
        for s in [pb::Status::Timeout, pb::Status::Ok, pb::Status::Degraded] {
            assert_eq!(h(s, 1.0, old), Health::Stale, "{s:?}");
            assert_eq!(h(s, 0.0, old), Health::Stale, "{s:?}");
        }
        // Three intervals when longer than 30 s.
        let slow = pb::Test {
            interval_ms: 60_000,
            ..Default::default()
        };
        let r = result(pb::Status::Timeout, 1.0, now - 120_000);
        assert_eq!(health(&slow, Some(&r), now), Health::Red);
        let r = result(pb::Status::Timeout, 1.0, now - 181_000);
        assert_eq!(health(&slow, Some(&r), now), Health::Stale);
        assert_eq!(health(&test, None, now), Health::Unknown);
        assert_eq!(Health::Stale.class(), "stale");
    }
}
