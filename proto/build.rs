//! Compiles proto/ with protox (pure Rust, no system `protoc`) into prost types, tonic stubs (feature `grpc`) and
//! canonical proto3 JSON (pbjson), and keeps the descriptor set for the contract tests and OpenAPI.
use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/foureyes/v1/probe.proto",
        "proto/foureyes/v1/rpki.proto",
        "proto/foureyes/v1/bgp.proto",
        "proto/foureyes/v1/correlation.proto",
        "proto/foureyes/v1/alert.proto",
        "proto/foureyes/v1/pathcheck.proto",
        "proto/foureyes/v1/agent.proto",
        "proto/foureyes/v1/api.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let bytes = fds.encode_to_vec();
    std::fs::write(out.join("descriptor.bin"), &bytes)?;

    // Cargo sets this when the `grpc` feature is on; without it only messages are generated.
    let grpc = env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .extern_path(".google.protobuf.Timestamp", "::pbjson_types::Timestamp")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&bytes)?
        // Emit default values (false, 0, "") so API consumers see every field explicitly.
        .emit_fields()
        .build(&[".foureyes"])?;
    Ok(())
}
