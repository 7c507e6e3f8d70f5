//! Reading resources from `--resources-path` (or the embedded defaults) and
//! turning Component metadata into the plain settings an implementation reads.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use daprs_api::{
    Resource,
    resource::decode_yaml,
    v1alpha1::{Component, ComponentFields, ComponentSpec, NameValuePair},
};

use daprs_components::{parse_duration, secretstores::reserved_env};

use crate::error::StartError;

/// Where the embedded defaults keep their data (`$DAPRS_HOME`, else the per-user data folder).
pub fn data_dir(env: &HashMap<String, String>) -> PathBuf {
    if let Some(home) = env.get("DAPRS_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(xdg) = env.get("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Path::new(xdg).join("daprs");
    }
    match env.get("HOME").or_else(|| env.get("USERPROFILE")) {
        Some(home) => Path::new(home).join(".local/share/daprs"),
        None => std::env::temp_dir().join("daprs"),
    }
}

fn component(name: &str, kind: &str, metadata: &[(&str, String)]) -> Component {
    Component::new(
        name,
        ComponentFields {
            spec: ComponentSpec {
                type_: kind.into(),
                version: "v1".into(),
                metadata: metadata
                    .iter()
                    .map(|(k, v)| NameValuePair {
                        name: (*k).into(),
                        value: Some(serde_json::Value::String(v.clone())),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            ..Default::default()
        },
    )
}

/// The components a sidecar gets with no `--resources-path`: `statestore`
/// (SQLite in the data folder) and `pubsub` (in memory).
pub fn embedded_defaults(env: &HashMap<String, String>) -> Vec<Resource> {
    let db = data_dir(env).join("state.db");
    vec![
        Resource::Component(component(
            "statestore",
            "state.sqlite",
            &[("connectionString", db.display().to_string())],
        )),
        Resource::Component(component("pubsub", "pubsub.in-memory", &[])),
    ]
}

/// Reads every `.yaml`/`.yml` file directly inside the given folders, in name order.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Resource>, StartError> {
    let mut out = Vec::new();
    for dir in paths {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            StartError::Resources(format!("cannot read resources path {}: {e}", dir.display()))
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| StartError::Resources(format!("cannot read {}: {e}", file.display())))?;
            let decoded = decode_yaml(&text).map_err(|errors| {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                StartError::Resources(format!("{}: {}", file.display(), list.join("; ")))
            })?;
            for s in decoded.skipped {
                tracing::debug!(file = %file.display(), kind = %s.kind, api_version = %s.api_version, "not a Dapr resource, skipped");
            }
            out.extend(decoded.resources);
        }
    }
    Ok(out)
}

/// Context for metadata templates and environment references.
pub struct Templates<'a> {
    /// This app's id.
    pub app_id: &'a str,
    /// `NAMESPACE`, if set.
    pub namespace: Option<&'a str>,
    /// The process environment.
    pub env: &'a HashMap<String, String>,
}

impl Templates<'_> {
    /// Whether a component may read this environment variable: never Dapr's own
    /// variables or the app token, and only listed ones when `DAPR_ENV_KEYS` is set.
    fn env_allowed(&self, var: &str) -> bool {
        if reserved_env(var) {
            return false;
        }
        match self.env.get("DAPR_ENV_KEYS").filter(|v| !v.trim().is_empty()) {
            Some(keys) => keys.split_whitespace().any(|k| k == var),
            None => true,
        }
    }

    fn env_value(&self, var: &str) -> Result<String, String> {
        if !self.env_allowed(var) {
            return Err(format!(
                "environment variable {var} may not be read by components"
            ));
        }
        self.env
            .get(var)
            .cloned()
            .ok_or_else(|| format!("environment variable {var} is not set"))
    }

    /// Expands `{uuid}`, `{podName}`, `{namespace}`, `{appID}` and `{env:VAR}`.
    pub fn expand(&self, value: &str) -> Result<String, String> {
        if !value.contains('{') {
            return Ok(value.to_string());
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let token = &after[..end];
            match token {
                "uuid" => out.push_str(&daprs_components::uuid_v4()),
                "podName" => out.push_str(self.env.get("POD_NAME").map_or(self.app_id, String::as_str)),
                "namespace" => match self.namespace {
                    Some(ns) => out.push_str(&format!("{ns}.{}", self.app_id)),
                    None => out.push_str(self.app_id),
                },
                "appID" => out.push_str(self.app_id),
                t if t.starts_with("env:") => out.push_str(&self.env_value(&t[4..])?),
                _ => {
                    out.push('{');
                    out.push_str(token);
                    out.push('}');
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Resolves a component's metadata to plain strings: inline value (templates
/// expanded), else `envRef`, else `secretKeyRef` through `secret`.
pub fn resolve_metadata(
    c: &Component,
    t: &Templates<'_>,
    secret: &dyn Fn(&str, &str, &str) -> Result<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    resolve_pairs(&c.spec.spec.metadata, c.secret_store(), t, secret).map(|pairs| pairs.into_iter().collect())
}

/// Resolves name/value pairs (inline with `{uuid}`-style templates, `envRef`,
/// or `secretKeyRef` in secret store `store`) in their order.
pub fn resolve_pairs(
    items: &[daprs_api::v1alpha1::NameValuePair],
    store: &str,
    t: &Templates<'_>,
    secret: &dyn Fn(&str, &str, &str) -> Result<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let value = if let Some(v) = item.inline_value() {
            t.expand(&v).map_err(|e| format!("metadata {}: {e}", item.name))?
        } else if let Some(var) = item.env_ref.as_deref().filter(|v| !v.is_empty()) {
            t.env_value(var)
                .map_err(|e| format!("metadata {}: {e}", item.name))?
        } else if let Some(r) = &item.secret_key_ref {
            let key = if r.key.is_empty() { &r.name } else { &r.key };
            secret(store, &r.name, key).map_err(|e| format!("metadata {}: {e}", item.name))?
        } else {
            String::new()
        };
        out.push((item.name.clone(), value));
    }
    Ok(out)
}

/// Reads a secret from the secret stores that can be resolved while loading:
/// `secretstores.local.env` components (the secret name is the variable
/// name) and `secretstores.local.file` ones (the file is read here).
pub fn env_secret_resolver<'a>(
    components: &'a [&'a Component],
    t: &'a Templates<'a>,
) -> impl Fn(&str, &str, &str) -> Result<String, String> + 'a {
    move |store: &str, name: &str, key: &str| {
        let found = components
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(store));
        match found.map(|c| (c, c.spec.spec.type_.as_str())) {
            Some((_, "secretstores.local.env")) if key == name => t.env_value(name),
            Some((_, "secretstores.local.env")) => Err(format!("secret {name} has no key {key}")),
            Some((c, "secretstores.local.file")) => {
                // The store's own metadata must not refer to secrets.
                let none = |_: &str, _: &str, _: &str| Err("no secret references here".to_string());
                let metadata = resolve_metadata(c, t, &none)?;
                let file = daprs_components::secretstores::file::FileStore::open(&metadata)
                    .map_err(|e| format!("secret store {store}: {e}"))?;
                file.lookup(name, key)
                    .cloned()
                    .ok_or_else(|| format!("secret store {store} has no key {key} in secret {name}"))
            }
            Some((_, other)) => Err(format!(
                "secret store {store} ({other}) cannot resolve references here"
            )),
            None if store.is_empty() => {
                Err("secretKeyRef needs auth.secretStore to name a secret store".into())
            }
            None => Err(format!("secret store {store} is not loaded")),
        }
    }
}

