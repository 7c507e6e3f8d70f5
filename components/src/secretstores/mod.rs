//! Secret stores: read-only sources of named secrets, each a map of keys to
//! values. Access rules (the Configuration's `spec.secrets.scopes`) are the
//! sidecar's business, not the store's.

pub mod env;
pub mod file;
pub mod kubernetes;

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::{Metadata, Result};

/// One secret: its keys and values.
pub type Secret = BTreeMap<String, String>;

/// A source of secrets.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// The secret `name`; [`crate::Error::NotFound`] when there is none.
    async fn get(&self, name: &str, metadata: &Metadata) -> Result<Secret>;
    /// Every secret, by name.
    async fn bulk(&self, metadata: &Metadata) -> Result<BTreeMap<String, Secret>>;
}

/// Dapr's and daprd's own variables and the app token, which no component may read.
pub fn reserved_env(var: &str) -> bool {
    var.starts_with("DAPR_") || var.starts_with("DAPRS_") || var == "APP_API_TOKEN"
}
