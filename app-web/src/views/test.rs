//! Test detail: latency p50/p95 and loss per agent over the range, with the route events for the
//! test's target as markers on the same time axis; a marker opens the event and its correlation.

use std::{collections::BTreeMap, net::IpAddr};

use foureyes_proto::v1 as pb;
use leptos::{prelude::*, task::spawn_local};
use leptos_router::hooks::use_params_map;

use crate::{
    api,
    app::{link, use_org, use_range, use_tick},
    chart::{self, Axis, Marker, Series},
    live, util,
};

/// Time buckets across the chart; percentiles are taken per bucket and agent.
const BUCKETS: i64 = 60;

struct AgentLines {
    p50: Vec<(i64, f64)>,
    p95: Vec<(i64, f64)>,
    loss: Vec<(i64, f64)>,
}

/// Per agent, per bucket: OK latencies, summed loss, runs.
type Buckets = BTreeMap<String, BTreeMap<i64, (Vec<f64>, f64, u32)>>;

fn bucketize(results: &[pb::ProbeResult], from: i64, to: i64) -> BTreeMap<String, AgentLines> {
    let width = ((to - from) / BUCKETS).max(1);
    let mut acc: Buckets = BTreeMap::new();
    for r in results {
        let t = util::ts_ms(&r.received_at);
        if t < from || t > to {
            continue;
        }
        let b = (t - from) / width;
        let e = acc
            .entry(r.agent_id.clone())
            .or_default()
            .entry(b)
            .or_insert_with(|| (Vec::new(), 0.0, 0));
        if r.status == pb::Status::Ok as i32 || r.status == pb::Status::Degraded as i32 {
            e.0.push(r.latency_ms);
        }
        e.1 += if r.status == pb::Status::Ok as i32 || r.status == pb::Status::Degraded as i32 {
            r.loss
        } else {
            1.0
        };
        e.2 += 1;
    }
    acc.into_iter()
        .map(|(agent, buckets)| {
            let mut lines = AgentLines {
                p50: Vec::new(),
                p95: Vec::new(),
                loss: Vec::new(),
            };
            for (b, (mut lat, loss, n)) in buckets {
                let t = from + b * width + width / 2;
                if !lat.is_empty() {
                    lines.p50.push((t, util::percentile(&mut lat, 50.0)));
                    lines.p95.push((t, util::percentile(&mut lat, 95.0)));
                }
                lines.loss.push((t, loss / f64::from(n.max(1))));
            }
            (agent, lines)
        })
        .collect()
}

/// The correlation that folded this event in: same listener and the event's sequence number, or
/// failing that the same prefix inside the incident's time span.
fn correlation_for<'a>(
    ev: &pb::RouteEvent,
    cs: &'a [pb::Correlation],
) -> Option<&'a pb::Correlation> {
    let t = util::ts_ms(&ev.received_at);
    cs.iter()
        .find(|c| c.listener_id == ev.agent_id && c.event_seqs.contains(&ev.seq))
        .or_else(|| {
            cs.iter().find(|c| {
                c.listener_id == ev.agent_id
                    && c.prefixes.contains(&ev.prefix)
                    && util::ts_ms(&c.opened_at) <= t
                    && t <= util::ts_ms(&c.last_event_at)
            })
        })
}

fn stats_row(label: &'static str, s: Option<pb::WindowStats>) -> impl IntoView {
    let s = s.unwrap_or_default();
    view! {
        <tr>
            <th>{label}</th>
            <td class="num">{s.runs}</td>
            <td class="num">{util::fmt_ms(s.latency_p50_ms)}</td>
            <td class="num">{util::fmt_ms(s.latency_p95_ms)}</td>
            <td class="num">{util::fmt_loss(s.loss)}</td>
        </tr>
    }
}

