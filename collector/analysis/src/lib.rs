//! Window statistics over stored probe results, computed with polars.
//!
//! The correlator decides a verdict by comparing a test's results in a window before a route
//! event with those after it. This crate holds that arithmetic so the dataframe engine stays in
//! the collector: agents (node, listener) never link polars, which would double their build time
//! and binary size for nothing (`collector/tests/tidy.rs` checks it).
//!
//! The figures, per group of results:
//! - `runs`: results in the group; `ok`: those whose probe succeeded (OK or degraded);
//! - `loss`: the mean loss, where a failed run without a loss figure of its own (TCP, HTTP, DNS
//!   report a single attempt) counts as fully lost, capped at 1;
//! - `reachability`: `ok / runs`;
//! - `latency_p50_ms` / `latency_p95_ms`: nearest-rank percentiles (index
//!   `round((n - 1) * p)` of the sorted latencies) over successful runs only, since a failed run's
//!   latency is a timeout, not a path property; 0 when no run succeeded.
//!
//! An empty group does not appear in the output: no data is not 100 % loss, and the caller says
//! "no data" for a group it expected and did not get.

use polars::prelude::*;

/// Errors from the analysis engine. Polars errors here mean a bug in how the frame is built
/// (the input is plain numbers and strings), so they are reported, never unwrapped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("analysis: {0}")]
    Polars(#[from] PolarsError),
    #[error("analysis: {0} out of range")]
    Range(&'static str),
}

/// How to group results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// One group per (test, agent): what each vantage point saw.
    TestAgent,
    /// One group per test, all agents together.
    Test,
}

/// The figures of one group (see the crate docs for their definitions).
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub test: String,
    /// The agent, or `None` when grouped per test.
    pub agent: Option<String>,
    pub runs: u32,
    pub ok: u32,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub loss: f64,
    pub reachability: f64,
}

/// Results of one or more windows, as columns. Push rows, then ask for [`Window::stats`].
#[derive(Clone, Debug, Default)]
pub struct Window {
    test: Vec<String>,
    agent: Vec<String>,
    time_ms: Vec<i64>,
    ok: Vec<bool>,
    loss: Vec<f64>,
    latency_ms: Vec<f64>,
}

impl Window {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one result. `ok` is whether the probe succeeded; `loss` its own loss figure (0 when
    /// it reports none); `latency_ms` is only read when `ok`.
    pub fn push(
        &mut self,
        test: &str,
        agent: &str,
        time_ms: i64,
        ok: bool,
        loss: f64,
        latency_ms: f64,
    ) {
        self.test.push(test.to_string());
        self.agent.push(agent.to_string());
        self.time_ms.push(time_ms);
        self.ok.push(ok);
        self.loss.push(loss);
        self.latency_ms.push(latency_ms);
    }

    pub fn len(&self) -> usize {
        self.test.len()
    }

    pub fn is_empty(&self) -> bool {
        self.test.is_empty()
    }

    fn frame(&self) -> Result<DataFrame, Error> {
        Ok(df!(
            "test" => self.test.as_slice(),
            "agent" => self.agent.as_slice(),
            "time_ms" => self.time_ms.as_slice(),
            "ok" => self.ok.as_slice(),
            "loss" => self.loss.as_slice(),
            "latency_ms" => self.latency_ms.as_slice(),
        )?)
    }

    /// The figures per group for the results with `from_ms <= time_ms <= to_ms` (all of them for
    /// `None`), sorted by test then agent.
    pub fn stats(&self, by: GroupBy, range: Option<(i64, i64)>) -> Result<Vec<Stats>, Error> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let mut lf = self.frame()?.lazy();
        if let Some((from, to)) = range {
            lf = lf.filter(
                col("time_ms")
                    .gt_eq(lit(from))
                    .and(col("time_ms").lt_eq(lit(to))),
            );
        }
        let keys: Vec<Expr> = match by {
            GroupBy::TestAgent => vec![col("test"), col("agent")],
            GroupBy::Test => vec![col("test")],
        };
        let ok_latency = col("latency_ms").filter(col("ok"));
        // A failed run that reports no loss of its own lost its single attempt.
        let loss = when(col("ok").not().and(col("loss").eq(lit(0.0))))
            .then(lit(1.0))
            .otherwise(col("loss"));
        let out = lf
            .group_by(keys)
            .agg([
                len().cast(DataType::Int64).alias("runs"),
                col("ok").cast(DataType::Int64).sum().alias("ok_runs"),
                loss.sum().alias("loss_sum"),
                ok_latency
                    .clone()
                    .quantile(lit(0.5), QuantileMethod::Nearest)
                    .alias("p50"),
                ok_latency
                    .quantile(lit(0.95), QuantileMethod::Nearest)
                    .alias("p95"),
            ])
            .collect()?;
        read(&out, by)
    }
}

