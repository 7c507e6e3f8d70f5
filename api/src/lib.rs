//! Dapr's resource types, shared by `daprd`, `daprs-operator` and `daprs-injector`.
//!
//! The types parse the YAML Dapr users already have (`apiVersion: dapr.io/v1alpha1`
//! and `dapr.io/v2alpha1`) and derive the CRD schemas the operator installs.
//! Nothing here does I/O.
//!
//! Layout:
//! - [`v1alpha1`]: Component, Configuration, Resiliency, HTTPEndpoint, Subscription (v1).
//! - [`v2alpha1`]: Subscription (v2, routes with rules).
//! - [`resource`]: decoding multi-document YAML into a [`resource::Resource`].
//! - [`crds`]: the CustomResourceDefinitions derived from the types.

pub mod contract;
pub mod convert;
pub mod crds;
pub mod resource;
pub mod v1alpha1;
pub mod v2alpha1;

pub use resource::{Resource, ResourceError};

/// The API group of every Dapr resource.
pub const GROUP: &str = "dapr.io";
