//! `foureyes-bgp-listener` library: receive-only BGP sessions.
//!
//! - [`iana`]: every code point, with its registry.
//! - [`wire`]: framing, OPEN/KEEPALIVE/NOTIFICATION, and [`wire::Outgoing`], the only thing the
//!   listener can send (no UPDATE, no ROUTE-REFRESH).
//! - [`update`]: UPDATE decoding with RFC 7606 error handling.
//! - [`rib`]: per-peer Adj-RIB-In turning UPDATEs into [`event::RouteEvent`]s.
//! - [`session`]: the sans-IO session state machine.
//! - [`driver`]: the thin tokio task owning the socket and timers.
//! - [`transport`]: TCP MD5 keys and the TTL policy (GTSM, multihop) of a peer's connections.
//! - [`watch`]: the `watch` command (standalone session printing events).
//! - [`event_jsonl`]: events as JSON lines, written directly (what `watch::event_json` gives).
//! - [`bmp`]: the sans-IO BMP station (RFC 7854, RFC 9069 Loc-RIB), one per router connection.
//! - [`bmp_station`]: its tokio side (`run`) and the standalone `bmp` command.
//! - [`config`]: `listener.toml` for `run`.
//! - [`run`] and [`export`] (feature `agent`): the collector-connected listener and the wire form
//!   of its events.
//! - [`mrt`]: MRT (RFC 6396) reading: decompression, record framing, records to events.
//! - [`replay`]: the `replay` command (MRT files printed as `watch` events).
//! - [`fuzzing`]: the bodies of the cargo-fuzz targets, shared with `tests/fuzz_regressions.rs`.
//! - [`resync`]: when and how `run` sends the collector a snapshot of its tables after the spool
//!   dropped events.

pub mod bmp;
pub mod bmp_station;
pub mod config;
pub mod driver;
pub mod event;
pub mod event_jsonl;
#[cfg(feature = "agent")]
pub mod export;
pub mod fuzzing;
pub mod iana;
pub mod mrt;
pub mod replay;
pub mod resync;
pub mod rib;
#[cfg(feature = "agent")]
pub mod run;
pub mod session;
mod set_index;
pub mod transport;
pub mod update;
mod v4map;
pub mod watch;
pub mod wire;
