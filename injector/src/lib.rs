//! `daprs-injector`: the admission webhook that adds `daprd` to pods annotated
//! with `dapr.io/enabled: "true"`.
//!
//! Annotation keys and the sidecar's flags are shared through `daprs-api`.

pub use daprs_api as api;
