//! The app channel: how the sidecar calls its own application, over HTTP
//! (`<VERB> /<method>?<query>`) or gRPC (`AppCallback/OnInvoke`). It adds the app
//! token, honours `--app-max-concurrency`, and probes the app's health.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use daprs_components::http_client::{CallError, HttpClient, Pool};
use daprs_mtls::peer::Peer;
use daprs_proto::{
    common::{HttpExtension, InvokeRequest, InvokeResponse, http_extension::Verb},
    internals::{InternalInvokeRequest, InternalInvokeResponse, Status},
    runtime::app_callback_health_check_client::AppCallbackHealthCheckClient,
};
use http::{HeaderName, HeaderValue, Request};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::Semaphore;
use tonic::{
    metadata::{AsciiMetadataValue, MetadataMap},
    transport::Channel,
};

use crate::{error::ApiError, flags::AppProtocol, invoke::Metadata};

/// HTTP/2 flow-control windows of daprd's gRPC connections (per stream, per
/// connection): large enough that a stream of large messages is not held
/// back a round trip per 64 KiB.
pub const STREAM_WINDOW: u32 = 1 << 20;
/// See [`STREAM_WINDOW`].
pub const CONNECTION_WINDOW: u32 = 4 << 20;

/// Smallest message limit used for unary gRPC calls between sidecars.
pub const MAX_UNARY: usize = 4 << 20;

static ON_INVOKE: std::sync::LazyLock<http::uri::PathAndQuery> = std::sync::LazyLock::new(|| {
    http::uri::PathAndQuery::from_static("/dapr.proto.runtime.v1.AppCallback/OnInvoke")
});

pub use self::convert::{
    HOP_BY_HOP, append_metadata, from_grpc_metadata, from_http_headers, grpc_metadata, http_extension,
    method_of, verb_of,
};

mod convert;

/// Dials the app over plain TCP, or TLS for `https://` addresses.
type AppConnector = HttpsConnector<HttpConnector>;

enum Transport {
    Http {
        client: HttpClient,
        /// What each request's path follows: the app's scheme and
        /// authority, or nothing on daprd's own pool, which sends requests
        /// in origin form (a URI of a path alone is cheaper to make).
        base: String,
    },
    /// A gRPC app: tonic's channel for most calls daprd makes, and a
    /// connection of daprd's own for `OnInvoke`, sent in one write, and for
    /// proxied calls, forwarded frame by frame (`daprs_mtls::forward`).
    Grpc { channel: Channel, peer: Arc<Peer> },
}

/// Calls into the application.
pub struct AppChannel {
    transport: Transport,
    token: Option<HeaderValue>,
    /// The same token as gRPC metadata, converted once.
    grpc_token: Option<AsciiMetadataValue>,
    limit: Option<Arc<Semaphore>>,
    /// How the app is spoken to.
    pub protocol: AppProtocol,
    /// The app's port.
    pub port: u16,
    /// The host dialled.
    pub address: String,
    max_body: usize,
}

fn direct_invoke(message: impl Into<String>) -> ApiError {
    ApiError::internal("ERR_DIRECT_INVOKE", message)
}

/// TCP with Nagle off; TLS when the protocol asks for it (the certificate is
/// not checked, see [`daprs_mtls::tls::any_server_config`]), offering the
/// HTTP versions the protocol can use.
fn app_connector(protocol: AppProtocol) -> Result<AppConnector, String> {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(daprs_mtls::tls::any_server_config()?)
        .https_or_http();
    Ok(match protocol {
        AppProtocol::Grpc | AppProtocol::Grpcs | AppProtocol::H2c => {
            builder.enable_http2().wrap_connector(tcp)
        }
        AppProtocol::Http | AppProtocol::Https => builder.enable_http1().enable_http2().wrap_connector(tcp),
    })
}

impl AppChannel {
    /// The HTTP/2 channel of a gRPC app.
    pub fn grpc_channel(&self) -> Option<Channel> {
        match &self.transport {
            Transport::Grpc { channel, .. } => Some(channel.clone()),
            Transport::Http { .. } => None,
        }
    }

