//! The secrets building block: secret stores (`secretstores.local.env`,
//! `secretstores.local.file`, `secretstores.kubernetes`), the access rules
//! of the Configuration's `spec.secrets.scopes`, and the API both servers
//! call.

pub mod kubernetes;

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use daprs_api::v1alpha1::SecretScope;
use http::StatusCode;
use tonic::Code;

use crate::{error::ApiError, runtime::Runtime, state::meta};

/// One secret: its keys and values.
pub type Secret = BTreeMap<String, String>;

/// A source of secrets. Errors are messages for `ERR_SECRET_GET`.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// The secret `name`.
    async fn get(&self, name: &str, metadata: &BTreeMap<String, String>) -> Result<Secret, String>;
    /// Every secret, by name.
    async fn bulk(&self, metadata: &BTreeMap<String, String>) -> Result<BTreeMap<String, Secret>, String>;
}

/// Opens a secret store component.
pub fn open(
    kind: &str,
    metadata: &BTreeMap<String, String>,
    env: &HashMap<String, String>,
    namespace: Option<&str>,
) -> Result<std::sync::Arc<dyn SecretStore>, String> {
    Ok(match kind {
        "secretstores.local.env" => {
            std::sync::Arc::new(EnvStore::new(env, meta(metadata, "prefix").unwrap_or_default()))
        }
        "secretstores.local.file" => std::sync::Arc::new(FileStore::open(metadata)?),
        "secretstores.kubernetes" => {
            std::sync::Arc::new(kubernetes::KubernetesStore::new(metadata, env, namespace)?)
        }
        other => return Err(format!("secret store type {other} is not supported")),
    })
}

/// `secretstores.local.env`: the sidecar's environment, never Dapr's own
/// variables or the app token.
pub struct EnvStore {
    vars: BTreeMap<String, String>,
}

impl EnvStore {
    pub fn new(env: &HashMap<String, String>, prefix: &str) -> Self {
        let vars = env
            .iter()
            .filter(|(k, _)| !crate::components::reserved_env(k))
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        Self { vars }
    }
}

#[async_trait]
impl SecretStore for EnvStore {
    async fn get(&self, name: &str, _: &BTreeMap<String, String>) -> Result<Secret, String> {
        let value = self
            .vars
            .get(name)
            .ok_or_else(|| format!("secret {name} not found"))?;
        Ok(BTreeMap::from([(name.to_string(), value.clone())]))
    }

    async fn bulk(&self, _: &BTreeMap<String, String>) -> Result<BTreeMap<String, Secret>, String> {
        Ok(self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), BTreeMap::from([(k.clone(), v.clone())])))
            .collect())
    }
}

/// `secretstores.local.file`: a JSON file read when the component starts.
/// Nested objects flatten into `outer<sep>inner` names; with
/// `multiValued: true` each top-level entry is one secret with many keys.
pub struct FileStore {
    secrets: BTreeMap<String, Secret>,
}

fn flatten(prefix: &str, sep: &str, v: &serde_json::Value, out: &mut Secret) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}{sep}{k}")
                };
                flatten(&name, sep, v, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

impl FileStore {
    pub fn open(metadata: &BTreeMap<String, String>) -> Result<Self, String> {
        let path = meta(metadata, "secretsFile").ok_or("metadata secretsFile is required")?;
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read secretsFile {path}: {e}"))?;
        Self::parse(&text, metadata)
    }

    fn parse(text: &str, metadata: &BTreeMap<String, String>) -> Result<Self, String> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("secretsFile is not JSON: {e}"))?;
        if !json.is_object() {
            return Err("secretsFile must hold a JSON object".into());
        }
        let sep = meta(metadata, "nestedSeparator").unwrap_or(":");
        let multi = meta(metadata, "multiValued").is_some_and(daprs_api::contract::truthy);
        let mut secrets = BTreeMap::new();
        if multi {
            for (name, v) in json.as_object().into_iter().flatten() {
                let mut keys = Secret::new();
                match v {
                    serde_json::Value::Object(_) => flatten("", sep, v, &mut keys),
                    _ => flatten(name, sep, v, &mut keys),
                }
                secrets.insert(name.clone(), keys);
            }
        } else {
            let mut flat = Secret::new();
            flatten("", sep, &json, &mut flat);
            for (k, v) in flat {
                secrets.insert(k.clone(), BTreeMap::from([(k, v)]));
            }
        }
        Ok(Self { secrets })
    }

    /// One key of one secret, for `secretKeyRef`s read while components load.
    pub fn lookup(&self, name: &str, key: &str) -> Option<&String> {
        self.secrets.get(name)?.get(key)
    }
}

#[async_trait]
impl SecretStore for FileStore {
    async fn get(&self, name: &str, _: &BTreeMap<String, String>) -> Result<Secret, String> {
        self.secrets
            .get(name)
            .cloned()
            .ok_or_else(|| format!("secret {name} not found"))
    }

    async fn bulk(&self, _: &BTreeMap<String, String>) -> Result<BTreeMap<String, Secret>, String> {
        Ok(self.secrets.clone())
    }
}

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
        s.get(key, metadata).await.map_err(|e| {
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
        let mut all = s.bulk(metadata).await.map_err(|e| {
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

    #[tokio::test]
    async fn env_store_hides_dapr_variables_and_strips_its_prefix() {
        let env: HashMap<String, String> = [
            ("APP_DB", "pg"),
            ("DAPR_API_TOKEN", "t"),
            ("APP_API_TOKEN", "t"),
            ("DAPRS_HTTP_IDLE_TIMEOUT", "1s"),
            ("OTHER", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let none = BTreeMap::new();
        let all = EnvStore::new(&env, "");
        assert_eq!(all.get("OTHER", &none).await.expect("get")["OTHER"], "x");
        assert!(all.get("DAPR_API_TOKEN", &none).await.is_err());
        assert!(all.get("APP_API_TOKEN", &none).await.is_err());
        assert!(all.get("DAPRS_HTTP_IDLE_TIMEOUT", &none).await.is_err());
        assert!(
            !all.bulk(&none)
                .await
                .expect("bulk")
                .contains_key("DAPRS_HTTP_IDLE_TIMEOUT")
        );
        let prefixed = EnvStore::new(&env, "APP_");
        assert_eq!(prefixed.get("DB", &none).await.expect("get")["DB"], "pg");
        let names: Vec<String> = prefixed.bulk(&none).await.expect("bulk").into_keys().collect();
        assert_eq!(names, ["DB"]);
    }

    #[tokio::test]
    async fn file_store_flattens_or_groups_nested_values() {
        let text = r#"{"db": {"user": "u", "password": "p"}, "port": 5432, "token": "t"}"#;
        let none = BTreeMap::new();
        let flat = FileStore::parse(text, &none).expect("parse");
        assert_eq!(flat.get("db:user", &none).await.expect("get")["db:user"], "u");
        assert_eq!(flat.get("port", &none).await.expect("get")["port"], "5432");
        assert!(flat.get("db", &none).await.is_err());
        let opts = BTreeMap::from([
            ("multiValued".to_string(), "true".to_string()),
            ("nestedSeparator".to_string(), ".".to_string()),
        ]);
        let multi = FileStore::parse(text, &opts).expect("parse");
        let db = multi.get("db", &none).await.expect("get");
        assert_eq!((db["user"].as_str(), db["password"].as_str()), ("u", "p"));
        assert_eq!(multi.get("token", &none).await.expect("get")["token"], "t");
        assert!(FileStore::parse("[1]", &none).is_err());
        assert!(FileStore::parse("{", &none).is_err());
    }
}
