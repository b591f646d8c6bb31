// Route refresh is not sent either.
use foureyes_bgp_listener::wire::Outgoing;

fn main() {
    let _ = Outgoing::RouteRefresh;
}
