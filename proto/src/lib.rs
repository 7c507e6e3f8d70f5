//! Dapr's gRPC wire contracts, generated from the .proto files in this crate.
//!
//! Package and message names and field numbers follow Dapr's, so official Dapr
//! SDKs and sidecars interoperate with code built on these types. Modules nest
//! as the proto packages do (`dapr::proto::runtime::v1`); the short aliases
//! [`common`], [`runtime`] and [`internals`] are what the rest of the workspace uses.

pub mod codec;

#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod dapr {
    pub mod proto {
        pub mod common {
            pub mod v1 {
                tonic::include_proto!("dapr.proto.common.v1");
            }
        }
        pub mod runtime {
            pub mod v1 {
                tonic::include_proto!("dapr.proto.runtime.v1");
            }
        }
        pub mod internals {
            pub mod v1 {
                tonic::include_proto!("dapr.proto.internals.v1");
            }
        }
        pub mod operator {
            pub mod v1 {
                tonic::include_proto!("dapr.proto.operator.v1");
            }
        }
        pub mod sentry {
            pub mod v1 {
                tonic::include_proto!("dapr.proto.sentry.v1");
            }
        }
    }
}

/// `dapr.proto.common.v1`: messages shared by every API.
pub use dapr::proto::common::v1 as common;
/// `dapr.proto.internals.v1`: invocation between sidecars.
pub use dapr::proto::internals::v1 as internals;
/// `dapr.proto.operator.v1`: resources served to sidecars.
pub use dapr::proto::operator::v1 as operator;
/// `dapr.proto.runtime.v1`: the public API (`Dapr`) and the app callbacks.
pub use dapr::proto::runtime::v1 as runtime;
/// `dapr.proto.sentry.v1`: certificates for workloads.
pub use dapr::proto::sentry::v1 as sentry;

/// Encoded `FileDescriptorSet` of every file above, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
