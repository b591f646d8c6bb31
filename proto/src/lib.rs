//! The FourEyes wire contract.
//!
//! The `.proto` files under `proto/` are the only schema: the Rust types, the gRPC stubs, the
//! canonical proto3 JSON mapping used by the REST API and the OpenAPI document all derive from them.

#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/foureyes.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/foureyes.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of every `.proto` file, for reflection-style checks and OpenAPI.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub mod openapi;

pub use pbjson_types::Timestamp;

/// Converts a wall-clock time to the wire timestamp.
pub fn timestamp(t: std::time::SystemTime) -> Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Milliseconds since the Unix epoch of a wire timestamp.
pub fn timestamp_ms(t: &Timestamp) -> i64 {
    t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)
}

/// Wire timestamp from milliseconds since the Unix epoch.
pub fn timestamp_from_ms(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}
