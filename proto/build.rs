//! Compiles proto/ with protox (pure Rust, no system `protoc`) into prost types, tonic stubs and
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

    tonic_prost_build::configure()
        .extern_path(".google.protobuf.Timestamp", "::pbjson_types::Timestamp")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&bytes)?
        // Emit default values (false, 0, "") so API consumers see every field explicitly.
        .emit_fields()
        .build(&[".foureyes"])?;
    Ok(())
}
