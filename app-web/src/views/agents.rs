//! Agents: nodes and listeners with version, last seen and certificate expiry; mint an
//! enrollment token (shown once, never stored by the page) and revoke an agent.

use foureyes_proto::v1 as pb;
use leptos::{prelude::*, task::spawn_local};

use crate::{api, app::use_org, util};

#[component]
pub fn Agents() -> impl IntoView {
    let org = use_org();
    let agents = RwSignal::new(Vec::<pb::Agent>::new());
    let error = RwSignal::new(None::<String>);
    let minted = RwSignal::new(None::<pb::EnrollmentToken>);
    let kind = RwSignal::new("node".to_string());
    let reload = RwSignal::new(0u32);

    Effect::new(move |_| {
        reload.track();
        let org = org.get();
        if org.is_empty() {
            return;
        }
        spawn_local(async move {
            match api::get::<pb::ListAgentsResponse>("/api/v1/agents", &org).await {
                Ok(a) => {
                    agents.set(a.agents);
                    error.set(None);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    });

    let mint = move |_| {
        let org = org.get_untracked();
        let k = if kind.get_untracked() == "listener" {
            pb::AgentKind::Listener
        } else {
            pb::AgentKind::Node
        };
        spawn_local(async move {
            let req = pb::CreateEnrollmentTokenRequest {
                team: String::new(),
                ttl_seconds: 3600,
                kind: k as i32,
            };
            match api::post::<_, pb::EnrollmentToken>("/api/v1/enrollment-tokens", &org, &req).await
            {
                Ok(t) => minted.set(Some(t)),
                Err(e) => error.set(Some(e)),
            }
        });
    };

    let revoke = move |id: String| {
        let ok = web_sys::window()
            .and_then(|w| {
                w.confirm_with_message(&format!(
                    "Revoke agent {id}? It cannot enroll again under this id."
                ))
                .ok()
            })
            .unwrap_or(false);
        if !ok {
            return;
        }
        let org = org.get_untracked();
        spawn_local(async move {
            match api::post_empty::<pb::Agent>(
                &format!("/api/v1/agents/{}/revoke", api::seg(&id)),
                &org,
            )
            .await
            {
                Ok(_) => reload.update(|n| *n += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };

    view! {
        <section class="agents">
            <h1>"Agents"</h1>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            <table class="agents">
                <thead>
                    <tr>
                        <th>"Id"</th>
                        <th>"Kind"</th>
                        <th>"Host"</th>
                        <th>"Version"</th>
                        <th>"State"</th>
                        <th>"Last seen"</th>
                        <th>"Certificate expires"</th>
                        <th></th>
                    </tr>
                </thead>
                <tbody>
                    {move || {
                        agents
                            .get()
                            .into_iter()
                            .map(|a| {
                                let kind = pb::AgentKind::try_from(a.kind)
                                    .map(|k| k.as_str_name().trim_start_matches("AGENT_KIND_").to_ascii_lowercase())
                                    .unwrap_or_default();
                                let state = if a.revoked {
                                    "revoked"
                                } else if a.connected {
                                    "connected"
                                } else {
                                    "offline"
                                };
                                let id = a.id.clone();
                                view! {
                                    <tr class="agent" data-agent-id=a.id.clone() data-state=state>
                                        <td>{a.id.clone()}</td>
                                        <td>{kind}</td>
                                        <td>{a.hostname.clone()}</td>
                                        <td>{a.version.clone()}</td>
                                        <td>
                                            <span class=match state {
                                                "connected" => "green",
                                                "revoked" => "red",
                                                _ => "amber",
                                            }>{state}</span>
                                        </td>
                                        <td>{util::fmt_time(util::ts_ms(&a.last_seen))}</td>
                                        <td>{util::fmt_time(util::ts_ms(&a.certificate_not_after))}</td>
                                        <td>
                                            <Show when=move || !a.revoked>
                                                <button
                                                    class="revoke"
                                                    on:click={
                                                        let id = id.clone();
                                                        move |_| revoke(id.clone())
                                                    }
                                                >
                                                    "Revoke"
                                                </button>
                                            </Show>
                                        </td>
                                    </tr>
                                }
                            })
                            .collect_view()
                    }}
                </tbody>
            </table>
            <h2>"Enroll an agent"</h2>
            <p>
                <select on:change=move |ev| kind.set(event_target_value(&ev))>
                    <option value="node">"node"</option>
                    <option value="listener">"BGP listener"</option>
                </select>
                " "
                <button id="mint" on:click=mint>
                    "Mint enrollment token (1 h, single use)"
                </button>
            </p>
            {move || {
                minted
                    .get()
                    .map(|t| {
                        view! {
                            <div class="once">
                                <p>"Shown once; copy it now. Valid until " {util::fmt_time(util::ts_ms(&t.expires_at))} ":"</p>
                                <code id="enrollment-token">{t.token.clone()}</code>
                                <p class="dim">
                                    "foureyes-node enroll --collector HOST:PORT --token (this token)"
                                </p>
                                <button on:click=move |_| minted.set(None)>"Done"</button>
                            </div>
                        }
                    })
            }}
        </section>
    }
}
