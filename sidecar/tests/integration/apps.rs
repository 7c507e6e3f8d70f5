//! Test applications: an HTTP echo app and a gRPC `AppCallback` app.

use std::collections::BTreeMap;

use axum::{
    Router,
    extract::{Path, Request},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{any, get},
};
use daprs_proto::{
    common::{InvokeRequest, InvokeResponse},
    runtime::{
        BindingEventRequest, BindingEventResponse, JobEventRequest, JobEventResponse,
        ListInputBindingsResponse, ListTopicSubscriptionsResponse, TopicEventBulkRequest,
        TopicEventBulkResponse, TopicEventRequest, TopicEventResponse,
        app_callback_server::{AppCallback, AppCallbackServer},
    },
};
use http_body_util::BodyExt;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use super::harness::free_port;

fn headers_json(h: &HeaderMap) -> BTreeMap<String, String> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect()
}

async fn echo(req: Request) -> impl IntoResponse {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if parts.uri.path() == "/raw" {
        // Large bodies come back byte for byte.
        return (
            StatusCode::OK,
            [("content-type", "application/octet-stream")],
            body,
        )
            .into_response();
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers_json(&parts.headers),
        "body": String::from_utf8_lossy(&body),
    });
    (StatusCode::OK, [("x-app", "echo")], axum::Json(json)).into_response()
}

async fn status(Path(code): Path<u16>) -> impl IntoResponse {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [("x-app", "status")],
        format!("app answered {}", code.as_u16()),
    )
}

/// `n` bytes in 64 KiB chunks, with no declared length (`?sized` declares it).
async fn big(Path(n): Path<usize>, req: Request) -> axum::response::Response {
    let chunks = (0..n).step_by(64 << 10).map(move |at| {
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(vec![b'x'; (n - at).min(64 << 10)]))
    });
    let body = axum::body::Body::from_stream(tokio_stream::iter(chunks));
    if req.uri().query() == Some("sized") {
        ([(http::header::CONTENT_LENGTH, n.to_string())], body).into_response()
    } else {
        body.into_response()
    }
}

/// Starts the HTTP echo app; returns its port.
pub async fn http_app() -> u16 {
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind app");
    let router = Router::new()
        .route("/status/{code}", any(status))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/big/{n}", get(big))
        .fallback(echo)
        .layer(axum::extract::DefaultBodyLimit::disable());
    tokio::spawn(async move { axum::serve(listener, router).await });
    port
}

struct GrpcApp;

#[tonic::async_trait]
impl AppCallback for GrpcApp {
    async fn on_invoke(
        &self,
        req: GrpcRequest<InvokeRequest>,
    ) -> Result<GrpcResponse<InvokeResponse>, Status> {
        let md = req.metadata().clone();
        let caller = md
            .get("dapr-caller-app-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let r = req.into_inner();
        match r.method.as_str() {
            "missing" => Err(Status::not_found("no such thing")),
            "invalid" => Err(Status::invalid_argument("bad argument")),
            _ => {
                let body = r.data.map(|a| a.value).unwrap_or_default();
                let reply = format!(
                    "{}|{}|{}|{}",
                    r.method,
                    caller,
                    r.content_type,
                    String::from_utf8_lossy(&body)
                );
                let mut res = GrpcResponse::new(InvokeResponse {
                    data: Some(prost_types::Any {
                        type_url: String::new(),
                        value: reply.into_bytes(),
                    }),
                    content_type: "text/plain".into(),
                });
                res.metadata_mut().insert("x-app", "grpc".parse().expect("value"));
                if let Some(b) = md.get_bin("x-raw-bin") {
                    res.metadata_mut().insert_bin("x-raw-bin", b.clone());
                }
                Ok(res)
            }
        }
    }
    async fn list_topic_subscriptions(
        &self,
        _: GrpcRequest<()>,
    ) -> Result<GrpcResponse<ListTopicSubscriptionsResponse>, Status> {
        Ok(GrpcResponse::new(ListTopicSubscriptionsResponse::default()))
    }
    async fn on_topic_event(
        &self,
        _: GrpcRequest<TopicEventRequest>,
    ) -> Result<GrpcResponse<TopicEventResponse>, Status> {
        Err(Status::unimplemented("test app"))
    }
    async fn list_input_bindings(
        &self,
        _: GrpcRequest<()>,
    ) -> Result<GrpcResponse<ListInputBindingsResponse>, Status> {
        Ok(GrpcResponse::new(ListInputBindingsResponse::default()))
    }
    async fn on_binding_event(
        &self,
        _: GrpcRequest<BindingEventRequest>,
    ) -> Result<GrpcResponse<BindingEventResponse>, Status> {
        Err(Status::unimplemented("test app"))
    }
    async fn on_bulk_topic_event(
        &self,
        _: GrpcRequest<TopicEventBulkRequest>,
    ) -> Result<GrpcResponse<TopicEventBulkResponse>, Status> {
        Err(Status::unimplemented("test app"))
    }
    async fn on_job_event(
        &self,
        _: GrpcRequest<JobEventRequest>,
    ) -> Result<GrpcResponse<JobEventResponse>, Status> {
        Err(Status::unimplemented("test app"))
    }
}

/// Starts the gRPC app; returns its port.
pub async fn grpc_app() -> u16 {
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind app");
    let svc = AppCallbackServer::new(GrpcApp)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    port
}

/// A TLS acceptor with a fresh self-signed certificate for 127.0.0.1,
/// offering `alpn` protocols, and that certificate's PEM.
pub fn tls_acceptor(alpn: &[&[u8]]) -> (tokio_rustls::TlsAcceptor, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        cert.pem(),
    )
}

