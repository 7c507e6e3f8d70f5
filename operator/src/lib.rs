//! `daprs-operator`: reconciles Dapr's resources in a cluster, serves them to
//! sidecars and acts as their certificate authority.
//!
//! The shared resource types come from `daprs-api`.

pub use daprs_api as api;
