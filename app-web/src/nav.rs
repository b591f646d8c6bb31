//! The top bar: views, the org switcher, the time range picker, sign-out.

use leptos::{prelude::*, task::spawn_local};
use leptos_router::hooks::{use_location, use_navigate};

use crate::{
    api,
    app::{link, session, use_org, use_range},
    util,
};

#[component]
pub fn Nav() -> impl IntoView {
    let s = session();
    let org = use_org();
    let range = use_range();
    let loc = use_location();
    let navigate = use_navigate();
    let nav2 = navigate.clone();
    let item = move |path: &'static str, label: &'static str| {
        view! {
            <a
                href=move || link(path, &org.get(), &range.get(), &[])
                class:active=move || {
                    let p = loc.pathname.get();
                    if path == "/" { p == "/" || p.starts_with("/tests") } else { p.starts_with(path) }
                }
            >
                {label}
            </a>
        }
    };
    let on_org = move |ev: leptos::ev::Event| {
        let v = event_target_value(&ev);
        if v == "+" {
            navigate("/signin", Default::default());
        } else {
            let path = loc.pathname.get_untracked();
            navigate(
                &link(&path, &v, &range.get_untracked(), &[]),
                Default::default(),
            );
        }
    };
    let on_range = move |ev: leptos::ev::Event| {
        let v = event_target_value(&ev);
        let path = use_location_path();
        nav2(
            &link(&path, &org.get_untracked(), &v, &[]),
            Default::default(),
        );
    };
    let sign_out = move |_| {
        spawn_local(async move {
            let _ = api::delete("/api/v1/session", "").await;
            s.orgs.set(Vec::new());
        });
    };
    view! {
        <nav class="top">
            <span class="brand">"FourEyes"</span>
            {item("/", "Overview")}
            {item("/bgp", "BGP")}
            {item("/agents", "Agents")}
            {item("/alerts", "Alerts")}
            {item("/wall", "Wallboard")}
            <span class="spacer"></span>
            <label>
                "Org "
                <select id="org-switch" on:change=on_org prop:value=move || org.get()>
                    {move || {
                        s.orgs
                            .get()
                            .into_iter()
                            .map(|o| {
                                let label = if o.team.is_empty() {
                                    o.org.clone()
                                } else {
                                    format!("{} / {}", o.org, o.team)
                                };
                                view! { <option value=o.org.clone()>{label}</option> }
                            })
                            .collect_view()
                    }}
                    <option value="+">"Sign in to another org…"</option>
                </select>
            </label>
            <label>
                "Range "
                <select id="range" on:change=on_range prop:value=move || range.get()>
                    {util::RANGES
                        .iter()
                        .map(|(n, _)| view! { <option value=*n>{*n}</option> })
                        .collect_view()}
                </select>
            </label>
            <button id="sign-out" on:click=sign_out>
                "Sign out"
            </button>
        </nav>
    }
}

fn use_location_path() -> String {
    web_sys::window()
        .and_then(|w| w.location().pathname().ok())
        .unwrap_or_else(|| "/".into())
}
