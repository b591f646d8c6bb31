//! What a node lets probe bursts cost, whatever the collector asks: each test bursts at most once
//! per [`BurstLimits::per_test`], and the node runs at most [`BurstLimits::tests_per_window`]
//! test bursts in any [`BurstLimits::window`] (a route flood that touches every assigned test
//! cannot turn into a probe flood). Sans-IO: the caller passes the clock, so the tests need no
//! sleeping.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct BurstLimits {
    pub per_test: Duration,
    pub window: Duration,
    pub tests_per_window: usize,
}

impl Default for BurstLimits {
    fn default() -> Self {
        BurstLimits {
            per_test: Duration::from_secs(10),
            window: Duration::from_secs(10),
            tests_per_window: 20,
        }
    }
}

pub struct BurstLimiter {
    limits: BurstLimits,
    last: HashMap<String, Instant>,
    /// When each admitted test burst of the last window started, oldest first.
    recent: VecDeque<Instant>,
}

impl BurstLimiter {
    pub fn new(limits: BurstLimits) -> Self {
        BurstLimiter {
            limits,
            last: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// The tests of one burst that may run at `now`, in the order asked; they count as run.
    /// A test the limits refuse is skipped, not queued: its schedule still runs it, and the next
    /// change will ask again.
    pub fn admit<'a>(
        &mut self,
        now: Instant,
        tests: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let l = self.limits;
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= l.window)
        {
            self.recent.pop_front();
        }
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) < l.per_test);
        let mut out = Vec::new();
        for t in tests {
            if self.recent.len() >= l.tests_per_window {
                tracing::info!(
                    test = t,
                    cap = l.tests_per_window,
                    "probe burst skipped: the node's burst cap for this window is reached"
                );
                break;
            }
            if self.last.contains_key(t) || out.iter().any(|o| o == t) {
                continue;
            }
            self.last.insert(t.to_string(), now);
            self.recent.push_back(now);
            out.push(t.to_string());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_bursts_of_a_test_within_the_interval_run_once() {
        let mut l = BurstLimiter::new(BurstLimits::default());
        let t0 = Instant::now();
        assert_eq!(l.admit(t0, ["a"]), ["a"]);
        // The same test again within 10 s: refused; another test: fine.
        assert!(l.admit(t0 + Duration::from_secs(3), ["a"]).is_empty());
        assert_eq!(l.admit(t0 + Duration::from_secs(9), ["a", "b"]), ["b"]);
        // Past the interval, a again.
        assert_eq!(l.admit(t0 + Duration::from_secs(10), ["a"]), ["a"]);
        // A burst naming a test twice runs it once.
        assert_eq!(l.admit(t0 + Duration::from_secs(30), ["c", "c"]), ["c"]);
    }

    #[test]
    fn the_node_caps_test_bursts_per_window() {
        let mut l = BurstLimiter::new(BurstLimits {
            per_test: Duration::from_secs(10),
            window: Duration::from_secs(10),
            tests_per_window: 3,
        });
        let t0 = Instant::now();
        assert_eq!(l.admit(t0, ["a", "b"]), ["a", "b"]);
        // One more fits in this window, the rest does not.
        assert_eq!(l.admit(t0 + Duration::from_secs(1), ["c", "d", "e"]), ["c"]);
        assert!(l.admit(t0 + Duration::from_secs(9), ["f"]).is_empty());
        // a and b's starts left the window at 10 s; c's at 11 s.
        assert_eq!(
            l.admit(t0 + Duration::from_secs(10), ["d", "e", "f"]),
            ["d", "e"]
        );
        assert_eq!(l.admit(t0 + Duration::from_secs(11), ["f"]), ["f"]);
    }
}
