//! Alerts: firing, pending and resolved alerts with acknowledge and silence, the active silences,
//! and the rules (read-only here; rules are managed through the API or the rules file). The
//! overview's firing banner ([`FiringAlerts`]) lives here too, so both read alerts the same way.
//!
//! URL state: `?state=firing|pending|resolved` (empty: all), `range` (how far back resolved
//! alerts go; active ones show whatever their age) and `alert=ID` (the selected alert).

use std::collections::HashMap;

use foureyes_proto::v1 as pb;
use leptos::{prelude::*, task::spawn_local};
use leptos_router::hooks::{use_navigate, use_query_map};

use crate::{
    api,
    app::{link, session, use_org, use_range, use_tick},
    live, util,
};

/// Silence durations the picker offers.
const SILENCE_FOR: &[(&str, i64)] = &[
    ("1h", 3_600_000),
    ("4h", 4 * 3_600_000),
    ("24h", 24 * 3_600_000),
    ("7d", 7 * 24 * 3_600_000),
];

/// Seconds between full reloads, on top of the live stream: a silence's expiry or a change the
/// stream does not carry (silenced flag, a missed event after a reconnect) shows up by then.
const REFRESH_SECS: u64 = 30;

pub fn state_name(s: i32) -> &'static str {
    match pb::AlertState::try_from(s) {
        Ok(pb::AlertState::Firing) => "firing",
        Ok(pb::AlertState::Pending) => "pending",
        Ok(pb::AlertState::Resolved) => "resolved",
        _ => "unknown",
    }
}

pub fn severity_name(s: i32) -> &'static str {
    match pb::Severity::try_from(s) {
        Ok(pb::Severity::Critical) => "critical",
        Ok(pb::Severity::Warning) => "warning",
        Ok(pb::Severity::Info) => "info",
        _ => "none",
    }
}

fn rule_kind(r: &pb::AlertRule) -> &'static str {
    use pb::alert_rule::Kind;
    match &r.kind {
        Some(Kind::Latency(_)) => "latency",
        Some(Kind::Loss(_)) => "loss",
        Some(Kind::Unreachable(_)) => "unreachable",
        Some(Kind::Stale(_)) => "stale",
        Some(Kind::Visibility(_)) => "visibility",
        Some(Kind::OriginChange(_)) => "origin_change",
        Some(Kind::MoreSpecific(_)) => "more_specific",
        Some(Kind::UnexpectedAs(_)) => "unexpected_as",
        Some(Kind::SessionDown(_)) => "session_down",
        Some(Kind::RpkiInvalid(_)) => "rpki_invalid",
        Some(Kind::PathMismatch(_)) => "path_mismatch",
        None => "?",
    }
}

/// When the alert entered its current state.
fn since_ms(a: &pb::Alert) -> i64 {
    let t = match pb::AlertState::try_from(a.state) {
        Ok(pb::AlertState::Firing) => &a.fired_at,
        Ok(pb::AlertState::Resolved) => &a.resolved_at,
        _ => &a.started_at,
    };
    match util::ts_ms(t) {
        0 => util::ts_ms(&a.started_at),
        ms => ms,
    }
}