/// The init timeout of a component (`spec.initTimeout`, 5 s by default).
pub fn init_timeout(c: &Component) -> Duration {
    c.spec
        .spec
        .init_timeout
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn templates_and_env_substitution() {
        let e = env(&[
            ("REDIS_HOST", "r:6379"),
            ("DAPR_API_TOKEN", "s"),
            ("POD_NAME", "p-1"),
        ]);
        let t = Templates {
            app_id: "app",
            namespace: Some("ns"),
            env: &e,
        };
        assert_eq!(t.expand("{env:REDIS_HOST}").as_deref(), Ok("r:6379"));
        assert_eq!(
            t.expand("x-{appID}-{podName}-{namespace}").as_deref(),
            Ok("x-app-p-1-ns.app")
        );
        assert_eq!(t.expand("{other} {unclosed").as_deref(), Ok("{other} {unclosed"));
        assert!(
            t.expand("{env:DAPR_API_TOKEN}")
                .expect_err("denied")
                .contains("may not")
        );
        assert!(t.expand("{env:MISSING}").expect_err("unset").contains("not set"));
        assert_eq!(t.expand("{uuid}").map(|s| s.len()), Ok(36));
    }

    #[test]
    fn env_keys_allow_list() {
        let e = env(&[("A", "1"), ("B", "2"), ("DAPR_ENV_KEYS", "A")]);
        let t = Templates {
            app_id: "app",
            namespace: None,
            env: &e,
        };
        assert_eq!(t.expand("{env:A}").as_deref(), Ok("1"));
        assert!(t.expand("{env:B}").is_err());
    }

    #[test]
    fn metadata_precedence_and_secret_refs() {
        let yaml = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: s}
spec:
  type: state.redis
  version: v1
  metadata:
  - {name: a, value: "{env:HOST}", envRef: IGNORED}
  - {name: b, envRef: HOST}
  - {name: c, secretKeyRef: {name: PASSWORD}}
  - {name: d}
auth: {secretStore: envstore}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: envstore}
spec: {type: secretstores.local.env, version: v1}
"#;
        let resources = decode_yaml(yaml).expect("yaml").resources;
        let comps: Vec<&Component> = resources.iter().filter_map(Resource::as_component).collect();
        let e = env(&[("HOST", "h"), ("PASSWORD", "pw")]);
        let t = Templates {
            app_id: "app",
            namespace: None,
            env: &e,
        };
        let resolver = env_secret_resolver(&comps, &t);
        let m = resolve_metadata(comps[0], &t, &resolver).expect("resolved");
        assert_eq!(m["a"], "h");
        assert_eq!(m["b"], "h");
        assert_eq!(m["c"], "pw");
        assert_eq!(m["d"], "");
    }

    #[test]
    fn embedded_defaults_use_the_data_folder() {
        let e = env(&[("DAPRS_HOME", "/tmp/x")]);
        let defaults = embedded_defaults(&e);
        let Resource::Component(c) = &defaults[0] else {
            panic!("component")
        };
        assert_eq!(c.spec.spec.type_, "state.sqlite");
        assert_eq!(
            c.spec.spec.metadata[0].inline_value().as_deref(),
            Some("/tmp/x/state.db")
        );
        assert_eq!(
            data_dir(&env(&[("HOME", "/h")])),
            PathBuf::from("/h/.local/share/daprs")
        );
    }
}
