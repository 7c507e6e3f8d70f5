//! `secretstores.kubernetes`: Secrets read from the API server, in-cluster
//! with the pod's service account, or through `metadata.kubeconfigPath`.
//! Each Secret's `data` comes back decoded, one key per entry. The
//! namespace is the request's `namespace` metadata, else the pod's.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::{Secret, SecretStore};
use crate::{Error, Metadata, Result, meta};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Largest answer read from the API server (a namespace's Secrets, in bulk).
const MAX_ANSWER: usize = 64 << 20;

use crate::https::Https;

enum Credential {
    /// Re-read on every call: projected tokens are rotated.
    TokenFile(PathBuf),
    Token(String),
    /// The client certificate authenticates.
    None,
}

struct Access {
    server: String,
    client: Https,
    credential: Credential,
}

/// The store. Without a cluster to talk to it still loads (the built-in
/// store is registered in every pod) and says why on each call.
pub struct KubernetesStore {
    access: std::result::Result<Access, String>,
    namespace: Option<String>,
}

fn decode_b64(what: &str, s: &str) -> std::result::Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| format!("kubeconfig: {what} is not base64"))
}

/// The current context's server and credentials from a kubeconfig file.
fn from_kubeconfig(path: &str) -> std::result::Result<Access, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read kubeconfig {path}: {e}"))?;
    let doc: serde_json::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("kubeconfig {path} is not YAML: {e}"))?;
    let named = |list: &str, name: &str| {
        doc[list]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["name"].as_str() == Some(name)))
            .cloned()
            .unwrap_or_default()
    };
    let context = named("contexts", doc["current-context"].as_str().unwrap_or_default());
    let cluster = &named(
        "clusters",
        context["context"]["cluster"].as_str().unwrap_or_default(),
    )["cluster"];
    let user = &named("users", context["context"]["user"].as_str().unwrap_or_default())["user"];
    let server = cluster["server"]
        .as_str()
        .ok_or_else(|| format!("kubeconfig {path}: the current context names no server"))?
        .trim_end_matches('/')
        .to_string();
    let read = |data: &str, file: &str, what: &str| -> std::result::Result<Option<Vec<u8>>, String> {
        if !data.is_empty() {
            return decode_b64(what, data).map(Some);
        }
        if file.is_empty() {
            return Ok(None);
        }
        std::fs::read(file)
            .map(Some)
            .map_err(|e| format!("kubeconfig {what} {file}: {e}"))
    };
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let ca = read(
        &s(&cluster["certificate-authority-data"]),
        &s(&cluster["certificate-authority"]),
        "certificate-authority",
    )?
    .ok_or_else(|| format!("kubeconfig {path}: the cluster has no certificate-authority"))?;
    let cert = read(
        &s(&user["client-certificate-data"]),
        &s(&user["client-certificate"]),
        "client-certificate",
    )?;
    let key = read(
        &s(&user["client-key-data"]),
        &s(&user["client-key"]),
        "client-key",
    )?;
    let credential = match (user["token"].as_str(), user["tokenFile"].as_str()) {
        (Some(t), _) if !t.is_empty() => Credential::Token(t.to_string()),
        (_, Some(f)) if !f.is_empty() => Credential::TokenFile(PathBuf::from(f)),
        _ => Credential::None,
    };
    Ok(Access {
        server,
        client: crate::https::client(crate::https::config(crate::https::roots(&ca)?, cert.zip(key))?),
        credential,
    })
}

/// The pod's own service account, as every in-cluster client uses it.
fn in_cluster(env: &HashMap<String, String>) -> std::result::Result<Access, String> {
    let host = env
        .get("KUBERNETES_SERVICE_HOST")
        .filter(|h| !h.is_empty())
        .ok_or("not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set); set metadata kubeconfigPath")?;
    let port = env
        .get("KUBERNETES_SERVICE_PORT")
        .map(String::as_str)
        .unwrap_or("443");
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let ca_path = format!("{SA_DIR}/ca.crt");
    let ca = std::fs::read(&ca_path).map_err(|e| format!("cannot read the cluster CA {ca_path}: {e}"))?;
    Ok(Access {
        server: format!("https://{host}:{port}"),
        client: crate::https::client(crate::https::config(crate::https::roots(&ca)?, None)?),
        credential: Credential::TokenFile(PathBuf::from(format!("{SA_DIR}/token"))),
    })
}

