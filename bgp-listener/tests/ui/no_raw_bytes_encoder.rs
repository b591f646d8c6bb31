// Nor can raw UPDATE bytes be handed to the encoder: it takes an `Outgoing`, not bytes.
use foureyes_bgp_listener::wire::encode;

fn main() {
    let update: Vec<u8> = vec![0xff; 23];
    let _ = encode(&update);
}
