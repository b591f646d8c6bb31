// A receive-only session cannot put an UPDATE on the wire: `Outgoing` has no such variant, and
// `encode` (the only public encoder) takes nothing else.
use foureyes_bgp_listener::wire::{encode, Outgoing};

fn main() {
    let end_of_rib = Outgoing::Update(Vec::new());
    let _ = encode(&end_of_rib);
}