/// Names the API server accepts for namespaces and Secrets (DNS subdomains),
/// so a request cannot reach another path.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

fn decode_data(secret: &serde_json::Value) -> Secret {
    secret["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.as_str()?)
                .ok()?;
            Some((k.clone(), String::from_utf8_lossy(&raw).into_owned()))
        })
        .collect()
}

impl KubernetesStore {
    pub fn new(
        metadata: &BTreeMap<String, String>,
        env: &HashMap<String, String>,
        namespace: Option<&str>,
    ) -> std::result::Result<Self, String> {
        let access = match meta(metadata, "kubeconfigPath") {
            // A kubeconfig that was asked for and cannot be used is a
            // configuration error: fail the component.
            Some(path) => Ok(from_kubeconfig(path)?),
            None => in_cluster(env),
        };
        if let Err(why) = &access {
            tracing::debug!(%why, "Kubernetes secret store has no cluster access");
        }
        Ok(Self {
            access,
            namespace: namespace.map(str::to_string),
        })
    }

    fn namespace(&self, metadata: &Metadata) -> Result<String> {
        let ns = match meta(metadata, "namespace") {
            Some(ns) => ns.to_string(),
            None => self.namespace.clone().ok_or_else(|| {
                Error::Invalid("no namespace: set the namespace metadata or NAMESPACE".into())
            })?,
        };
        if valid_name(&ns) {
            Ok(ns)
        } else {
            Err(Error::Invalid(format!("{ns:?} is not a namespace name")))
        }
    }

    async fn fetch(&self, path: &str) -> Result<Option<serde_json::Value>> {
        self.fetch_raw(path).await.map_err(Error::Backend)
    }

    async fn fetch_raw(&self, path: &str) -> std::result::Result<Option<serde_json::Value>, String> {
        let access = self.access.as_ref().map_err(Clone::clone)?;
        let mut req =
            http::Request::get(format!("{}{path}", access.server)).header("accept", "application/json");
        let token = match &access.credential {
            Credential::Token(t) => Some(t.clone()),
            Credential::TokenFile(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("cannot read the service-account token {}: {e}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            Credential::None => None,
        };
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let res = access
            .client
            .request(req)
            .await
            .map_err(|e| format!("the API server at {} is unreachable: {e}", access.server))?;
        let status = res.status();
        let body = http_body_util::Limited::new(res.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the API server's answer: {e}"))?
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        match status.as_u16() {
            200 => Ok(Some(json)),
            404 => Ok(None),
            code => Err(format!(
                "the API server answered {code}: {}",
                json["message"].as_str().unwrap_or("(no message)")
            )),
        }
    }
}

#[async_trait]
impl SecretStore for KubernetesStore {
    async fn get(&self, name: &str, metadata: &Metadata) -> Result<Secret> {
        let ns = self.namespace(metadata)?;
        if !valid_name(name) {
            return Err(Error::Invalid(format!("{name:?} is not a Secret name")));
        }
        match self
            .fetch(&format!("/api/v1/namespaces/{ns}/secrets/{name}"))
            .await?
        {
            Some(secret) => Ok(decode_data(&secret)),
            None => Err(Error::NotFound(format!(
                "secret {name} not found in namespace {ns}"
            ))),
        }
    }

    async fn bulk(&self, metadata: &Metadata) -> Result<BTreeMap<String, Secret>> {
        let ns = self.namespace(metadata)?;
        let list = self
            .fetch(&format!("/api/v1/namespaces/{ns}/secrets"))
            .await?
            .unwrap_or_default();
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["metadata"]["name"].as_str()?.to_string(), decode_data(s))))
            .collect())
    }
}
