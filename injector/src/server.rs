//! The HTTPS webhook: `/mutate` for AdmissionReviews, `/healthz` and
//! `/readyz`. The serving certificate is read from files and re-read when
//! they change, so a rotated Secret needs no restart.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::net::TcpListener;

use daprs_telemetry::trace::{SpanContext, SpanKind, Tracer, context::TRACEPARENT};

use crate::{
    admission::{self, Outcome, Requesters},
    sidecar::InjectorConfig,
};

/// Largest AdmissionReview accepted (Kubernetes objects are at most a few MiB).
pub const MAX_BODY: usize = 8 << 20;

/// Request limits: the API server sends small heads and one review per
/// request; a client that stalls or idles is closed.
const LIMITS: daprs_mtls::http::Limits = daprs_mtls::http::Limits {
    max_head: 64 << 10,
    max_body: MAX_BODY,
    too_large: review_too_large,
    head_too_large: daprs_mtls::http::head_too_large,
    timeouts: daprs_mtls::http::Timeouts {
        read_header: Duration::from_secs(10),
        body: Some(Duration::from_secs(10)),
        idle: Duration::from_secs(120),
    },
    h2_windows: None,
    h1_whole: None,
};

fn review_too_large(limit: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("an AdmissionReview may be at most {limit} bytes"),
    )
        .into_response()
}

/// What every request needs.
pub struct Webhook {
    pub config: InjectorConfig,
    pub requesters: Requesters,
    /// A span per admission, when a collector is configured; the API
    /// server's own trace is its parent when it sends one.
    pub tracer: Tracer,
}

async fn mutate(State(hook): State<Arc<Webhook>>, headers: HeaderMap, body: Bytes) -> Response {
    let parent = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(SpanContext::parse);
    let Some(mut span) = hook.tracer.start(SpanKind::Server, parent) else {
        return answer(&hook, &headers, &body).0;
    };
    let (response, outcome) = answer(&hook, &headers, &body);
    if span.recording() {
        span.set_name("admission /mutate");
        let (what, why) = match &outcome {
            Some(Outcome::Injected(app_id)) => ("injected", app_id),
            Some(Outcome::Skipped(why)) => ("skipped", why),
            Some(Outcome::NotAllowed(why)) => ("not allowed", why),
            Some(Outcome::Denied(why)) => ("denied", why),
            None => ("bad request", &String::new()),
        };
        span.set_attribute("dapr.injector.outcome", what);
        match &outcome {
            Some(Outcome::Injected(app_id)) => span.set_attribute("dapr.app_id", app_id),
            Some(Outcome::Skipped(_)) => {}
            _ => span.set_error(&format!("{what}: {why}")),
        }
        span.set_attribute("http.response.status_code", response.status().as_str());
    }
    span.end();
    response
}

/// The webhook's answer, and what it decided when it read a review.
fn answer(hook: &Webhook, headers: &HeaderMap, body: &Bytes) -> (Response, Option<Outcome>) {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !json {
        let refused = (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/json",
        );
        return (refused.into_response(), None);
    }
    if body.is_empty() {
        return ((StatusCode::BAD_REQUEST, "empty body").into_response(), None);
    }
    match admission::review(body, &hook.config, &hook.requesters) {
        Err(admission::BadRequest(why)) => ((StatusCode::BAD_REQUEST, why).into_response(), None),
        Ok((answer, outcome)) => {
            crate::metrics::METRICS.record(&outcome);
            match &outcome {
                Outcome::Injected(_) => tracing::info!("sidecar injected"),
                Outcome::Skipped(why) => tracing::debug!(%why, "pod left unchanged"),
                Outcome::NotAllowed(why) => tracing::warn!(%why, "requester not allowed"),
                Outcome::Denied(why) => tracing::warn!(%why, "pod refused"),
            }
            (axum::Json(answer).into_response(), Some(outcome))
        }
    }
}

/// The webhook's routes.
pub fn router(hook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(|| async { StatusCode::OK }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(hook)
}

/// A serving certificate read from PEM files, swapped when they change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

fn modified(paths: [&PathBuf; 2]) -> Option<SystemTime> {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
}

fn load(cert_file: &PathBuf, key_file: &PathBuf) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("{}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        format!(
            "{} does not match {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(certified)
}

impl ReloadingCert {
    pub fn new(cert_file: PathBuf, key_file: PathBuf) -> Result<Self, String> {
        let key = load(&cert_file, &key_file)?;
        let at = modified([&cert_file, &key_file]);
        Ok(Self {
            cert_file,
            key_file,
            current: RwLock::new((Arc::new(key), at)),
        })
    }

    /// Re-reads the files if they changed; a bad new pair keeps the old one.
    pub fn refresh(&self) {
        let at = modified([&self.cert_file, &self.key_file]);
        let known = self.current.read().map(|c| c.1).unwrap_or(None);
        if at == known {
            return;
        }
        match load(&self.cert_file, &self.key_file) {
            Ok(key) => {
                if let Ok(mut c) = self.current.write() {
                    *c = (Arc::new(key), at);
                }
                tracing::info!("serving certificate reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "new serving certificate not usable; keeping the old one"),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}

/// TLS settings that take the certificate from `cert`.
pub fn tls_config(cert: Arc<ReloadingCert>) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    cert: Arc<ReloadingCert>,
    router: Router,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(cert.clone())?));
    let watcher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            cert.refresh();
        }
    });
    let (drain, handle) = daprs_mtls::http::Drain::new();
    tokio::pin!(stop);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut stop => break,
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, drain) = (acceptor.clone(), router.clone(), drain.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            daprs_mtls::http::serve_connection(tls, router, LIMITS, drain, Default::default()).await;
        });
    }
    drop(drain);
    handle.drain().await;
    watcher.abort();
    Ok(())
}
