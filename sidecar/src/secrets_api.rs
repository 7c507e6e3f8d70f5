//! The secrets API: the access rules of the Configuration's
//! `spec.secrets.scopes` and the calls both servers make.

use std::collections::BTreeMap;

use daprs_api::v1alpha1::SecretScope;
use daprs_components::secretstores::{Secret, SecretStore};
use http::StatusCode;
use tonic::Code;

use crate::{error::ApiError, runtime::Runtime};

/// Whether the Configuration lets the app read `key` from `store`: an
/// allow-list, when given, is the whole answer; otherwise the deny-list,
/// then the store's default (allow unless `deny`).
pub fn allowed(scopes: &[SecretScope], store: &str, key: &str) -> bool {
    let Some(scope) = scopes.iter().find(|s| s.store_name == store) else {
        return true;
    };
    if !scope.allowed_secrets.is_empty() {
        return scope.allowed_secrets.iter().any(|s| s == key);
    }
    if scope.denied_secrets.iter().any(|s| s == key) {
        return false;
    }
    !scope.default_access.eq_ignore_ascii_case("deny")
}

impl Runtime {
    fn secret_store(&self, name: &str) -> Result<std::sync::Arc<dyn SecretStore>, ApiError> {
        let loaded = self
            .loaded
            .read()
            .map_err(|_| ApiError::internal("ERR_SECRET_GET", "component table unavailable"))?;
        if loaded.secret_stores.is_empty() {
            return Err(ApiError::new(
                "ERR_SECRET_STORES_NOT_CONFIGURED",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::FailedPrecondition,
                "secret store is not configured",
            ));
        }
        loaded.secret_stores.get(name).cloned().ok_or_else(|| {
            ApiError::new(
                "ERR_SECRET_STORE_NOT_FOUND",
                StatusCode::UNAUTHORIZED,
                Code::InvalidArgument,
                format!("failed finding secret store with key {name}"),
            )
        })
    }

    /// One secret, if the Configuration allows it.
    pub async fn get_secret(
        &self,
        store: &str,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Secret, ApiError> {
        let s = self.secret_store(store)?;
        if !allowed(&self.config.secret_scopes, store, key) {
            return Err(ApiError::new(
                "ERR_PERMISSION_DENIED",
                StatusCode::FORBIDDEN,
                Code::PermissionDenied,
                format!("access denied by policy to get {key:?} from {store:?}"),
            ));
        }
        let secret = crate::metrics::Block::Secret;
        self.timed(secret, store, "get", s.get(key, metadata))
            .await
            .map_err(|e| {
                ApiError::internal(
                    "ERR_SECRET_GET",
                    format!("failed getting secret with key {key} from secret store {store}: {e}"),
                )
            })
    }

    /// Every secret of a store that the Configuration allows.
    pub async fn bulk_secrets(
        &self,
        store: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Secret>, ApiError> {
        let s = self.secret_store(store)?;
        let secret = crate::metrics::Block::Secret;
        let mut all = self
            .timed(secret, store, "bulk_get", s.bulk(metadata))
            .await
            .map_err(|e| {
                ApiError::internal(
                    "ERR_SECRET_GET",
                    format!("failed getting secrets from secret store {store}: {e}"),
                )
            })?;
        all.retain(|name, _| allowed(&self.config.secret_scopes, store, name));
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(default: &str, allowed: &[&str], denied: &[&str]) -> SecretScope {
        SecretScope {
            store_name: "vault".into(),
            default_access: default.into(),
            allowed_secrets: allowed.iter().map(|s| s.to_string()).collect(),
            denied_secrets: denied.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn access_rules_follow_the_configuration() {
        assert!(allowed(&[], "vault", "any"));
        assert!(
            allowed(&[scope("deny", &[], &[])], "other", "any"),
            "other stores are open"
        );
        assert!(!allowed(&[scope("deny", &[], &[])], "vault", "any"));
        assert!(allowed(&[scope("", &[], &["b"])], "vault", "a"));
        assert!(!allowed(&[scope("", &[], &["b"])], "vault", "b"));
        // An allow-list is the whole answer, whatever the default.
        let s = [scope("allow", &["a"], &["a"])];
        assert!(allowed(&s, "vault", "a") && !allowed(&s, "vault", "c"));
    }
}
