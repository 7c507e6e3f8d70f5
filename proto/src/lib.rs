//! Dapr's gRPC wire contracts, generated from the .proto files in this crate.
//!
//! Package and message names and field numbers follow Dapr's, so official Dapr
//! SDKs and sidecars interoperate with code built on these types.

/// `dapr.proto.common.v1`: messages shared by every API.
pub mod common {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("dapr.proto.common.v1");
}

/// `dapr.proto.runtime.v1`: the public API (`Dapr`) and the app callbacks.
pub mod runtime {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("dapr.proto.runtime.v1");
}

/// `dapr.proto.internals.v1`: invocation between sidecars.
pub mod internals {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("dapr.proto.internals.v1");
}

/// Encoded `FileDescriptorSet` of every file above, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