/// Serves `svc` over TLS on a free port; returns the port.
pub async fn serve_tls<S>(svc: S, acceptor: tokio_rustls::TlsAcceptor) -> u16
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<axum::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind app");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, svc) = (acceptor.clone(), svc.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(svc),
                    )
                    .await;
            });
        }
    });
    port
}

/// The HTTP echo app behind TLS (`--app-protocol https`).
pub async fn https_app() -> u16 {
    https_app_with_ca().await.0
}

/// The same, with the PEM of the certificate it presents.
pub async fn https_app_with_ca() -> (u16, String) {
    let router = Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .fallback(echo);
    let (acceptor, pem) = tls_acceptor(&[b"h2", b"http/1.1"]);
    (serve_tls(router, acceptor).await, pem)
}

/// The echo app behind TLS that requires a client certificate from its own
/// CA: its port, the PEM of the certificate it presents, and a client
/// certificate and key (PEM) that CA issued.
pub async fn mtls_app() -> (u16, String, (String, String)) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let client_key = rcgen::KeyPair::generate().expect("key");
    let client = rcgen::CertificateParams::new(vec!["binder".into()])
        .expect("params")
        .signed_by(&client_key, &issuer)
        .expect("client certificate");
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .expect("params")
        .self_signed(&server_key)
        .expect("server certificate");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("CA root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let port = serve_tls(Router::new().fallback(echo), acceptor).await;
    (port, server.pem(), (client.pem(), client_key.serialize_pem()))
}

/// The gRPC app behind TLS (`--app-protocol grpcs`).
pub async fn grpcs_app() -> u16 {
    let routes = tonic::service::Routes::new(AppCallbackServer::new(GrpcApp)).prepare();
    let svc = tower::ServiceExt::<http::Request<hyper::body::Incoming>>::map_response(
        routes,
        |r: http::Response<tonic::body::Body>| r.map(axum::body::Body::new),
    );
    serve_tls(svc, tls_acceptor(&[b"h2"]).0).await
}

/// An HTTP app whose health the test switches, with a slow route that counts
/// how many requests it serves at once.
#[derive(Clone, Default)]
pub struct Controlled {
    pub unhealthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub max_in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Starts a [`Controlled`] app; returns it and its port. `GET /healthz` answers
/// 200 or 503; `/slow/{ms}` answers after that many milliseconds.
pub async fn controlled_app() -> (Controlled, u16) {
    use std::sync::atomic::Ordering::SeqCst;
    let state = Controlled::default();
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind app");
    let health = state.clone();
    let slow = state.clone();
    let router = Router::new()
        .route(
            "/healthz",
            get(move || {
                let s = health.clone();
                async move {
                    if s.unhealthy.load(SeqCst) {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .route(
            "/slow/{ms}",
            any(move |Path(ms): Path<u64>| {
                let s = slow.clone();
                async move {
                    let now = s.in_flight.fetch_add(1, SeqCst) + 1;
                    s.max_in_flight.fetch_max(now, SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    s.in_flight.fetch_sub(1, SeqCst);
                    format!("slept {ms}")
                }
            }),
        )
        .fallback(echo);
    tokio::spawn(async move { axum::serve(listener, router).await });
    (state, port)
}
