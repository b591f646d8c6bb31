//! Sign-in with an API token. The token goes once, in a POST body, to `/api/v1/session`; the
//! collector answers with an HttpOnly cookie. The input is cleared right after, and the token is
//! kept nowhere else (no storage, no URL).

use foureyes_proto::v1 as pb;
use leptos::{prelude::*, task::spawn_local};
use leptos_router::hooks::use_navigate;

use crate::{
    api,
    app::{link, session},
    util,
};

#[component]
pub fn SignIn() -> impl IntoView {
    let s = session();
    let token = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let t = token.get_untracked();
        token.set(String::new());
        if t.trim().is_empty() {
            error.set(Some("Paste an API token (fea1…).".into()));
            return;
        }
        busy.set(true);
        let navigate = navigate.clone();
        spawn_local(async move {
            let req = pb::CreateSessionRequest {
                token: t.trim().to_string(),
            };
            match api::post::<_, pb::Session>("/api/v1/session", "", &req).await {
                Ok(sess) => {
                    // The org just added is the last one.
                    let org = sess.orgs.last().map(|o| o.org.clone()).unwrap_or_default();
                    s.orgs.set(sess.orgs);
                    s.loaded.set(true);
                    error.set(None);
                    navigate(
                        &link("/", &org, util::DEFAULT_RANGE, &[]),
                        Default::default(),
                    );
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    view! {
        <section class="signin">
            <h1>"Sign in"</h1>
            <p>
                "Paste an API token ("
                <code>"foureyes-collector apitoken create --org ORG --name NAME"</code>
                "). It is exchanged for a session cookie and not kept by this page. Signing in with a token of another org adds that org to this session."
            </p>
            <form on:submit=submit>
                <input
                    id="token"
                    type="password"
                    autocomplete="off"
                    placeholder="fea1…"
                    prop:value=move || token.get()
                    on:input=move |ev| token.set(event_target_value(&ev))
                />
                <button id="sign-in" type="submit" disabled=move || busy.get()>
                    "Sign in"
                </button>
            </form>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            <ul class="orgs">
                {move || {
                    s.orgs
                        .get()
                        .into_iter()
                        .map(|o| {
                            let href = link("/", &o.org, util::DEFAULT_RANGE, &[]);
                            view! {
                                <li>
                                    <a href=href>{o.org}</a>
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ul>
        </section>
    }
}
