//! Invocation of services outside Dapr: `HTTPEndpoint` resources, invoked
//! by name like an app, and full URLs (`/v1.0/invoke/https://host/method/...`).
//! The call goes straight from this sidecar to the service, with the
//! endpoint's headers and TLS settings, under the same resiliency policies
//! as app calls (targeted by the endpoint's name or the URL).

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use daprs_api::v1alpha1::{HTTPEndpoint, TlsDocument};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tower::{Layer, ServiceExt};

use crate::{
    app_channel::HOP_BY_HOP,
    error::ApiError,
    resiliency::{Failure, Policy},
    resources::{Templates, resolve_pairs},
};

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One external service.
pub struct Endpoint {
    /// The base URL, without a trailing slash.
    pub base: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    client: LazyClient,
}

/// A client made on first use: with the system's trust store, reading it
/// costs milliseconds and memory that a sidecar which never calls out
/// should not pay at start-up.
#[derive(Clone)]
struct LazyClient(
    Arc<std::sync::OnceLock<HttpClient>>,
    Option<Arc<rustls::ClientConfig>>,
);

impl LazyClient {
    fn new(tls: Option<rustls::ClientConfig>) -> Self {
        Self(Arc::default(), tls.map(Arc::new))
    }

    fn get(&self) -> Result<HttpClient, String> {
        if let Some(c) = self.0.get() {
            return Ok(c.clone());
        }
        let tls = match &self.1 {
            Some(t) => (**t).clone(),
            None => rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(daprs_components::native_roots())
                .with_no_client_auth(),
        };
        Ok(self.0.get_or_init(|| client(tls)).clone())
    }
}

/// The endpoints this app may call, by name, and a client for bare URLs.
pub struct Endpoints {
    named: HashMap<String, Arc<Endpoint>>,
    default_client: LazyClient,
}

