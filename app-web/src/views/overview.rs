//! Overview: every test with its state, latest latency and loss, and a latency sparkline; live.

use std::collections::HashMap;

use foureyes_proto::v1 as pb;
use leptos::{prelude::*, task::spawn_local};

use super::alerts::FiringAlerts;
use crate::{
    api,
    app::{link, use_org, use_range, use_tick},
    chart, live,
    util::{self, Health},
};

/// Results kept per test in the browser; older ones fall off.
const KEEP_PER_TEST: usize = 5_000;

/// Marks `fe-overview` in the Performance timeline one frame after the first data is drawn: the
/// "first meaningful paint" `benches/web_bundle.sh` reports.
fn mark_painted() {
    request_animation_frame(|| {
        request_animation_frame(|| {
            if let Some(p) = web_sys::window().and_then(|w| w.performance())
                && p.get_entries_by_name("fe-overview").length() == 0
            {
                let _ = p.mark("fe-overview");
            }
        })
    });
}

#[component]
pub fn Overview() -> impl IntoView {
    let org = use_org();
    let range = use_range();
    let tick = use_tick(5);
    let tests = RwSignal::new(Vec::<pb::Test>::new());
    let results = RwSignal::new(HashMap::<String, Vec<pb::ProbeResult>>::new());
    let error = RwSignal::new(None::<String>);
    let loaded = RwSignal::new(false);

    Effect::new(move |_| {
        let org = org.get();
        let from = util::now_ms() - util::range_ms(&range.get());
        if org.is_empty() {
            return;
        }
        spawn_local(async move {
            let r = async {
                let t = api::all_tests(&org).await?;
                let rs = api::all_results(&org, &[("from", from.to_string())])
                    .await?
                    .items;
                Ok::<_, String>((t, rs))
            }
            .await;
            match r {
                Ok((t, rs)) => {
                    let mut by_test: HashMap<String, Vec<pb::ProbeResult>> = HashMap::new();
                    for r in rs {
                        by_test.entry(r.test_id.clone()).or_default().push(r);
                    }
                    tests.set(t);
                    results.set(by_test);
                    error.set(None);
                    mark_painted();
                }
                Err(e) => error.set(Some(e)),
            }
            loaded.set(true);
        });
    });

    Effect::new(move |_| {
        let org = org.get();
        live::subscribe(&org, "results", move |name, data| {
            if name != "result" {
                return;
            }
            let Ok(r) = serde_json::from_str::<pb::ProbeResult>(data) else {
                return;
            };
            results.update(|m| {
                let v = m.entry(r.test_id.clone()).or_default();
                v.push(r);
                if v.len() > KEEP_PER_TEST {
                    let extra = v.len() - KEEP_PER_TEST;
                    v.drain(..extra);
                }
            });
        });
    });

    let rows = move || {
        tick.track();
        let now = util::now_ms();
        let from = now - util::range_ms(&range.get());
        let org_v = org.get();
        let range_v = range.get();
        let res = results.read();
        tests
            .get()
            .into_iter()
            .map(|t| {
                let rs = res.get(&t.id).map(Vec::as_slice).unwrap_or_default();
                let latest = rs.last();
                let h = util::health(&t, latest, now);
                let latency = latest
                    .map(|r| util::fmt_ms(r.latency_ms))
                    .unwrap_or_else(|| "–".into());
                let loss = latest
                    .map(|r| util::fmt_loss(r.loss))
                    .unwrap_or_else(|| "–".into());
                let last = latest
                    .map(|r| util::fmt_time(util::ts_ms(&r.received_at)))
                    .unwrap_or_else(|| "no results in range".into());
                let points: Vec<(i64, f64)> = rs
                    .iter()
                    .filter(|r| r.status == pb::Status::Ok as i32)
                    .map(|r| (util::ts_ms(&r.received_at), r.latency_ms))
                    .filter(|(t, _)| *t >= from)
                    .collect();
                let href = link(&format!("/tests/{}", t.id), &org_v, &range_v, &[]);
                view! {
                    <tr class="test" data-test-id=t.id.clone() data-state=h.class()>
                        <td>
                            <span class=format!("dot {}", h.class())></span>
                        </td>
                        <td>
                            <a href=href>{t.name.clone()}</a>
                        </td>
                        <td class="dim">{format!("{} {}", util::kind_name(&t), util::target(&t))}</td>
                        <td class="num latency">{latency}</td>
                        <td class="num loss">{loss}</td>
                        <td>{chart::sparkline(&points, from, now)}</td>
                        <td class="dim">{last}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    let counts = move || {
        tick.track();
        let now = util::now_ms();
        let res = results.read();
        let mut c = [0usize; 5];
        for t in tests.read().iter() {
            let h = util::health(t, res.get(&t.id).and_then(|v| v.last()), now);
            let i = match h {
                Health::Green => 0,
                Health::Amber => 1,
                Health::Red => 2,
                Health::Stale => 3,
                Health::Unknown => 4,
            };
            if let Some(x) = c.get_mut(i) {
                *x += 1;
            }
        }
        c
    };

    view! {
        <section class="overview">
            <h1>"Overview"</h1>
            // Firing alerts on top, red and large (readable on a wall screen).
            <FiringAlerts />
            <p class="summary">
                {move || {
                    let [g, a, r, s, u] = counts();
                    view! {
                        <span class="green">{g} " ok"</span>
                        <span class="amber">{a} " degraded"</span>
                        <span class="red">{r} " failing"</span>
                        <span class="stale">{s} " stale"</span>
                        <span class="unknown">{u} " no data"</span>
                    }
                }}
            </p>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            <Show when=move || loaded.get() && tests.read().is_empty()>
                <p class="empty">"No tests in this org yet."</p>
            </Show>
            <table class="tests">
                <thead>
                    <tr>
                        <th></th>
                        <th>"Test"</th>
                        <th>"Target"</th>
                        <th>"Latency"</th>
                        <th>"Loss"</th>
                        <th>"Trend"</th>
                        <th>"Last result"</th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </section>
    }
}
