//! Compiles `proto/pharos/v1/pharos.proto` into Rust (messages, tonic server and client) without a system
//! `protoc`: protox parses the file in Rust, tonic-prost-build generates the code. The encoded descriptor
//! set is written too, for gRPC server reflection (so `grpcurl` works without the .proto file).

use prost::Message as _;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/pharos/v1/pharos.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("pharos_v1_descriptor.bin"), fds.encode_to_vec())?;
    // Image fields as `bytes::Bytes`: the decoder reads them where tonic put them, no copy.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".pharos.v1.HashRequest.image")
        .bytes(".pharos.v1.HashAndMatchRequest.image")
        .compile_fds(fds)?;
    Ok(())
}