#[component]
pub fn TestDetail() -> impl IntoView {
    let params = use_params_map();
    let id = Signal::derive(move || params.read().get("id").unwrap_or_default());
    let org = use_org();
    let range = use_range();
    let tick = use_tick(10);
    let test = RwSignal::new(None::<pb::Test>);
    let results = RwSignal::new(Vec::<pb::ProbeResult>::new());
    let events = RwSignal::new(Vec::<pb::RouteEvent>::new());
    let correlations = RwSignal::new(Vec::<pb::Correlation>::new());
    let selected = RwSignal::new(None::<usize>);
    // The results listing stopped at `api::MAX_ROWS`: the chart shows only part of the range.
    let truncated = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);

    Effect::new(move |_| {
        let (org, id) = (org.get(), id.get());
        let from = util::now_ms() - util::range_ms(&range.get());
        if org.is_empty() || id.is_empty() {
            return;
        }
        selected.set(None);
        spawn_local(async move {
            let r = async {
                let t: pb::Test =
                    api::get(&format!("/api/v1/tests/{}", api::seg(&id)), &org).await?;
                let rs =
                    api::all_results(&org, &[("test_id", id.clone()), ("from", from.to_string())])
                        .await?;
                let target = util::target(&t);
                let evs = if target.parse::<IpAddr>().is_ok() {
                    api::all_route_events(
                        &org,
                        &[
                            ("prefix", target),
                            ("match", "covering".into()),
                            ("from", from.to_string()),
                        ],
                    )
                    .await?
                } else {
                    Vec::new()
                };
                let cs = api::correlations(
                    &org,
                    &[
                        ("test_id", id.clone()),
                        ("from", (from - 3_600_000).to_string()),
                    ],
                )
                .await?;
                Ok::<_, String>((t, rs, evs, cs))
            }
            .await;
            match r {
                Ok((t, rs, evs, cs)) => {
                    test.set(Some(t));
                    truncated.set(rs.truncated);
                    results.set(rs.items);
                    events.set(evs);
                    correlations.set(cs);
                    error.set(None);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    });

    Effect::new(move |_| {
        let (org, id) = (org.get(), id.get());
        live::subscribe(&org, "", move |name, data| match name {
            "result" => {
                if let Ok(r) = serde_json::from_str::<pb::ProbeResult>(data)
                    && r.test_id == id
                {
                    results.update(|v| v.push(r));
                }
            }
            "route_event" => {
                let Ok(e) = serde_json::from_str::<pb::RouteEvent>(data) else {
                    return;
                };
                let target = test
                    .with_untracked(|t| t.as_ref().map(util::target))
                    .and_then(|t| t.parse::<IpAddr>().ok());
                if target.is_some_and(|a| util::prefix_contains(&e.prefix, a)) {
                    events.update(|v| v.push(e));
                }
            }
            "correlation" => {
                if let Ok(c) = serde_json::from_str::<pb::Correlation>(data)
                    && c.tests.iter().any(|t| t.test_id == id)
                {
                    correlations.update(|v| {
                        v.retain(|x| x.id != c.id);
                        v.push(c);
                    });
                }
            }
            _ => {}
        });
    });

    let on_marker = Callback::new(move |i: usize| selected.set(Some(i)));

    let charts = move || {
        tick.track();
        let now = util::now_ms();
        let from = now - util::range_ms(&range.get());
        let lines = results.with(|r| bucketize(r, from, now));
        let markers: Vec<Marker> = events.with(|evs| {
            evs.iter()
                .enumerate()
                .filter(|(_, e)| util::ts_ms(&e.received_at) >= from)
                .map(|(i, e)| Marker {
                    at_ms: util::ts_ms(&e.received_at),
                    kind: util::event_type_name(e.r#type),
                    prefix: e.prefix.clone(),
                    seq: e.seq,
                    agent_id: e.agent_id.clone(),
                    index: i,
                })
                .collect()
        });
        let mut lat = Vec::new();
        let mut loss = Vec::new();
        let mut legend = Vec::new();
        for (n, (agent, l)) in lines.into_iter().enumerate() {
            lat.push(Series {
                name: format!("{agent} p50"),
                points: l.p50,
                dashed: false,
                color: n,
            });
            lat.push(Series {
                name: format!("{agent} p95"),
                points: l.p95,
                dashed: true,
                color: n,
            });
            loss.push(Series {
                name: format!("{agent} loss"),
                points: l.loss,
                dashed: false,
                color: n,
            });
            legend.push((n, agent));
        }
        view! {
            <div class="legend">
                {legend
                    .into_iter()
                    .map(|(n, a)| {
                        view! { <span class=format!("key c{}", n % 8)>{a}</span> }
                    })
                    .collect_view()}
                <span class="dim">"solid p50 · dashed p95 · ◆ route events"</span>
            </div>
            <h2>"Latency"</h2>
            <div class="chart-wrap" id="latency-chart">
                {chart::time_chart(
                    Axis { from, to: now },
                    260.0,
                    lat,
                    markers.clone(),
                    "ms",
                    None,
                    Some(on_marker),
                )}
            </div>
            <h2>"Loss"</h2>
            <div class="chart-wrap" id="loss-chart">
                {chart::time_chart(
                    Axis { from, to: now },
                    160.0,
                    loss,
                    markers,
                    "%",
                    Some(1.0),
                    Some(on_marker),
                )}
            </div>
        }
    };

    let details = move || {
        let i = selected.get()?;
        let ev = events.with(|v| v.get(i).cloned())?;
        let corr = correlations.with(|cs| correlation_for(&ev, cs).cloned());
        let id_v = id.get();
        let peer = ev
            .peer
            .as_ref()
            .map(|p| format!("{} AS{}", p.address, p.asn))
            .unwrap_or_default();
        let corr_view = match corr {
            None => view! {
                <p class="dim" id="correlation">
                    "No correlation for this event yet (the correlator folds events into incidents and decides after its window)."
                </p>
            }
            .into_any(),
            Some(c) => {
                let affected = c.tests.iter().find(|t| t.test_id == id_v).cloned();
                view! {
                    <div id="correlation" data-verdict=util::verdict_name(c.verdict)>
                        <p>
                            <b>"Correlation "</b>
                            {c.summary.clone()}
                        </p>
                        <p>
                            "Verdict: "
                            <span class=format!("verdict {}", util::verdict_name(c.verdict).replace(' ', "-"))>
                                {util::verdict_name(c.verdict)}
                            </span>
                            " · opened " {util::fmt_time(util::ts_ms(&c.opened_at))} " · "
                            {c.event_count} " events"
                        </p>
                        {affected
                            .map(|a| {
                                view! {
                                    <table class="stats">
                                        <tr>
                                            <th></th>
                                            <th>"runs"</th>
                                            <th>"p50"</th>
                                            <th>"p95"</th>
                                            <th>"loss"</th>
                                        </tr>
                                        {stats_row("before", a.before)}
                                        {stats_row("after", a.after)}
                                    </table>
                                    <p>
                                        "This test: " {util::verdict_name(a.verdict)} " (prefix "
                                        {a.prefix.clone()} ")"
                                    </p>
                                }
                            })}
                    </div>
                }
                .into_any()
            }
        };
        Some(view! {
            <aside class="event-detail" id="event-detail">
                <button class="close" on:click=move |_| selected.set(None)>
                    "×"
                </button>
                <h3>{util::event_type_name(ev.r#type)} " " {ev.prefix.clone()}</h3>
                <p>
                    "Peer " {peer} " · listener " {ev.agent_id.clone()} " · seq " {ev.seq}
                </p>
                <p>"Received " {util::fmt_time(util::ts_ms(&ev.received_at))}</p>
                <p>
                    "AS path " {util::as_path(&ev.attributes)}
                    {(!ev.changed.is_empty()).then(|| format!(" · changed: {}", ev.changed.join(", ")))}
                </p>
                {(!ev.reason.is_empty()).then(|| view! { <p>"Reason: " {ev.reason.clone()}</p> })}
                {corr_view}
            </aside>
        })
    };

    view! {
        <section class="test-detail">
            {move || {
                test.get()
                    .map(|t| {
                        view! {
                            <h1>{t.name.clone()}</h1>
                            <p class="dim">
                                {format!(
                                    "{} {} · every {} s · ",
                                    util::kind_name(&t),
                                    util::target(&t),
                                    t.interval_ms / 1000,
                                )}
                                <a href=link(
                                    "/bgp",
                                    &org.get(),
                                    &range.get(),
                                    &[("prefix", util::target(&t))],
                                )>"routes for this target"</a>
                            </p>
                        }
                    })
            }}
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            <Show when=move || truncated.get()>
                <p class="warning" id="truncated">
                    {format!(
                        "Showing only the first {} results of this range (a page limit keeps the tab responsive); narrow the range to see the rest.",
                        api::MAX_ROWS,
                    )}
                </p>
            </Show>
            {charts}
            {details}
        </section>
    }
}
