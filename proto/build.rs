//! Compiles the `.proto` files with `protox` (pure Rust, no `protoc`) and keeps the
//! encoded descriptor set for gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "marquee/v1/embedding.proto",
    "marquee/v1/models.proto",
    "marquee/v1/retrieval.proto",
    "marquee/v1/evaluation.proto",
    "marquee/v1/generation.proto",
    "marquee/v1/training.proto",
    "marquee/storage/v1/storage.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("marquee_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
