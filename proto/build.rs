//! Compiles the .proto files with protox (pure Rust), so a build needs no system `protoc`.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "dapr/proto/common/v1/common.proto",
    "dapr/proto/runtime/v1/dapr.proto",
    "dapr/proto/runtime/v1/appcallback.proto",
    "dapr/proto/internals/v1/service_invocation.proto",
    "dapr/proto/sentry/v1/sentry.proto",
    "dapr/proto/operator/v1/operator.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=dapr");
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // The encoded descriptor set feeds gRPC server reflection.
    std::fs::write(out.join("descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        // Invocation metadata holds a handful of headers per call: a B-tree
        // node takes one allocation and a few comparisons where a hash map
        // hashes every key with SipHash and regrows as it is decoded.
        .btree_map(".dapr.proto.internals.v1")
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
