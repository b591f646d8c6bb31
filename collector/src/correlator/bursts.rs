//! When the correlator asks nodes for probe bursts: each test at most once per `per_test`
//! (30 s), and each node at most one burst message per `per_node` (`burst_node_interval`, 5 s by
//! default). A node belongs to exactly one org and gets every burst of its org, so one message
//! per org per `per_node` is one per node. Tests asked for while the org's gate is closed are
//! queued and sent together when it opens, so a second change a moment after the first still
//! gets its after-window filled. Sans-IO (the caller passes the clock) and unit-tested.

use std::collections::HashMap;

/// One burst to send: the org's nodes run these tests.
#[derive(Debug, PartialEq)]
pub struct Due {
    pub org: String,
    pub tests: Vec<String>,
    /// The correlation that asked first (for the node's log).
    pub reason: String,
}

pub struct BurstGate {
    per_test_ms: i64,
    per_node_ms: i64,
    last_test: HashMap<String, i64>,
    last_org: HashMap<String, i64>,
    queued: HashMap<String, (Vec<String>, String)>,
}

impl BurstGate {
    pub fn new(per_test_ms: i64, per_node_ms: i64) -> Self {
        BurstGate {
            per_test_ms,
            per_node_ms,
            last_test: HashMap::new(),
            last_org: HashMap::new(),
            queued: HashMap::new(),
        }
    }

    /// A change touched `tests` of `org` at `now`: queue those not burst within `per_test`.
    pub fn request(&mut self, org: &str, tests: Vec<String>, reason: &str, now: i64) {
        let per_test = self.per_test_ms;
        self.last_test.retain(|_, at| now - *at < per_test);
        for t in tests {
            if self.last_test.contains_key(&t) {
                continue;
            }
            self.last_test.insert(t.clone(), now);
            let q = self
                .queued
                .entry(org.to_string())
                .or_insert_with(|| (Vec::new(), reason.to_string()));
            if !q.0.contains(&t) {
                q.0.push(t);
            }
        }
    }

    /// The bursts to send at `now`, one per org whose gate is open.
    pub fn due(&mut self, now: i64) -> Vec<Due> {
        let per_node = self.per_node_ms;
        self.last_org.retain(|_, at| now - *at < per_node);
        let open: Vec<String> = self
            .queued
            .keys()
            .filter(|o| !self.last_org.contains_key(*o))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for org in open {
            if let Some((tests, reason)) = self.queued.remove(&org) {
                self.last_org.insert(org.clone(), now);
                out.push(Due { org, tests, reason });
            }
        }
        out.sort_by(|a, b| a.org.cmp(&b.org));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(org: &str, tests: &[&str], reason: &str) -> Due {
        Due {
            org: org.into(),
            tests: tests.iter().map(|t| t.to_string()).collect(),
            reason: reason.into(),
        }
    }

    #[test]
    fn two_route_changes_within_30_s_cause_one_burst() {
        let mut g = BurstGate::new(30_000, 5_000);
        g.request("acme", vec!["a".into()], "c-1", 0);
        assert_eq!(g.due(0), [due("acme", &["a"], "c-1")]);
        // The second change touches a again 12 s later: nothing to send, now or later.
        g.request("acme", vec!["a".into()], "c-2", 12_000);
        assert!(g.due(12_000).is_empty());
        assert!(g.due(29_000).is_empty());
        // Past 30 s, a bursts again.
        g.request("acme", vec!["a".into()], "c-3", 30_000);
        assert_eq!(g.due(30_000), [due("acme", &["a"], "c-3")]);
    }

    #[test]
    fn a_node_gets_at_most_one_burst_per_interval_and_nothing_is_lost() {
        let mut g = BurstGate::new(30_000, 5_000);
        g.request("acme", vec!["a".into()], "c-1", 0);
        g.request("other", vec!["x".into()], "c-9", 0);
        assert_eq!(
            g.due(0),
            [due("acme", &["a"], "c-1"), due("other", &["x"], "c-9")]
        );
        // Two more changes within the node interval: queued, then sent as one burst.
        g.request("acme", vec!["b".into()], "c-2", 1_000);
        g.request("acme", vec!["c".into(), "b".into()], "c-3", 2_000);
        assert!(g.due(2_000).is_empty());
        assert!(g.due(4_999).is_empty());
        assert_eq!(g.due(5_000), [due("acme", &["b", "c"], "c-2")]);
        assert!(g.due(20_000).is_empty());
    }
}