/// The figures of the last evaluation, `p95_ms 412.0 · failing_agents 2`.
fn values(a: &pb::Alert) -> String {
    let mut v: Vec<_> = a.values.iter().collect();
    v.sort_by(|x, y| x.0.cmp(y.0));
    v.iter()
        .map(|(k, x)| {
            if x.fract() == 0.0 {
                format!("{k} {x:.0}")
            } else {
                format!("{k} {x:.2}")
            }
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The alert's subject as a link: a test's view (by name when known), or the BGP view for a
/// prefix or a peer.
fn subject_view(
    a: &pb::Alert,
    names: &HashMap<String, String>,
    org: &str,
    range: &str,
) -> impl IntoView + use<> {
    let (href, label) = match a.kind.as_str() {
        "latency" | "loss" | "unreachable" | "stale" | "path_mismatch" => {
            let (test, agent) = match a.subject.split_once('/') {
                Some((t, ag)) => (t, Some(ag)),
                None => (a.subject.as_str(), None),
            };
            let name = names.get(test).cloned().unwrap_or_else(|| test.to_string());
            let label = match agent {
                Some(ag) => format!("{name} (agent {ag})"),
                None => name,
            };
            (
                link(&format!("/tests/{}", api::seg(test)), org, range, &[]),
                label,
            )
        }
        "session_down" => (link("/bgp", org, range, &[]), a.subject.clone()),
        _ => (
            link("/bgp", org, range, &[("prefix", a.subject.clone())]),
            a.subject.clone(),
        ),
    };
    view! { <a class="subject" href=href>{label}</a> }
}

/// Firing first, then pending, then resolved; newest first within each.
fn sort_alerts(v: &mut [pb::Alert]) {
    let rank = |a: &pb::Alert| match pb::AlertState::try_from(a.state) {
        Ok(pb::AlertState::Firing) => 0,
        Ok(pb::AlertState::Pending) => 1,
        _ => 2,
    };
    v.sort_by(|x, y| {
        rank(x)
            .cmp(&rank(y))
            .then_with(|| since_ms(y).cmp(&since_ms(x)))
    });
}

/// Puts a live transition's alert into `list` (replacing the old copy), or takes it out when its
/// new state is not one `keep` accepts.
fn apply_transition(list: RwSignal<Vec<pb::Alert>>, data: &str, keep: impl Fn(&pb::Alert) -> bool) {
    let Ok(t) = serde_json::from_str::<pb::AlertTransition>(data) else {
        return;
    };
    let Some(a) = t.alert else {
        return;
    };
    list.update(|v| {
        v.retain(|x| x.id != a.id);
        if keep(&a) {
            v.push(a);
        }
        sort_alerts(v);
    });
}

async fn load_alerts(org: &str, state: &str, from: i64) -> Result<Vec<pb::Alert>, String> {
    let states: &[&str] = match state {
        "firing" | "pending" | "resolved" => std::slice::from_ref(&state),
        _ => &["firing", "pending", "resolved"],
    };
    let mut out = Vec::new();
    for s in states {
        let mut p = vec![("state", s.to_string())];
        // Active alerts show whatever their age; the range bounds the history.
        if *s == "resolved" {
            p.push(("from", from.to_string()));
        }
        out.extend(
            api::all::<pb::ListAlertsResponse>("/api/v1/alerts", org, &p)
                .await?
                .items,
        );
    }
    sort_alerts(&mut out);
    Ok(out)
}

/// The overview's banner: every firing alert of the org, red and large, live.
#[component]
pub fn FiringAlerts() -> impl IntoView {
    let org = use_org();
    let range = use_range();
    let tick = use_tick(REFRESH_SECS);
    let firing = RwSignal::new(Vec::<pb::Alert>::new());
    let names = RwSignal::new(HashMap::<String, String>::new());

    Effect::new(move |_| {
        tick.track();
        let org = org.get();
        if org.is_empty() {
            return;
        }
        spawn_local(async move {
            if let Ok(v) = load_alerts(&org, "firing", 0).await {
                firing.set(v);
            }
            if let Ok(ts) = api::all_tests(&org).await {
                names.set(ts.into_iter().map(|t| (t.id, t.name)).collect());
            }
        });
    });
    Effect::new(move |_| {
        let org = org.get();
        live::subscribe(&org, "alerts", move |name, data| {
            if name == "alert" {
                apply_transition(firing, data, |a| a.state == pb::AlertState::Firing as i32);
            }
        });
    });

    view! {
        <div class="alerts-slot firing-alerts" data-slot="alerts">
            {move || {
                let (o, r) = (org.get(), range.get());
                let n = names.read();
                firing
                    .get()
                    .into_iter()
                    .map(|a| {
                        let href = link("/alerts", &o, &r, &[("alert", a.id.clone())]);
                        let sev = severity_name(a.severity);
                        view! {
                            <div class=format!("firing-alert sev-{sev}") data-alert-id=a.id.clone()>
                                <a class="rule" href=href>
                                    {a.rule_name.clone()}
                                </a>
                                " "
                                {subject_view(&a, &n, &o, &r)}
                                <span class="since">
                                    " firing since " {util::fmt_time(since_ms(&a))}
                                </span>
                                <span class="value">{values(&a)}</span>
                                {(!a.acked_by.is_empty())
                                    .then(|| view! { <span class="acked">" · acked by " {a.acked_by.clone()}</span> })}
                            </div>
                        }
                    })
                    .collect_view()
            }}
        </div>
    }
}

#[component]
pub fn Alerts() -> impl IntoView {
    let org = use_org();
    let range = use_range();
    let q = use_query_map();
    let state = Signal::derive(move || {
        q.read()
            .get("state")
            .filter(|s| ["firing", "pending", "resolved"].contains(&s.as_str()))
            .unwrap_or_default()
    });
    let selected = Signal::derive(move || q.read().get("alert").unwrap_or_default());
    let tick = use_tick(REFRESH_SECS);
    let alerts = RwSignal::new(Vec::<pb::Alert>::new());
    let silences = RwSignal::new(Vec::<pb::Silence>::new());
    let rules = RwSignal::new(Vec::<pb::AlertRule>::new());
    let names = RwSignal::new(HashMap::<String, String>::new());
    let detail = RwSignal::new(None::<(pb::Alert, Vec<pb::AlertTransition>)>);
    let error = RwSignal::new(None::<String>);
    let reload = RwSignal::new(0u32);
    let silence_for = RwSignal::new("1h".to_string());

    Effect::new(move |_| {
        tick.track();
        reload.track();
        let (org, st) = (org.get(), state.get());
        let from = util::now_ms() - util::range_ms(&range.get());
        if org.is_empty() {
            return;
        }
        spawn_local(async move {
            let r = async {
                let a = load_alerts(&org, &st, from).await?;
                let s: pb::ListSilencesResponse = api::get("/api/v1/silences", &org).await?;
                let r: pb::ListAlertRulesResponse = api::get("/api/v1/alert-rules", &org).await?;
                let t = api::all_tests(&org).await?;
                Ok::<_, String>((a, s.silences, r.rules, t))
            }
            .await;
            match r {
                Ok((a, s, r, t)) => {
                    alerts.set(a);
                    silences.set(s);
                    rules.set(r);
                    names.set(t.into_iter().map(|t| (t.id, t.name)).collect());
                    error.set(None);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    });

    // The selected alert with its transitions, fetched by id (it may be outside the filter).
    Effect::new(move |_| {
        reload.track();
        let (org, id) = (org.get(), selected.get());
        if org.is_empty() || id.is_empty() {
            detail.set(None);
            return;
        }
        spawn_local(async move {
            let path = format!("/api/v1/alerts/{}", api::seg(&id));
            let r = async {
                let a: pb::Alert = api::get(&path, &org).await?;
                let t: pb::ListAlertTransitionsResponse =
                    api::get(&format!("{path}/transitions"), &org).await?;
                Ok::<_, String>((a, t.transitions))
            }
            .await;
            match r {
                Ok(d) => detail.set(Some(d)),
                Err(e) => {
                    detail.set(None);
                    error.set(Some(e));
                }
            }
        });
    });

    Effect::new(move |_| {
        let org = org.get();
        live::subscribe(&org, "alerts", move |name, data| {
            if name != "alert" {
                return;
            }
            let st = state.get_untracked();
            apply_transition(alerts, data, |a| st.is_empty() || state_name(a.state) == st);
            if let Ok(t) = serde_json::from_str::<pb::AlertTransition>(data)
                && t.alert_id == selected.get_untracked()
                && let Some(a) = t.alert.clone()
            {
                detail.update(|d| {
                    if let Some((old, ts)) = d {
                        *old = a;
                        ts.push(t_without_alert(&t));
                    }
                });
            }
        });
    });

    let ack = move |id: String| {
        let org = org.get_untracked();
        spawn_local(async move {
            let path = format!("/api/v1/alerts/{}/ack", api::seg(&id));
            match api::post::<_, pb::Alert>(&path, &org, &pb::AckAlertRequest::default()).await {
                Ok(a) => {
                    alerts.update(|v| {
                        if let Some(x) = v.iter_mut().find(|x| x.id == a.id) {
                            *x = a.clone();
                        }
                    });
                    detail.update(|d| {
                        if let Some((old, _)) = d
                            && old.id == a.id
                        {
                            *old = a;
                        }
                    });
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };

    let s = session();
    let silence = move |a: pb::Alert| {
        let org = org.get_untracked();
        let dur = silence_for.get_untracked();
        let ms = SILENCE_FOR
            .iter()
            .find(|(n, _)| *n == dur)
            .map(|(_, ms)| *ms)
            .unwrap_or(3_600_000);
        let who = s
            .orgs
            .read_untracked()
            .iter()
            .find(|o| o.org == org)
            .map(|o| {
                if o.team.is_empty() {
                    o.org.clone()
                } else {
                    format!("{}/{}", o.org, o.team)
                }
            })
            .unwrap_or_else(|| org.clone());
        let body = pb::Silence {
            rule_id: a.rule_id.clone(),
            subject: a.subject.clone(),
            expires_at: Some(foureyes_proto::timestamp_from_ms(util::now_ms() + ms)),
            comment: format!(
                "{} on {} for {dur}, from the dashboard",
                a.rule_name, a.subject
            ),
            created_by: format!("{who} (dashboard)"),
            ..Default::default()
        };
        spawn_local(async move {
            match api::post::<_, pb::Silence>("/api/v1/silences", &org, &body).await {
                Ok(_) => reload.update(|n| *n += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };

    let unsilence = move |id: String| {
        let org = org.get_untracked();
        spawn_local(async move {
            match api::delete(&format!("/api/v1/silences/{}", api::seg(&id)), &org).await {
                Ok(()) => reload.update(|n| *n += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };

    // Filter and selection live in the URL, so the page is a link.
    let navigate = use_navigate();
    let go = move |st: String, alert: String| {
        navigate(
            &link(
                "/alerts",
                &org.get_untracked(),
                &range.get_untracked(),
                &[("state", st), ("alert", alert)],
            ),
            Default::default(),
        );
    };
    let go2 = go.clone();
    let on_state =
        move |ev: leptos::ev::Event| go2(event_target_value(&ev), selected.get_untracked());

    let rows = move || {
        let (o, r, sel) = (org.get(), range.get(), selected.get());
        let n = names.read();
        alerts
            .get()
            .into_iter()
            .map(|a| {
                let st = state_name(a.state);
                let sev = severity_name(a.severity);
                let href = link(
                    "/alerts",
                    &o,
                    &r,
                    &[("state", state.get()), ("alert", a.id.clone())],
                );
                let id = a.id.clone();
                let acked = (!a.acked_by.is_empty()).then(|| {
                    format!(
                        "acked by {} at {}",
                        a.acked_by,
                        util::fmt_time(util::ts_ms(&a.acked_at))
                    )
                });
                view! {
                    <tr
                        class="alert"
                        class:selected={a.id == sel}
                        data-alert-id=a.id.clone()
                        data-state=st
                        data-acked={if a.acked_by.is_empty() { "no" } else { "yes" }}
                        data-silenced={if a.silenced { "yes" } else { "no" }}
                    >
                        <td>
                            <span class=format!("badge state-{st}")>{st}</span>
                        </td>
                        <td class=format!("sev-{sev}")>{sev}</td>
                        <td>
                            <a href=href>{a.rule_name.clone()}</a>
                        </td>
                        <td>{subject_view(&a, &n, &o, &r)}</td>
                        <td class="dim">{util::fmt_time(since_ms(&a))}</td>
                        <td class="value">{values(&a)}</td>
                        <td>
                            {a.silenced.then(|| view! { <span class="dim">"silenced · "</span> })}
                            {match acked {
                                Some(t) => view! { <span class="acked">{t}</span> }.into_any(),
                                None if a.state != pb::AlertState::Resolved as i32 => {
                                    view! {
                                        <button class="ack" on:click=move |_| ack(id.clone())>
                                            "Acknowledge"
                                        </button>
                                    }
                                        .into_any()
                                }
                                None => ().into_any(),
                            }}
                        </td>
                    </tr>
                }
            })
            .collect_view()
    };

    let detail_view = move || {
        let (a, ts) = detail.get()?;
        let (o, r) = (org.get(), range.get());
        let subject = subject_view(&a, &names.read(), &o, &r);
        let a2 = a.clone();
        let id = a.id.clone();
        let go = go.clone();
        let mut labels: Vec<_> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        Some(view! {
            <aside class="alert-detail" id="alert-detail" data-alert-id=a.id.clone()>
                <button class="close" on:click=move |_| go(state.get_untracked(), String::new())>
                    "×"
                </button>
                <h2>
                    <span class=format!("badge state-{}", state_name(a.state))>
                        {state_name(a.state)}
                    </span>
                    " " {a.rule_name.clone()} " · " {subject}
                </h2>
                <p>{a.summary.clone()}</p>
                <p class="dim">
                    {format!(
                        "{} · {} · started {} · fired {} · resolved {}",
                        a.kind,
                        severity_name(a.severity),
                        util::fmt_time(util::ts_ms(&a.started_at)),
                        util::fmt_time(util::ts_ms(&a.fired_at)),
                        util::fmt_time(util::ts_ms(&a.resolved_at)),
                    )}
                </p>
                <p>"Last values: " {values(&a)}</p>
                {(!labels.is_empty()).then(|| view! { <p class="dim">"Labels: " {labels.join(", ")}</p> })}
                <p>
                    {if a.acked_by.is_empty() {
                        view! {
                            <button id="ack" on:click=move |_| ack(id.clone())>
                                "Acknowledge"
                            </button>
                        }
                            .into_any()
                    } else {
                        view! {
                            <span class="acked" id="acked">
                                {format!(
                                    "Acknowledged by {} at {}",
                                    a.acked_by,
                                    util::fmt_time(util::ts_ms(&a.acked_at)),
                                )}
                            </span>
                        }
                            .into_any()
                    }}
                    " · Silence this rule on this subject for "
                    <select id="silence-for" on:change=move |ev| silence_for.set(event_target_value(&ev))>
                        {SILENCE_FOR
                            .iter()
                            .map(|(n, _)| view! { <option value=*n>{*n}</option> })
                            .collect_view()}
                    </select>
                    " "
                    <button id="silence" on:click=move |_| silence(a2.clone())>
                        "Silence"
                    </button>
                    {a.silenced.then(|| view! { <span class="dim">" (silenced now)"</span> })}
                </p>
                <h3>"Transitions"</h3>
                <ul class="transitions">
                    {ts
                        .iter()
                        .map(|t| {
                            view! {
                                <li>
                                    {util::fmt_time(util::ts_ms(&t.at))} " " {state_name(t.from)}
                                    " → " {state_name(t.to)}
                                    {(!t.notify).then_some(" (not notified)")}
                                </li>
                            }
                        })
                        .collect_view()}
                </ul>
            </aside>
        })
    };

    let silence_rows = move || {
        silences
            .get()
            .into_iter()
            .map(|s| {
                let id = s.id.clone();
                let rule = if s.rule_id.is_empty() {
                    "any rule".to_string()
                } else {
                    rules
                        .read()
                        .iter()
                        .find(|r| r.id == s.rule_id)
                        .map(|r| r.name.clone())
                        .unwrap_or_else(|| s.rule_id.clone())
                };
                let subject = if s.subject.is_empty() {
                    "any subject".to_string()
                } else {
                    names
                        .read()
                        .get(&s.subject)
                        .cloned()
                        .unwrap_or_else(|| s.subject.clone())
                };
                view! {
                    <tr class="silence" data-silence-id=s.id.clone()>
                        <td>{rule}</td>
                        <td>{subject}</td>
                        <td>{util::fmt_time(util::ts_ms(&s.expires_at))}</td>
                        <td class="dim">{s.created_by.clone()}</td>
                        <td class="dim">{s.comment.clone()}</td>
                        <td>
                            <button class="remove-silence" on:click=move |_| unsilence(id.clone())>
                                "Remove"
                            </button>
                        </td>
                    </tr>
                }
            })
            .collect_view()
    };

    let rule_rows = move || {
        rules
            .get()
            .into_iter()
            .map(|r| {
                view! {
                    <tr class="rule" data-rule-id=r.id.clone()>
                        <td>{r.name.clone()}</td>
                        <td>{rule_kind(&r)}</td>
                        <td>{severity_name(r.severity)}</td>
                        <td>
                            {if r.notifiers.is_empty() {
                                "none".to_string()
                            } else {
                                r.notifiers.join(", ")
                            }}
                        </td>
                        <td class="dim">{if r.file_managed { "rules file" } else { "API" }}</td>
                    </tr>
                }
            })
            .collect_view()
    };

    view! {
        <section class="alerts">
            <h1>"Alerts"</h1>
            <p>
                <label>
                    "State "
                    <select id="alert-state" on:change=on_state prop:value=move || state.get()>
                        <option value="">"all"</option>
                        <option value="firing">"firing"</option>
                        <option value="pending">"pending"</option>
                        <option value="resolved">"resolved"</option>
                    </select>
                </label>
                <span class="dim">
                    " Firing and pending alerts show whatever their age; resolved ones within the range."
                </span>
            </p>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            {detail_view}
            <table class="alerts">
                <thead>
                    <tr>
                        <th>"State"</th>
                        <th>"Severity"</th>
                        <th>"Rule"</th>
                        <th>"Subject"</th>
                        <th>"Since"</th>
                        <th>"Last value"</th>
                        <th></th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
            <Show when=move || alerts.read().is_empty()>
                <p class="empty">"No alerts."</p>
            </Show>
            <h2>"Active silences"</h2>
            <table class="silences">
                <thead>
                    <tr>
                        <th>"Rule"</th>
                        <th>"Subject"</th>
                        <th>"Expires"</th>
                        <th>"By"</th>
                        <th>"Comment"</th>
                        <th></th>
                    </tr>
                </thead>
                <tbody>{silence_rows}</tbody>
            </table>
            <h2>"Rules"</h2>
            <table class="rules">
                <thead>
                    <tr>
                        <th>"Name"</th>
                        <th>"Kind"</th>
                        <th>"Severity"</th>
                        <th>"Notifiers"</th>
                        <th>"Managed by"</th>
                    </tr>
                </thead>
                <tbody>{rule_rows}</tbody>
            </table>
        </section>
    }
}

/// A transition as listed in the detail panel (the alert itself is shown once, above).
fn t_without_alert(t: &pb::AlertTransition) -> pb::AlertTransition {
    pb::AlertTransition {
        alert: None,
        ..t.clone()
    }
}
