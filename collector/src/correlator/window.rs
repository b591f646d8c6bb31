//! The bridge between stored results and `foureyes-analysis`: the before and after windows of
//! one test go in as rows, per-agent and whole-test figures come out as `WindowStats`.

use std::collections::BTreeMap;

use foureyes_analysis::{GroupBy, Stats, Window};
use foureyes_proto::v1 as pb;

/// The figures of one test around an event: per agent (every agent seen in either window, by
/// id), then all agents together. A side with no results is all zeros (`runs == 0`), which the
/// verdict rules read as "no data".
#[derive(Default)]
pub struct TestWindows {
    pub agents: BTreeMap<String, (pb::WindowStats, pb::WindowStats)>,
    pub before: pb::WindowStats,
    pub after: pb::WindowStats,
}

fn window(rs: &[pb::ProbeResult]) -> Window {
    let mut w = Window::new();
    for r in rs {
        let ok = r.status == pb::Status::Ok as i32 || r.status == pb::Status::Degraded as i32;
        let at = r
            .received_at
            .as_ref()
            .map(foureyes_proto::timestamp_ms)
            .unwrap_or(0);
        w.push(&r.test_id, &r.agent_id, at, ok, r.loss, r.latency_ms);
    }
    w
}

fn to_pb(s: &Stats) -> pb::WindowStats {
    pb::WindowStats {
        runs: s.runs,
        ok: s.ok,
        latency_p50_ms: s.latency_p50_ms,
        latency_p95_ms: s.latency_p95_ms,
        loss: s.loss,
        reachability: s.reachability,
    }
}

/// Window figures for one test's results before and after an event.
pub fn compare(
    before: &[pb::ProbeResult],
    after: &[pb::ProbeResult],
) -> Result<TestWindows, foureyes_analysis::Error> {
    let (b, a) = (window(before), window(after));
    let mut agents: BTreeMap<String, (pb::WindowStats, pb::WindowStats)> = BTreeMap::new();
    for s in b.stats(GroupBy::TestAgent, None)? {
        agents
            .entry(s.agent.clone().unwrap_or_default())
            .or_default()
            .0 = to_pb(&s);
    }
    for s in a.stats(GroupBy::TestAgent, None)? {
        agents
            .entry(s.agent.clone().unwrap_or_default())
            .or_default()
            .1 = to_pb(&s);
    }
    // The results were read by test id, so there is at most one group.
    let whole = |w: &Window| -> Result<pb::WindowStats, foureyes_analysis::Error> {
        Ok(w.stats(GroupBy::Test, None)?
            .first()
            .map(to_pb)
            .unwrap_or_default())
    };
    Ok(TestWindows {
        agents,
        before: whole(&b)?,
        after: whole(&a)?,
    })
}
