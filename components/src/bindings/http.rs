//! `bindings.http`: calls an HTTP(S) endpoint. Operations are the methods
//! (`create` is POST); the call's `path` metadata is appended to the
//! component's `url`, and metadata keys starting with a capital letter are
//! sent as headers, as Dapr does. The answer's body is the data, its status
//! `statusCode` metadata and its headers metadata too; a status of 400 or
//! more is an error unless `errorIfNot2XX` is false. TLS: `MTLSRootCA`,
//! `MTLSClientCert`, `MTLSClientKey` (PEM or a file holding it), and a
//! `securityToken` sent in `securityTokenHeader`.

use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, Method};
use hyper_util::client::legacy::Client;

use super::{Binding, Request, Response};
use crate::{
    Error, Metadata,
    http_client::{HttpClient, Pool},
    meta, meta_duration,
};

/// Largest answer read (Dapr's default `maxResponseBodySize`, 100 MiB).
const MAX_BODY: usize = 100 << 20;

/// The HTTP binding.
pub struct HttpBinding {
    url: String,
    /// What a call's `path` follows: `url`, or on daprd's own pool (which
    /// sends requests in origin form) only its path.
    base: String,
    /// `base` parsed, for calls without a `path`.
    uri: http::Uri,
    client: HttpClient,
    token: Option<(HeaderName, HeaderValue)>,
    error_if_not_2xx: bool,
    timeout: Duration,
}

/// A PEM value, or the file it is in.
fn pem(v: &str) -> Result<Vec<u8>, String> {
    if v.contains("-----BEGIN") {
        Ok(v.as_bytes().to_vec())
    } else {
        std::fs::read(v).map_err(|e| format!("cannot read {v}: {e}"))
    }
}

impl HttpBinding {
    /// Reads `url` and the TLS and token settings.
    pub fn new(metadata: &Metadata) -> Result<Self, String> {
        let url = meta(metadata, "url")
            .ok_or("metadata url is required")?
            .trim_end_matches('/')
            .to_string();
        let uri: http::Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!("url {url:?} must start with http:// or https://"));
        }
        let client_cert = match crate::meta_pair(metadata, "MTLSClientCert", "MTLSClientKey")? {
            Some((c, k)) => Some((pem(c)?, pem(k)?)),
            None => None,
        };
        let root_ca = match meta(metadata, "MTLSRootCA") {
            Some(ca) => Some(crate::https::roots(&pem(ca)?)?),
            None => None,
        };
        let (client, base) = match (uri.scheme_str(), uri.authority()) {
            // Plain HTTP on daprd's own keep-alive pool.
            (Some("http"), Some(authority)) => {
                let port = authority.port_u16().unwrap_or(80);
                let host =
                    HeaderValue::from_str(authority.as_str()).map_err(|e| format!("url {url:?}: {e}"))?;
                let pool = Pool::new(format!("{}:{port}", authority.host()), None).with_host(host);
                let path = uri.path_and_query().map_or("", |p| p.as_str());
                (HttpClient::Pool(pool), path.trim_end_matches('/').to_string())
            }
            _ => {
                // Reading the system's roots takes milliseconds: only for TLS.
                let roots = root_ca.unwrap_or_else(crate::https::native_roots);
                let config = crate::https::config(roots, client_cert)?;
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_or_http()
                    .enable_http1()
                    .build();
                let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
                (HttpClient::Hyper(Box::new(client)), url.clone())
            }
        };
        let uri = match base.as_str() {
            "" => http::Uri::from_static("/"),
            b => b.parse().map_err(|e| format!("url {url:?}: {e}"))?,
        };
        let token = match meta(metadata, "securityToken") {
            None => None,
            Some(t) => {
                let header =
                    meta(metadata, "securityTokenHeader").ok_or("securityToken needs securityTokenHeader")?;
                Some((
                    HeaderName::try_from(header).map_err(|e| format!("securityTokenHeader: {e}"))?,
                    HeaderValue::try_from(t).map_err(|e| format!("securityToken: {e}"))?,
                ))
            }
        };
        Ok(Self {
            url,
            base,
            uri,
            client,
            token,
            error_if_not_2xx: meta(metadata, "errorIfNot2XX").is_none_or(daprs_api::contract::truthy),
            timeout: meta_duration(metadata, "responseTimeout", Duration::from_secs(60))?,
        })
    }
}

const OPERATIONS: &[&str] = &[
    "create", "get", "head", "post", "put", "patch", "delete", "options", "trace",
];

#[async_trait]
impl Binding for HttpBinding {
    fn operations(&self) -> &'static [&'static str] {
        OPERATIONS
    }

    async fn run(&self, req: Request) -> crate::Result<Response> {
        let method = match req.operation.as_str() {
            "create" | "post" => Method::POST,
            "get" => Method::GET,
            "put" => Method::PUT,
            op => Method::from_bytes(op.to_ascii_uppercase().as_bytes())
                .map_err(|e| Error::Invalid(e.to_string()))?,
        };
        let path = meta(&req.metadata, "path").unwrap_or("");
        let (url, uri) = match path {
            "" => (std::borrow::Cow::Borrowed(self.url.as_str()), self.uri.clone()),
            p => {
                let p = p.trim_start_matches('/');
                let uri = format!("{}/{p}", self.base)
                    .parse()
                    .map_err(|e| Error::Invalid(format!("invalid path {p:?}: {e}")))?;
                (format!("{}/{p}", self.url).into(), uri)
            }
        };
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (k, v) in &req.metadata {
            if k.starts_with(|c: char| c.is_ascii_uppercase()) {
                builder = builder.header(k.as_str(), v.as_str());
            }
        }
        if let Some((h, v)) = &self.token {
            builder = builder.header(h, v);
        }
        let request = builder
            .body(req.data)
            .map_err(|e| Error::Invalid(format!("cannot build a request to {url}: {e}")))?;
        let (res, body) = tokio::time::timeout(self.timeout, self.client.request(request, MAX_BODY))
            .await
            .map_err(|_| Error::Backend(format!("{url} did not answer within {:?}", self.timeout)))?
            .map_err(|e| Error::Backend(format!("calling {url} failed: {e}")))?;
        let status = res.status;
        let mut text = status.as_str().to_string();
        if let Some(reason) = status.canonical_reason() {
            text.push(' ');
            text.push_str(reason);
        }
        let mut metadata = Metadata::from([
            ("statusCode".to_string(), status.as_str().to_string()),
            ("status".to_string(), text),
        ]);
        for (k, v) in &res.headers {
            if let Ok(v) = v.to_str() {
                metadata
                    .entry(k.as_str().to_string())
                    .or_insert_with(|| v.to_string());
            }
        }
        if self.error_if_not_2xx && status.as_u16() >= 400 {
            return Err(Error::Backend(format!(
                "received status code {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        Ok(Response {
            data: Some(body).filter(|b| !b.is_empty()),
            metadata,
        })
    }
}
