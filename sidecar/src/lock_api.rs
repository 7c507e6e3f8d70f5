//! The distributed lock building block, shared by the HTTP and gRPC APIs:
//! store lookup, validation, Dapr's key prefixing and error codes.

use std::{sync::Arc, time::Duration};

use daprs_components::{lock::Unlocked, state::SEPARATOR};

use crate::{
    components::backend_failure,
    error::ApiError,
    runtime::{LockEntry, Lookup, Runtime},
};

/// Both calls name a resource and its owner.
fn check_ids(resource: &str, owner: &str) -> Result<(), ApiError> {
    for (field, value) in [("resourceId", resource), ("lockOwner", owner)] {
        if value.is_empty() {
            return Err(ApiError::malformed(format!(
                "{field} is required and must not be empty"
            )));
        }
    }
    Ok(())
}

impl Runtime {
    fn lock_store(&self, name: &str) -> Result<Arc<LockEntry>, ApiError> {
        const LOOKUP: Lookup = Lookup {
            what: "lock store",
            not_configured: "ERR_LOCK_STORE_NOT_CONFIGURED",
            not_found: "ERR_LOCK_STORE_NOT_FOUND",
        };
        self.lookup(name, &LOOKUP, |l| &l.locks)
    }

    /// The key a resource is locked under: `lock||<prefix>||<resource>`.
    fn lock_key(&self, store: &str, entry: &LockEntry, resource: &str) -> String {
        match entry
            .prefix
            .prefix(&self.app_id, store, self.namespace.as_deref())
        {
            Some(p) => format!("lock{SEPARATOR}{p}{SEPARATOR}{resource}"),
            None => format!("lock{SEPARATOR}{resource}"),
        }
    }

    /// Takes `resource` for `owner` for `expiry_secs`; false when another
    /// owner holds it.
    pub async fn try_lock(
        &self,
        store: &str,
        resource: &str,
        owner: &str,
        expiry_secs: i32,
    ) -> Result<bool, ApiError> {
        check_ids(resource, owner)?;
        let secs = u64::try_from(expiry_secs)
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| {
                ApiError::malformed(format!("expiryInSeconds must be positive, got {expiry_secs}"))
            })?;
        let entry = self.lock_store(store)?;
        let key = self.lock_key(store, &entry, resource);
        let lease = Duration::from_secs(secs);
        self.outbound(
            store,
            || entry.store.try_lock(&key, owner, lease),
            backend_failure,
        )
        .await
        .map_err(|e| ApiError::internal("ERR_TRY_LOCK", format!("failed to try acquiring lock: {e}")))
    }

    /// Releases `resource` if `owner` holds it; a store failure is `ERR_UNLOCK`.
    pub async fn unlock(&self, store: &str, resource: &str, owner: &str) -> Result<Unlocked, ApiError> {
        check_ids(resource, owner)?;
        let entry = self.lock_store(store)?;
        let key = self.lock_key(store, &entry, resource);
        self.outbound(store, || entry.store.unlock(&key, owner), backend_failure)
            .await
            .map_err(|e| ApiError::internal("ERR_UNLOCK", format!("failed to release lock: {e}")))
    }
}
