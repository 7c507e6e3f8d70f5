//! `daprs-injector`: decides which pods get a `daprd` sidecar and builds the
//! JSON patch that adds it. The decision and the patch are pure functions of
//! the pod and the injector's settings; the webhook server and the `render`
//! command are thin layers over them.

pub mod admission;
pub mod annotations;
pub mod cluster;
pub mod metrics;
pub mod patch;
pub mod render;
pub mod server;
pub mod sidecar;
