//! Live updates from `/api/v1/stream`.
//!
//! The browser's `EventSource` cannot send headers, so the stream is authenticated by the session
//! cookie and names its org in the `org` query parameter (not a secret). The source closes when the
//! view that opened it goes away; the browser reconnects on its own with `Last-Event-ID`.

use leptos::prelude::*;
use send_wrapper::SendWrapper;
use wasm_bindgen::{JsCast, closure::Closure};
use web_sys::{EventSource, MessageEvent};

/// An open stream; closing happens on drop.
struct Source {
    es: EventSource,
    _handlers: Vec<Closure<dyn FnMut(MessageEvent)>>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.es.close();
    }
}

/// Opens the org's stream for the owner's lifetime; `on_event(name, json)` gets every event.
pub fn subscribe(org: &str, kinds: &str, on_event: impl Fn(&str, &str) + Clone + 'static) {
    if org.is_empty() {
        return;
    }
    let url = format!(
        "/api/v1/stream?{}",
        crate::api::query(&[("org", org.to_string()), ("kinds", kinds.to_string())])
    );
    let Ok(es) = EventSource::new(&url) else {
        return;
    };
    let mut handlers = Vec::new();
    for name in ["result", "route_event", "correlation", "alert"] {
        let f = on_event.clone();
        let h = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            if let Some(data) = e.data().as_string() {
                f(name, &data);
            }
        });
        let _ = es.add_event_listener_with_callback(name, h.as_ref().unchecked_ref());
        handlers.push(h);
    }
    let source = SendWrapper::new(Source {
        es,
        _handlers: handlers,
    });
    on_cleanup(move || drop(source));
}