fn client(tls: rustls::ClientConfig) -> HttpClient {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The endpoint's own TLS settings; None when it has none (the system's
/// trust store is then used, read on first use).
fn tls_config(
    name: &str,
    spec: Option<&daprs_api::v1alpha1::ClientTls>,
    doc: &dyn Fn(&str, &TlsDocument) -> Result<String, String>,
) -> Result<Option<rustls::ClientConfig>, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let Some(spec) =
        spec.filter(|t| t.root_ca.is_some() || t.certificate.is_some() || t.private_key.is_some())
    else {
        return Ok(None);
    };
    let spec = Some(spec);
    let roots = match spec.and_then(|t| t.root_ca.as_ref()) {
        Some(d) => daprs_mtls::tls::roots(&doc("rootCA", d)?)?,
        None => daprs_components::native_roots(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let (cert, key) = (
        spec.and_then(|t| t.certificate.as_ref()),
        spec.and_then(|t| t.private_key.as_ref()),
    );
    // The connector sets ALPN (h2, http/1.1) itself.
    let config = match (cert, key) {
        (Some(c), Some(k)) => {
            let chain = CertificateDer::pem_slice_iter(doc("certificate", c)?.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("HTTPEndpoint {name}: clientTLS.certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(doc("privateKey", k)?.as_bytes())
                .map_err(|e| format!("HTTPEndpoint {name}: clientTLS.privateKey: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("HTTPEndpoint {name}: clientTLS: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(format!(
                "HTTPEndpoint {name}: clientTLS needs both certificate and privateKey"
            ));
        }
    };
    Ok(Some(config))
}

impl Endpoints {
    /// Builds the endpoints `app_id` may use (by their `scopes`).
    pub fn load<'a>(
        docs: impl IntoIterator<Item = &'a HTTPEndpoint>,
        app_id: &str,
        t: &Templates<'_>,
        secret: &dyn Fn(&str, &str, &str) -> Result<String, String>,
    ) -> Result<Self, String> {
        let mut named = HashMap::new();
        for e in docs {
            if !e.spec.scopes.is_empty() && !e.spec.scopes.iter().any(|s| s == app_id) {
                continue;
            }
            let name = e.metadata.name.clone().unwrap_or_default();
            let spec = &e.spec.spec;
            let base = spec.base_url.trim().trim_end_matches('/').to_string();
            let uri: http::Uri = base
                .parse()
                .map_err(|err| format!("HTTPEndpoint {name}: spec.baseUrl {base:?}: {err}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(format!(
                    "HTTPEndpoint {name}: spec.baseUrl {base:?} must be an http:// or https:// URL"
                ));
            }
            let store = e.spec.auth.as_ref().map_or("", |a| a.secret_store.as_str());
            let headers = resolve_pairs(&spec.headers, store, t, secret)
                .map_err(|err| format!("HTTPEndpoint {name}: spec.headers: {err}"))?
                .into_iter()
                .map(|(k, v)| {
                    Ok((
                        HeaderName::try_from(k.as_str())
                            .map_err(|_| format!("HTTPEndpoint {name}: {k:?} is not a header name"))?,
                        HeaderValue::try_from(v).map_err(|_| {
                            format!("HTTPEndpoint {name}: header {k} has a value that cannot be sent")
                        })?,
                    ))
                })
                .collect::<Result<Vec<_>, String>>()?;
            let doc = |field: &str, d: &TlsDocument| -> Result<String, String> {
                match (&d.value, &d.secret_key_ref) {
                    (Some(v), _) => Ok(v.clone()),
                    (None, Some(r)) => {
                        let key = if r.key.is_empty() { &r.name } else { &r.key };
                        secret(store, &r.name, key)
                    }
                    (None, None) => Err(format!("clientTLS.{field} has neither value nor secretKeyRef")),
                }
                .map_err(|err| format!("HTTPEndpoint {name}: {err}"))
            };
            let tls = tls_config(&name, spec.client_tls.as_ref(), &doc)?;
            named.insert(
                name,
                Arc::new(Endpoint {
                    base,
                    headers,
                    client: LazyClient::new(tls),
                }),
            );
        }
        Ok(Self {
            named,
            default_client: LazyClient::new(None),
        })
    }

    /// The endpoint a target names: an HTTPEndpoint, or a full URL.
    pub fn lookup(&self, target: &str) -> Option<Arc<Endpoint>> {
        if let Some(e) = self.named.get(target) {
            return Some(e.clone());
        }
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        (lower.starts_with("http://") || lower.starts_with("https://")).then(|| {
            Arc::new(Endpoint {
                base: target.trim_end_matches('/').to_string(),
                headers: Vec::new(),
                client: self.default_client.clone(),
            })
        })
    }

    /// The names loaded, for the metadata API.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.named.keys().cloned().collect();
        n.sort();
        n
    }
}

/// What an HTTP caller sent, to pass on.
pub struct Outgoing {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Headers that address this sidecar, not the service.
const OWN: &[&str] = &["dapr-app-id", "dapr-api-token", "host", "content-length"];

impl Endpoint {
    /// Calls the service under `policy`; its answer comes back as it is.
    pub async fn call(&self, target: &str, out: Outgoing, policy: Policy) -> Result<Response, ApiError> {
        let mut url = format!("{}/{}", self.base, out.path.trim_start_matches('/'));
        if let Some(q) = out.query.as_deref().filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(q);
        }
        let uri: http::Uri = url.parse().map_err(|e| {
            ApiError::new(
                "ERR_DIRECT_INVOKE",
                http::StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                format!("failed to invoke, id: {target}, err: {url:?} is not a URL: {e}"),
            )
        })?;
        let mut headers = out.headers;
        for h in HOP_BY_HOP.iter().chain(OWN) {
            headers.remove(*h);
        }
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        let client = self.client.get().map_err(|e| {
            ApiError::internal(
                "ERR_DIRECT_INVOKE",
                format!("failed to invoke, id: {target}, err: {e}"),
            )
        })?;
        let attempt = tower::service_fn(|body: Bytes| {
            let mut req = http::Request::new(Full::new(body));
            *req.method_mut() = out.method.clone();
            *req.uri_mut() = uri.clone();
            *req.headers_mut() = headers.clone();
            let client = client.clone();
            async move {
                let res = client.request(req).await.map_err(|e| e.to_string())?;
                let (parts, body) = res.into_parts();
                let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
                Ok::<_, String>(http::Response::from_parts(parts, body))
            }
        });
        let failed = |r: &Result<http::Response<Bytes>, String>| match r {
            Ok(res) if res.status().as_u16() >= 400 => Some(Failure::Http(res.status().as_u16())),
            Ok(_) => None,
            Err(_) => Some(Failure::Transport),
        };
        match policy.layer(failed).layer(attempt).oneshot(out.body).await {
            Ok(res) => {
                let (mut parts, body) = res.into_parts();
                for h in HOP_BY_HOP {
                    parts.headers.remove(*h);
                }
                Ok(Response::from_parts(parts, Body::from(body)))
            }
            Err(stop) => Err(match stop.reason() {
                Ok(e) => ApiError::internal(
                    "ERR_DIRECT_INVOKE",
                    format!("failed to invoke, id: {target}, err: {e}"),
                ),
                Err(halt) => crate::invoke::halted(target, halt),
            }),
        }
    }
}
