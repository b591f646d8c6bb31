//! Shared by the targets that make events: the direct JSON-lines writer must give exactly what
//! the reference (`watch::event_json`, serde_json) gives.

use foureyes_bgp_listener::event::Event;
use foureyes_bgp_listener::event_jsonl::JsonlWriter;
use foureyes_bgp_listener::watch::event_json;

pub fn assert_same_json(w: &mut JsonlWriter, ev: &Event) {
    let mut line = Vec::new();
    w.line(&mut line, ev);
    assert!(
        line == format!("{}\n", event_json(ev)).into_bytes(),
        "event_jsonl differs from event_json for {ev:?}"
    );
}
