//! Alerts: firing, pending, resolved, with acknowledge and silence. The alerts API is being built
//! in parallel; this view is the place it lands (and the overview's `alerts-slot` shows the firing
//! ones on top).

use leptos::prelude::*;

#[component]
pub fn Alerts() -> impl IntoView {
    view! {
        <section class="alerts">
            <h1>"Alerts"</h1>
            <p class="placeholder">
                "Alert rules and notifications are not served by this collector yet. Once they are, this view lists firing, pending and resolved alerts with acknowledge and silence."
            </p>
        </section>
    }
}
