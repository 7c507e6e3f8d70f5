//! Resources in `dapr.io/v1alpha1`.

mod component;
mod configuration;
mod http_endpoint;
mod resiliency;
mod subscription;

pub use component::*;
pub use configuration::*;
pub use http_endpoint::*;
pub use resiliency::*;
pub use subscription::*;
