//! `secretstores.local.env`: the sidecar's environment, minus Dapr's own
//! variables and the app token.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::{Secret, SecretStore, reserved_env};
use crate::{Error, Metadata, Result};

/// The store: variables read once, at start.
pub struct EnvStore {
    vars: BTreeMap<String, String>,
}

impl EnvStore {
    pub fn new(env: &HashMap<String, String>, prefix: &str) -> Self {
        let vars = env
            .iter()
            .filter(|(k, _)| !reserved_env(k))
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        Self { vars }
    }
}

#[async_trait]
impl SecretStore for EnvStore {
    async fn get(&self, name: &str, _: &Metadata) -> Result<Secret> {
        let value = self
            .vars
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("secret {name} not found")))?;
        Ok(BTreeMap::from([(name.to_string(), value.clone())]))
    }

    async fn bulk(&self, _: &Metadata) -> Result<BTreeMap<String, Secret>> {
        Ok(self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), BTreeMap::from([(k.clone(), v.clone())])))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