    /// daprd's own connection to a gRPC app: proxied calls, `OnInvoke` and
    /// `OnTopicEvent` go on it.
    pub fn peer(&self) -> Option<&Peer> {
        match &self.transport {
            Transport::Grpc { peer, .. } => Some(peer),
            Transport::Http { .. } => None,
        }
    }

    /// A place among the calls `--app-max-concurrency` lets into the app at
    /// once (None when unbounded), held until dropped.
    pub async fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.limit.clone()?.acquire_owned().await.ok()
    }

    /// A gRPC request to the app, carrying `APP_API_TOKEN` when set.
    pub fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Some(token) = &self.grpc_token {
            req.metadata_mut().insert("dapr-api-token", token.clone());
        }
        req
    }

    /// `APP_API_TOKEN` as a header value, when set.
    pub fn token(&self) -> Option<&HeaderValue> {
        self.token.as_ref()
    }

    /// A channel to the app at `address:port`. Nothing is dialled until the first call.
    pub fn new(
        protocol: AppProtocol,
        address: &str,
        port: u16,
        token: Option<&str>,
        max_concurrency: Option<usize>,
        max_body: usize,
    ) -> Result<Self, String> {
        let host = if address.contains(':') && !address.starts_with('[') {
            format!("[{address}]")
        } else {
            address.to_string()
        };
        let tls = matches!(protocol, AppProtocol::Https | AppProtocol::Grpcs);
        let base = format!("{}://{host}:{port}", if tls { "https" } else { "http" });
        let transport = if protocol.is_grpc() {
            let endpoint = Channel::from_shared(base)
                .map_err(|e| format!("invalid app address {address}: {e}"))?
                .connect_timeout(Duration::from_secs(5))
                // Proxied streams move large messages: a 64 KiB window would
                // stall each one on a round trip per window.
                .initial_stream_window_size(Some(STREAM_WINDOW))
                .initial_connection_window_size(Some(CONNECTION_WINDOW));
            let tls = match protocol {
                AppProtocol::Grpcs => {
                    let mut config = daprs_mtls::tls::any_server_config()?;
                    config.alpn_protocols = vec![b"h2".to_vec()];
                    Some(Arc::new(config))
                }
                _ => None,
            };
            Transport::Grpc {
                channel: endpoint.connect_with_connector_lazy(app_connector(protocol)?),
                peer: Arc::new(Peer::new(&format!("{host}:{port}"), tls)),
            }
        } else if protocol == AppProtocol::Http {
            Transport::Http {
                client: HttpClient::Pool(Pool::new(format!("{host}:{port}"), None)),
                base: String::new(),
            }
        } else {
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256);
            if protocol == AppProtocol::H2c {
                builder.http2_only(true);
            }
            Transport::Http {
                client: HttpClient::Hyper(Box::new(builder.build(app_connector(protocol)?))),
                base,
            }
        };
        let token = match token {
            Some(t) => Some(
                HeaderValue::from_str(t)
                    .map_err(|_| "APP_API_TOKEN is not a valid header value".to_string())?,
            ),
            None => None,
        };
        let grpc_token = match token.as_ref().map(|t| AsciiMetadataValue::try_from(t.as_bytes())) {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => return Err("APP_API_TOKEN is not a valid gRPC metadata value".into()),
            None => None,
        };
        Ok(Self {
            transport,
            token,
            grpc_token,
            limit: max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
            protocol,
            port,
            address: address.to_string(),
            max_body,
        })
    }

    /// Calls an HTTP app: `<verb> /<path>` with a body and headers; the status
    /// and body of its answer.
    pub async fn call_http(
        &self,
        verb: Verb,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        metadata: Metadata,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let req = InternalInvokeRequest {
            ver: 0,
            actor: None,
            metadata,
            message: Some(InvokeRequest {
                method: path.trim_start_matches('/').to_string(),
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: body,
                }),
                content_type: content_type.into(),
                http_extension: Some(HttpExtension {
                    verb: verb as i32,
                    querystring: String::new(),
                }),
            }),
        };
        let res = self.invoke(req).await?;
        let status = res.status.map_or(500, |s| u16::try_from(s.code).unwrap_or(500));
        let body = res
            .message
            .and_then(|m| m.data)
            .map(|d| d.value)
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Invokes a method of the app. The reply's status is an HTTP status for HTTP
    /// apps and a gRPC code for gRPC apps, as between Dapr sidecars.
    pub async fn invoke(&self, req: InternalInvokeRequest) -> Result<InternalInvokeResponse, ApiError> {
        let _permit = match &self.limit {
            Some(s) => Some(
                s.acquire()
                    .await
                    .map_err(|_| direct_invoke("app channel closed"))?,
            ),
            None => None,
        };
        match &self.transport {
            Transport::Http { client, base } => self.invoke_http(client, base, req).await,
            Transport::Grpc { peer, .. } => self.invoke_grpc(peer, req).await,
        }
    }

    async fn invoke_http(
        &self,
        client: &HttpClient,
        base: &str,
        req: InternalInvokeRequest,
    ) -> Result<InternalInvokeResponse, ApiError> {
        let msg = req.message.unwrap_or_default();
        let ext = msg.http_extension.unwrap_or_default();
        let method = method_of(ext.verb)?;
        let path = msg.method.trim_start_matches('/');
        let uri = if ext.querystring.is_empty() {
            format!("{base}/{path}")
        } else {
            format!("{base}/{path}?{}", ext.querystring)
        };
        let mut builder = Request::builder().method(method).uri(&uri);
        let headers = builder
            .headers_mut()
            .ok_or_else(|| ApiError::bad_request(format!("invalid method path {path:?}")))?;
        for (key, list) in req.metadata {
            // Keys from sidecars arrive in lower case already.
            let lower = if key.bytes().any(|b| b.is_ascii_uppercase()) {
                std::borrow::Cow::Owned(key.to_ascii_lowercase())
            } else {
                std::borrow::Cow::Borrowed(key.as_str())
            };
            if HOP_BY_HOP.contains(&lower.as_ref())
                || matches!(
                    lower.as_ref(),
                    "content-length" | "content-type" | "host" | "destination-app-id" | "dapr-api-token"
                )
                || lower.ends_with("-bin")
                || lower.starts_with(':')
            {
                continue;
            }
            let name = if lower.starts_with("grpc-") {
                std::borrow::Cow::Owned(format!("dapr-{lower}"))
            } else {
                lower
            };
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            // Each value's bytes move into the header, uncopied.
            for v in list.values {
                if let Ok(v) = HeaderValue::try_from(v) {
                    headers.append(name.clone(), v);
                }
            }
        }
        if !msg.content_type.is_empty()
            && let Ok(ct) = HeaderValue::from_str(&msg.content_type)
        {
            headers.insert(http::header::CONTENT_TYPE, ct);
        }
        if let Some(token) = &self.token {
            headers.insert("dapr-api-token", token.clone());
        }
        let body = msg.data.map(|a| a.value).unwrap_or_default();
        let request = builder
            .body(Bytes::from(body))
            .map_err(|e| ApiError::bad_request(format!("invalid request to app: {e}")))?;
        let (res, body) = self.exchange(client, request).await?;
        let status = res.status.as_u16();
        let headers = from_http_headers(&res.headers, &["content-length"]);
        let content_type = res
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(InternalInvokeResponse {
            status: Some(Status {
                code: i32::from(status),
                message: String::new(),
                details: vec![],
            }),
            headers,
            trailers: Metadata::new(),
            message: Some(InvokeResponse {
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: Vec::from(body),
                }),
                content_type,
            }),
        })
    }

    /// Sends a request to an HTTP app and reads its reply whole. One limit
    /// for every body: a reply over --max-body-size is refused rather than
    /// held in memory whole (at once when it says its length).
    async fn exchange(
        &self,
        client: &HttpClient,
        request: Request<Bytes>,
    ) -> Result<(http::response::Parts, Bytes), ApiError> {
        // Shared, not copied: named only if the call fails.
        let uri = request.uri().clone();
        client.request(request, self.max_body).await.map_err(|e| match e {
            CallError::TooLarge => direct_invoke(format!(
                "the app's reply is over the limit of {} bytes; raise it with --max-body-size",
                self.max_body
            )),
            CallError::Failed(e) => direct_invoke(format!("error invoking app at {uri}: {e}")),
        })
    }

    /// The URI `post` sends to for `/<path>`: made once per route rather
    /// than per event. Plain HTTP goes out in origin form on daprd's pool.
    pub fn event_uri(&self, path: &str) -> Result<http::Uri, ApiError> {
        let path = path.trim_start_matches('/');
        let uri = match &self.transport {
            Transport::Http { base, .. } => format!("{base}/{path}"),
            Transport::Grpc { .. } => return Err(direct_invoke("the app does not speak HTTP")),
        };
        uri.parse()
            .map_err(|e| ApiError::bad_request(format!("invalid route {path:?}: {e}")))
    }

    /// POSTs `body` to `uri` (from [`Self::event_uri`]) of an HTTP app with
    /// exactly `headers` (and the app token): how events are delivered,
    /// without the detour through an invocation request. The status and
    /// body of the answer.
    pub async fn post(
        &self,
        uri: http::Uri,
        mut headers: http::HeaderMap,
        body: Bytes,
    ) -> Result<(u16, Bytes), ApiError> {
        let Transport::Http { client, .. } = &self.transport else {
            return Err(direct_invoke("the app does not speak HTTP"));
        };
        let _permit = self.admit().await;
        if let Some(token) = &self.token {
            headers.insert("dapr-api-token", token.clone());
        }
        let mut request = Request::new(body);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let (res, body) = self.exchange(client, request).await?;
        Ok((res.status.as_u16(), body))
    }

    /// `OnInvoke` on the app, sent as one write on daprd's own connection.
    async fn invoke_grpc(
        &self,
        app: &Peer,
        req: InternalInvokeRequest,
    ) -> Result<InternalInvokeResponse, ApiError> {
        let msg: InvokeRequest = req.message.unwrap_or_default();
        let mut metadata = grpc_metadata(&req.metadata);
        if let Some(ctx) = crate::trace::parent_in_metadata(&req.metadata) {
            crate::trace::set_grpc_metadata(&mut metadata, &ctx);
        }
        if let Some(token) = &self.grpc_token {
            metadata.insert("dapr-api-token", token.clone());
        }
        let limit = self.max_body.max(MAX_UNARY);
        let sent = app.unary(&ON_INVOKE, metadata.into_headers(), &msg, limit).await;
        match sent {
            Ok((headers, body)) => {
                let headers = from_grpc_metadata(&MetadataMap::from_headers(headers), &[]);
                Ok(InternalInvokeResponse {
                    status: Some(Status {
                        code: 0,
                        message: String::new(),
                        details: vec![],
                    }),
                    headers,
                    trailers: Metadata::new(),
                    message: Some(body),
                })
            }
            Err(status) if is_transport_failure(&status) => Err(direct_invoke(format!(
                "error invoking app over gRPC: {}",
                status.message()
            ))),
            Err(status) => Ok(InternalInvokeResponse {
                status: Some(Status {
                    code: status.code() as i32,
                    message: status.message().to_string(),
                    details: vec![],
                }),
                headers: from_grpc_metadata(status.metadata(), &[]),
                trailers: Metadata::new(),
                message: Some(InvokeResponse::default()),
            }),
        }
    }

    /// One health probe: HTTP GET `path` answering 2xx, or gRPC `HealthCheck` OK.
    pub async fn probe(&self, path: &str, timeout: Duration) -> bool {
        let check = async {
            match &self.transport {
                Transport::Http { client, base } => {
                    let mut req = Request::get(format!("{base}{path}"));
                    if let (Some(h), Some(t)) = (req.headers_mut(), &self.token) {
                        h.insert("dapr-api-token", t.clone());
                    }
                    let Ok(req) = req.body(Bytes::new()) else {
                        return false;
                    };
                    client
                        .request(req, self.max_body)
                        .await
                        .is_ok_and(|(r, _)| r.status.is_success())
                }
                Transport::Grpc { channel, .. } => {
                    let mut req = tonic::Request::new(());
                    if let Some(token) = &self.grpc_token {
                        req.metadata_mut().insert("dapr-api-token", token.clone());
                    }
                    AppCallbackHealthCheckClient::new(channel.clone())
                        .health_check(req)
                        .await
                        .is_ok()
                }
            }
        };
        tokio::time::timeout(timeout, check).await.unwrap_or(false)
    }
}

/// A status that reports a broken connection rather than an answer from the app.
fn is_transport_failure(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.metadata().is_empty()
}
