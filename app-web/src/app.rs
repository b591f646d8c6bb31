//! The app shell: the session context, the router, and the URL-held view state (org, range).

use foureyes_proto::v1 as pb;
use leptos::{prelude::*, task::spawn_local};
use leptos_router::{
    components::{Route, Router, Routes},
    hooks::{use_location, use_navigate, use_query_map},
    path,
};

use crate::{api, nav::Nav, util, views};

/// The orgs this browser's session is signed into (no secrets: the cookie holds those).
#[derive(Clone, Copy)]
pub struct SessionCtx {
    pub orgs: RwSignal<Vec<pb::SessionOrg>>,
    pub loaded: RwSignal<bool>,
}

impl SessionCtx {
    pub fn refresh(self) {
        spawn_local(async move {
            match api::get::<pb::Session>("/api/v1/session", "").await {
                Ok(s) => self.orgs.set(s.orgs),
                Err(_) => self.orgs.set(Vec::new()),
            }
            self.loaded.set(true);
        });
    }
}

pub fn session() -> SessionCtx {
    expect_context::<SessionCtx>()
}

/// The org the URL names (`?org=`), else the first signed-in one.
pub fn use_org() -> Signal<String> {
    let q = use_query_map();
    let s = session();
    Signal::derive(move || {
        q.read()
            .get("org")
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| {
                s.orgs
                    .read()
                    .first()
                    .map(|o| o.org.clone())
                    .unwrap_or_default()
            })
    })
}

/// The time range the URL names (`?range=`), one of [`util::RANGES`].
pub fn use_range() -> Signal<String> {
    let q = use_query_map();
    Signal::derive(move || {
        q.read()
            .get("range")
            .filter(|r| util::RANGES.iter().any(|(n, _)| n == r))
            .unwrap_or_else(|| util::DEFAULT_RANGE.to_string())
    })
}

/// A link that keeps the org and range, plus `extra` query parameters.
pub fn link(path: &str, org: &str, range: &str, extra: &[(&str, String)]) -> String {
    let mut p = vec![("org", org.to_string()), ("range", range.to_string())];
    p.extend(extra.iter().cloned());
    format!("{path}?{}", api::query(&p))
}

/// A counter that ticks every `secs` seconds while the calling view lives, so "stale" and the
/// chart's right edge move without new data.
pub fn use_tick(secs: u64) -> ReadSignal<u64> {
    let (tick, set_tick) = signal(0u64);
    if let Ok(h) = set_interval_with_handle(
        move || set_tick.update(|t| *t += 1),
        std::time::Duration::from_secs(secs),
    ) {
        on_cleanup(move || h.clear());
    }
    tick
}

#[component]
pub fn App() -> impl IntoView {
    let s = SessionCtx {
        orgs: RwSignal::new(Vec::new()),
        loaded: RwSignal::new(false),
    };
    provide_context(s);
    s.refresh();
    view! {
        <Router>
            <Shell />
        </Router>
    }
}

#[component]
fn Shell() -> impl IntoView {
    let loc = use_location();
    let s = session();
    let navigate = use_navigate();
    // Without a session every view but sign-in sends the user to sign in.
    Effect::new(move |_| {
        if s.loaded.get() && s.orgs.read().is_empty() && loc.pathname.get() != "/signin" {
            navigate("/signin", Default::default());
        }
    });
    let wall = move || loc.pathname.get().starts_with("/wall");
    view! {
        <div class="app" class:wall=wall>
            <Show when=move || !wall()>
                <Nav />
            </Show>
            <main>
                <Routes fallback=|| view! { <p class="error">"No such page."</p> }>
                    <Route path=path!("/") view=views::overview::Overview />
                    <Route path=path!("/signin") view=views::signin::SignIn />
                    <Route path=path!("/tests/:id") view=views::test::TestDetail />
                    <Route path=path!("/bgp") view=views::bgp::Bgp />
                    <Route path=path!("/agents") view=views::agents::Agents />
                    <Route path=path!("/alerts") view=views::alerts::Alerts />
                    <Route path=path!("/wall") view=views::wall::Wall />
                </Routes>
            </main>
        </div>
    }
}