fn read(df: &DataFrame, by: GroupBy) -> Result<Vec<Stats>, Error> {
    let test = df.column("test")?.str()?;
    let agent = match by {
        GroupBy::TestAgent => Some(df.column("agent")?.str()?),
        GroupBy::Test => None,
    };
    let runs = df.column("runs")?.i64()?;
    let ok = df.column("ok_runs")?.i64()?;
    let loss = df.column("loss_sum")?.f64()?;
    let p50 = df.column("p50")?.f64()?;
    let p95 = df.column("p95")?.f64()?;
    let mut v = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let runs = u32::try_from(runs.get(i).unwrap_or(0)).map_err(|_| Error::Range("runs"))?;
        let ok = u32::try_from(ok.get(i).unwrap_or(0)).map_err(|_| Error::Range("ok"))?;
        let loss_sum = loss.get(i).unwrap_or(0.0);
        v.push(Stats {
            test: test.get(i).unwrap_or_default().to_string(),
            agent: agent.map(|a| a.get(i).unwrap_or_default().to_string()),
            runs,
            ok,
            latency_p50_ms: p50.get(i).unwrap_or(0.0),
            latency_p95_ms: p95.get(i).unwrap_or(0.0),
            // Divided here, as the figures always were, so results do not move by an ulp.
            loss: if runs > 0 {
                (loss_sum / f64::from(runs)).min(1.0)
            } else {
                0.0
            },
            reachability: if runs > 0 {
                f64::from(ok) / f64::from(runs)
            } else {
                0.0
            },
        });
    }
    v.sort_by(|a, b| (&a.test, &a.agent).cmp(&(&b.test, &b.agent)));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(w: &Window, by: GroupBy) -> Stats {
        let v = w.stats(by, None).expect("stats");
        assert_eq!(v.len(), 1, "{v:?}");
        v.into_iter().next().expect("one group")
    }

    #[test]
    fn percentiles_are_nearest_rank_over_successful_runs() {
        let mut w = Window::new();
        // Latencies 1..=10 ms, pushed out of order; two failures whose latency must not count.
        for l in [7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0] {
            w.push("t", "a", 0, true, 0.0, l);
        }
        w.push("t", "a", 0, false, 0.0, 1000.0);
        w.push("t", "a", 0, false, 0.0, 1000.0);
        let s = one(&w, GroupBy::TestAgent);
        // n = 10: p50 index round(9 * 0.5) = round(4.5) = 5 → 6 ms; p95 index round(8.55) = 9 →
        // 10 ms.
        assert_eq!(s.latency_p50_ms, 6.0);
        assert_eq!(s.latency_p95_ms, 10.0);
        assert_eq!((s.runs, s.ok), (12, 10));
        // Two failed single-attempt runs: 2 / 12 lost.
        assert_eq!(s.loss, 2.0 / 12.0);
        assert_eq!(s.reachability, 10.0 / 12.0);
        assert_eq!(s.agent.as_deref(), Some("a"));
    }

    #[test]
    fn small_windows_pick_the_nearest_rank() {
        let mut w = Window::new();
        for l in [30.0, 10.0, 20.0] {
            w.push("t", "a", 0, true, 0.0, l);
        }
        let s = one(&w, GroupBy::Test);
        // n = 3: p50 index round(1.0) = 1 → 20; p95 index round(1.9) = 2 → 30.
        assert_eq!((s.latency_p50_ms, s.latency_p95_ms), (20.0, 30.0));
        let mut w = Window::new();
        w.push("t", "a", 0, true, 0.0, 4.5);
        let s = one(&w, GroupBy::Test);
        assert_eq!((s.latency_p50_ms, s.latency_p95_ms), (4.5, 4.5));
    }

    #[test]
    fn an_empty_window_has_no_groups() {
        let w = Window::new();
        assert!(w.stats(GroupBy::TestAgent, None).expect("stats").is_empty());
        let mut w = Window::new();
        w.push("t", "a", 100, true, 0.0, 1.0);
        // Nothing in range: still no groups, not a group of zero runs.
        assert!(
            w.stats(GroupBy::Test, Some((200, 300)))
                .expect("stats")
                .is_empty()
        );
    }

    #[test]
    fn an_all_failed_window_is_fully_lost_with_no_latency() {
        let mut w = Window::new();
        // ICMP reports its own loss (1.0 of 3 pings); TCP reports none and counts as 1.
        w.push("t", "a", 0, false, 1.0, 400.0);
        w.push("t", "a", 0, false, 0.0, 400.0);
        w.push("t", "a", 0, false, 1.0, 400.0);
        let s = one(&w, GroupBy::TestAgent);
        assert_eq!((s.runs, s.ok), (3, 0));
        assert_eq!(s.loss, 1.0);
        assert_eq!(s.reachability, 0.0);
        assert_eq!((s.latency_p50_ms, s.latency_p95_ms), (0.0, 0.0));
    }

    #[test]
    fn partial_loss_is_the_mean_of_each_runs_loss() {
        let mut w = Window::new();
        // Three ICMP runs of 4 pings: 1/4 lost, none lost, 3/4 lost (all still OK).
        w.push("t", "a", 0, true, 0.25, 10.0);
        w.push("t", "a", 0, true, 0.0, 12.0);
        w.push("t", "a", 0, true, 0.75, 14.0);
        let s = one(&w, GroupBy::Test);
        assert_eq!(s.loss, 1.0 / 3.0);
        assert_eq!(s.reachability, 1.0);
        assert_eq!(s.latency_p50_ms, 12.0);
    }

    #[test]
    fn groups_split_by_test_and_agent_and_time_range() {
        let mut w = Window::new();
        w.push("t1", "b", 10, true, 0.0, 5.0);
        w.push("t1", "a", 20, false, 0.0, 0.0);
        w.push("t1", "a", 30, true, 0.0, 7.0);
        w.push("t2", "a", 40, true, 0.0, 9.0);
        w.push("t1", "b", 50, true, 0.0, 100.0);
        let v = w.stats(GroupBy::TestAgent, None).expect("stats");
        let keys: Vec<(&str, Option<&str>, u32, u32)> = v
            .iter()
            .map(|s| (s.test.as_str(), s.agent.as_deref(), s.runs, s.ok))
            .collect();
        assert_eq!(
            keys,
            [
                ("t1", Some("a"), 2, 1),
                ("t1", Some("b"), 2, 2),
                ("t2", Some("a"), 1, 1)
            ]
        );
        let v = w.stats(GroupBy::Test, None).expect("stats");
        assert_eq!(v.len(), 2);
        let t1 = &v[0];
        assert_eq!(
            (t1.test.as_str(), t1.agent.as_ref(), t1.runs, t1.ok),
            ("t1", None, 4, 3)
        );
        // OK latencies 5, 7, 100: p50 = 7.
        assert_eq!(t1.latency_p50_ms, 7.0);
        // Inclusive bounds: 20..=40 keeps t1/a twice and t2 once.
        let v = w.stats(GroupBy::Test, Some((20, 40))).expect("stats");
        let runs: Vec<(&str, u32)> = v.iter().map(|s| (s.test.as_str(), s.runs)).collect();
        assert_eq!(runs, [("t1", 2), ("t2", 1)]);
    }
}
