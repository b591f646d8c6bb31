//! Wallboard: dark, large type, rotating through chosen views
//! (`?views=overview,bgp,alerts&every=30`).

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{alerts::Alerts, bgp::Bgp, overview::Overview};
use crate::app::use_tick;

#[component]
pub fn Wall() -> impl IntoView {
    let q = use_query_map();
    let views = Signal::derive(move || {
        let v: Vec<String> = q
            .read()
            .get("views")
            .unwrap_or_else(|| "overview,bgp".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| ["overview", "bgp", "alerts"].contains(&s.as_str()))
            .collect();
        if v.is_empty() {
            vec!["overview".to_string()]
        } else {
            v
        }
    });
    let every = q
        .read_untracked()
        .get("every")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(30)
        .clamp(5, 3600);
    let tick = use_tick(every);
    view! {
        <div class="wallboard">
            {move || {
                let v = views.get();
                let i = (tick.get() as usize) % v.len().max(1);
                match v.get(i).map(String::as_str) {
                    Some("bgp") => view! { <Bgp /> }.into_any(),
                    Some("alerts") => view! { <Alerts /> }.into_any(),
                    _ => view! { <Overview /> }.into_any(),
                }
            }}
        </div>
    }
}
