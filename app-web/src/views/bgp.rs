//! BGP: the listeners' peers with their session state, and a prefix search (longest-prefix or
//! exact) showing each peer's current paths and the prefix's event history.

use foureyes_proto::v1 as pb;
use leptos::{prelude::*, task::spawn_local};
use leptos_router::hooks::{use_navigate, use_query_map};

use crate::{
    api,
    app::{link, use_org, use_range, use_tick},
    live, util,
};

/// Seconds between reloads of the peer list (route counts move with every update; session
/// changes come live and reload it at once).
const PEERS_REFRESH_SECS: u64 = 30;

#[component]
pub fn Bgp() -> impl IntoView {
    let org = use_org();
    let range = use_range();
    let q = use_query_map();
    let prefix = Signal::derive(move || q.read().get("prefix").unwrap_or_default());
    let how = Signal::derive(move || {
        q.read()
            .get("match")
            .filter(|m| m == "exact" || m == "longest")
            .unwrap_or_else(|| "longest".into())
    });
    let peers = RwSignal::new(Vec::<pb::PeerState>::new());
    let peers_reload = RwSignal::new(0u32);
    let peers_tick = use_tick(PEERS_REFRESH_SECS);
    let routes = RwSignal::new(Vec::<pb::Route>::new());
    let history = RwSignal::new(Vec::<pb::RouteEvent>::new());
    let error = RwSignal::new(None::<String>);
    let input = RwSignal::new(String::new());

    Effect::new(move |_| {
        peers_reload.track();
        peers_tick.track();
        let org = org.get();
        if org.is_empty() {
            return;
        }
        spawn_local(async move {
            match api::get::<pb::ListPeersResponse>("/api/v1/peers", &org).await {
                Ok(p) => peers.set(p.peers),
                Err(e) => error.set(Some(e)),
            }
        });
    });

    Effect::new(move |_| {
        let (org, p, m) = (org.get(), prefix.get(), how.get());
        input.set(p.clone());
        if org.is_empty() || p.is_empty() {
            routes.set(Vec::new());
            history.set(Vec::new());
            return;
        }
        let from = util::now_ms() - util::range_ms(&range.get());
        spawn_local(async move {
            let r = async {
                let rs: pb::ListRoutesResponse = api::get(
                    &format!(
                        "/api/v1/routes?{}",
                        api::query(&[("prefix", p.clone()), ("match", m.clone())])
                    ),
                    &org,
                )
                .await?;
                let ev_match = if m == "exact" { "exact" } else { "covering" };
                let evs = api::all_route_events(
                    &org,
                    &[
                        ("prefix", p.clone()),
                        ("match", ev_match.into()),
                        ("from", from.to_string()),
                    ],
                )
                .await?;
                Ok::<_, String>((rs.routes, evs))
            }
            .await;
            match r {
                Ok((rs, evs)) => {
                    routes.set(rs);
                    history.set(evs);
                    error.set(None);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    });

    Effect::new(move |_| {
        let org = org.get();
        live::subscribe(&org, "route_events", move |name, data| {
            if name != "route_event" {
                return;
            }
            let Ok(e) = serde_json::from_str::<pb::RouteEvent>(data) else {
                return;
            };
            // A session change: show it at once, then reload for the route counts.
            let down = e.r#type == pb::RouteEventType::SessionDown as i32;
            if down || e.r#type == pb::RouteEventType::SessionUp as i32 {
                let addr = e
                    .peer
                    .as_ref()
                    .map(|p| p.address.clone())
                    .unwrap_or_default();
                peers.update(|v| {
                    if let Some(p) = v.iter_mut().find(|p| {
                        p.agent_id == e.agent_id
                            && p.peer.as_ref().is_some_and(|x| x.address == addr)
                    }) {
                        p.state = if down { "down" } else { "up" }.into();
                        p.since = e.received_at;
                        if down {
                            p.last_error = e.reason.clone();
                            p.last_error_at = e.received_at;
                        }
                    }
                });
                peers_reload.update(|n| *n += 1);
            }
        });
    });

    let navigate = use_navigate();
    let search = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        navigate(
            &link(
                "/bgp",
                &org.get_untracked(),
                &range.get_untracked(),
                &[
                    ("prefix", input.get_untracked().trim().to_string()),
                    ("match", how.get_untracked()),
                ],
            ),
            Default::default(),
        );
    };
    let navigate2 = use_navigate();
    let on_match = move |ev: leptos::ev::Event| {
        navigate2(
            &link(
                "/bgp",
                &org.get_untracked(),
                &range.get_untracked(),
                &[
                    ("prefix", prefix.get_untracked()),
                    ("match", event_target_value(&ev)),
                ],
            ),
            Default::default(),
        );
    };

    view! {
        <section class="bgp">
            <h1>"BGP"</h1>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            <h2>"Peers"</h2>
            <table class="peers">
                <thead>
                    <tr>
                        <th>"Listener"</th>
                        <th>"Peer"</th>
                        <th>"AS"</th>
                        <th>"State"</th>
                        <th>"Since"</th>
                        <th>"IPv4 routes"</th>
                        <th>"IPv6 routes"</th>
                        <th>"Last error"</th>
                    </tr>
                </thead>
                <tbody>
                    {move || {
                        peers
                            .get()
                            .into_iter()
                            .map(|p| {
                                let (addr, asn) = p
                                    .peer
                                    .as_ref()
                                    .map(|x| (x.address.clone(), x.asn))
                                    .unwrap_or_default();
                                let class = match p.state.as_str() {
                                    "up" => "green",
                                    "down" => "red",
                                    _ => "unknown",
                                };
                                let err = (!p.last_error.is_empty())
                                    .then(|| {
                                        format!(
                                            "{} ({})",
                                            p.last_error,
                                            util::fmt_time(util::ts_ms(&p.last_error_at)),
                                        )
                                    });
                                let peer_attr = addr.clone();
                                view! {
                                    <tr class="peer" data-peer=peer_attr data-state=p.state.clone()>
                                        <td>{p.agent_id.clone()}</td>
                                        <td>{addr}</td>
                                        <td>{asn}</td>
                                        <td>
                                            <span class=class>{p.state.clone()}</span>
                                        </td>
                                        <td>{util::fmt_time(util::ts_ms(&p.since))}</td>
                                        <td class="num v4">{p.prefixes_v4}</td>
                                        <td class="num v6">{p.prefixes_v6}</td>
                                        <td class="dim">{err}</td>
                                    </tr>
                                }
                            })
                            .collect_view()
                    }}
                </tbody>
            </table>
            <h2>"Prefix search"</h2>
            <form class="search" on:submit=search>
                <input
                    id="prefix"
                    placeholder="192.0.2.0/24 or an address"
                    prop:value=move || input.get()
                    on:input=move |ev| input.set(event_target_value(&ev))
                />
                <select id="match" on:change=on_match prop:value=move || how.get()>
                    <option value="longest">"longest match"</option>
                    <option value="exact">"exact"</option>
                </select>
                <button type="submit">"Search"</button>
            </form>
            <table class="routes">
                <thead>
                    <tr>
                        <th>"Listener"</th>
                        <th>"Peer"</th>
                        <th>"Prefix"</th>
                        <th>"AS path"</th>
                        <th>"Next hop"</th>
                        <th>"Since"</th>
                    </tr>
                </thead>
                <tbody>
                    {move || {
                        routes
                            .get()
                            .into_iter()
                            .map(|r| {
                                let peer = r
                                    .peer
                                    .as_ref()
                                    .map(|p| format!("{} AS{}", p.address, p.asn))
                                    .unwrap_or_default();
                                view! {
                                    <tr class="route" data-prefix=r.prefix.clone()>
                                        <td>{r.agent_id.clone()}</td>
                                        <td>{peer}</td>
                                        <td>{r.prefix.clone()}</td>
                                        <td>{util::as_path(&r.attributes)}</td>
                                        <td>
                                            {r.attributes.as_ref().map(|a| a.next_hop.clone())}
                                        </td>
                                        <td>{util::fmt_time(util::ts_ms(&r.since))}</td>
                                    </tr>
                                }
                            })
                            .collect_view()
                    }}
                </tbody>
            </table>
            <h2>"Event history"</h2>
            <table class="history">
                <tbody>
                    {move || {
                        history
                            .get()
                            .into_iter()
                            .rev()
                            .map(|e| {
                                view! {
                                    <tr class="event" data-type=util::event_type_name(e.r#type)>
                                        <td>{util::fmt_time(util::ts_ms(&e.received_at))}</td>
                                        <td>{util::event_type_name(e.r#type)}</td>
                                        <td>{e.prefix.clone()}</td>
                                        <td>
                                            {e.peer.as_ref().map(|p| p.address.clone())}
                                        </td>
                                        <td>{util::as_path(&e.attributes)}</td>
                                    </tr>
                                }
                            })
                            .collect_view()
                    }}
                </tbody>
            </table>
        </section>
    }
}
