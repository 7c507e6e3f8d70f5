//! `secretstores.local.file`: a JSON file read when the component starts.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{Secret, SecretStore};
use crate::{Error, Metadata, Result, meta};

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
    pub fn open(metadata: &BTreeMap<String, String>) -> std::result::Result<Self, String> {
        let path = meta(metadata, "secretsFile").ok_or("metadata secretsFile is required")?;
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read secretsFile {path}: {e}"))?;
        Self::parse(&text, metadata)
    }

    fn parse(text: &str, metadata: &BTreeMap<String, String>) -> std::result::Result<Self, String> {
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
    async fn get(&self, name: &str, _: &Metadata) -> Result<Secret> {
        self.secrets
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("secret {name} not found")))
    }

    async fn bulk(&self, _: &Metadata) -> Result<BTreeMap<String, Secret>> {
        Ok(self.secrets.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
