//! The FourEyes dashboard: a Leptos client-side app compiled to wasm and served by the collector.
//!
//! It talks only to the collector's REST API and SSE stream, with the wire types generated from
//! proto/ (`foureyes-proto` without its gRPC half). It never sees an API token after sign-in: the
//! collector swaps the token for an HttpOnly session cookie, so nothing here can leak it to a URL,
//! a log or storage.

mod api;
mod app;
mod chart;
mod live;
mod nav;
mod util;
mod views;

fn main() {
    leptos::mount::mount_to_body(app::App);
}
