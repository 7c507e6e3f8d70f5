//! `daprs-operator serve`, in one process: the CA and its certificate
//! service, the operator API for sidecars, the Subscription conversion
//! webhook, the health and metrics endpoints, and (on the leader) the
//! controllers, the watchdog and the injector's certificate upkeep.

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use daprs_mtls::{TlsConn, net::incoming};
use tokio::net::TcpListener;

use crate::{
    ca_sync::CaSync,
    controllers,
    sentry::{CaState, Sentry, SentrySettings, current},
    tls::SelfCert,
};

/// What `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub sentry: SentrySettings,
    pub sentry_addr: SocketAddr,
    /// The Subscription conversion webhook (HTTPS, for the API server).
    pub webhook_addr: SocketAddr,
    /// Where sidecars read their resources (mutual TLS).
    pub api_addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// Prometheus metrics; not served when None.
    pub metrics_addr: Option<SocketAddr>,
    /// The ConfigMap that owns the CA material this operator creates.
    pub trust_bundle_owner: Option<String>,
    pub ca_sync_interval: Duration,
    pub run_controllers: bool,
    /// This replica's name in the leader election (the pod name).
    pub identity: String,
    /// The watchdog, when enabled.
    pub watchdog: Option<crate::watchdog::Watchdog>,
}

impl ServeSettings {
    /// One operator on free loopback ports, for the control plane in
    /// `dapr-system` with Dapr's default certificate lifetime: how tests and
    /// benchmarks run it in their own process. Callers change what they need.
    pub fn loopback(identity: &str) -> std::io::Result<Self> {
        let free = || std::net::TcpListener::bind("127.0.0.1:0")?.local_addr();
        Ok(Self {
            sentry: SentrySettings {
                control_plane_namespace: "dapr-system".into(),
                control_plane_trust_domain: "cluster.local".into(),
                workload_ttl: Duration::from_secs(24 * 3600),
                allowed_skew: Duration::from_secs(15 * 60),
            },
            sentry_addr: free()?,
            api_addr: free()?,
            webhook_addr: free()?,
            health_addr: free()?,
            metrics_addr: None,
            trust_bundle_owner: None,
            ca_sync_interval: Duration::from_secs(1),
            run_controllers: true,
            identity: identity.into(),
            watchdog: None,
        })
    }
}

/// How long to wait before the next pass of the injector's certificate
/// upkeep: soon while it has not succeeded (the CA may still be loading, so
/// the webhook can serve within seconds of an install), then every 30 s.
pub fn next_upkeep(succeeded: bool, last_wait: Duration) -> Duration {
    const SETTLED: Duration = Duration::from_secs(30);
    if succeeded {
        SETTLED
    } else {
        (last_wait * 2).clamp(Duration::from_millis(250), Duration::from_secs(5))
    }
}

/// Keeps the injector's certificate and the webhook's caBundle current.
async fn injector_tls(client: kube::Client, ca: CaState, sync: CaSync) {
    let mut wait = Duration::ZERO;
    loop {
        let ok = match current(&ca) {
            Ok(ca) => {
                let cert = crate::webhook_tls::ensure(&client, &ca, &sync).await;
                if let Err(e) = &cert {
                    tracing::warn!("injector certificate: {e}");
                }
                let conversion = crate::webhook_tls::ensure_conversion(&client, &ca, &sync.namespace).await;
                if let Err(e) = &conversion {
                    tracing::warn!("conversion webhook: {e}");
                }
                cert.is_ok() && conversion.is_ok()
            }
            Err(_) => false,
        };
        wait = next_upkeep(ok, wait);
        tokio::time::sleep(wait).await;
    }
}

/// Runs the controllers (and the injector's certificate upkeep) only while
/// this replica holds the lease.
async fn lead(
    client: kube::Client,
    ca: CaState,
    sync: CaSync,
    identity: String,
    watchdog: Option<crate::watchdog::Watchdog>,
) {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::leader::campaign(
        client.clone(),
        sync.namespace.clone(),
        "daprs-operator".into(),
        identity,
        Duration::from_secs(15),
        tx,
    ));
    loop {
        if rx.wait_for(|l| *l).await.is_err() {
            return;
        }
        let controllers = tokio::spawn(controllers::run(client.clone()));
        let tls = tokio::spawn(injector_tls(client.clone(), ca.clone(), sync.clone()));
        let dog = watchdog.clone().map(|w| tokio::spawn(w.run(client.clone())));
        let _ = rx.wait_for(|l| !*l).await;
        controllers.abort();
        tls.abort();
        if let Some(d) = dog {
            d.abort();
        }
        tracing::warn!("lost the lease; controllers stopped");
    }
}

/// `POST /convert`: a ConversionReview for Subscriptions.
async fn convert(body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(review) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    match daprs_api::convert::review(&review) {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// Serves `router` over already-accepted TLS connections.
async fn serve_https(
    incoming: impl futures_util::Stream<Item = std::io::Result<TlsConn>> + Send + 'static,
    router: Router,
) {
    use futures_util::StreamExt;
    let mut incoming = std::pin::pin!(incoming);
    while let Some(conn) = incoming.next().await {
        let Ok(conn) = conn else { continue };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(conn.stream), service)
                .await;
        });
    }
}

/// Prometheus text: whether the CA can sign, and when its certificates expire
/// (alert on `dapr_sentry_issuercert_expiry_timestamp - time() < 30d`).
pub fn metrics_text(ca: &CaState) -> String {
    let mut out = String::from(
        "# HELP daprs_operator_ca_ready Whether the certificate authority can sign.\n# TYPE daprs_operator_ca_ready gauge\n",
    );
    match current(ca) {
        Err(_) => out.push_str("daprs_operator_ca_ready 0\n"),
        Ok(ca) => {
            let soon = !ca.expiry_warnings(time::OffsetDateTime::now_utc()).is_empty();
            out.push_str(&format!(
                "daprs_operator_ca_ready 1\n\
                 # HELP dapr_sentry_issuercert_expiry_timestamp When the issuer certificate expires (Unix seconds).\n\
                 # TYPE dapr_sentry_issuercert_expiry_timestamp gauge\n\
                 dapr_sentry_issuercert_expiry_timestamp {}\n\
                 # HELP daprs_operator_root_expiry_timestamp When the earliest root certificate expires (Unix seconds).\n\
                 # TYPE daprs_operator_root_expiry_timestamp gauge\n\
                 daprs_operator_root_expiry_timestamp {}\n\
                 # HELP daprs_operator_ca_expiring_soon 1 when the issuer or a root expires within 30 days.\n\
                 # TYPE daprs_operator_ca_expiring_soon gauge\n\
                 daprs_operator_ca_expiring_soon {}\n",
                ca.issuer_not_after.unix_timestamp(),
                ca.root_not_after.unix_timestamp(),
                u8::from(soon)
            ));
        }
    }
    crate::metrics::METRICS.render(&mut out);
    daprs_telemetry::process::render(&mut out);
    out
}

async fn ready(State(ca): State<CaState>) -> (StatusCode, String) {
    match current(&ca) {
        Ok(_) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("CA not ready: {why}\n")),
    }
}

/// Runs everything until a task fails to start.
pub async fn run(client: kube::Client, s: ServeSettings) -> Result<(), String> {
    let ca: CaState = Arc::new(RwLock::new(Err("the CA has not been loaded yet".into())));
    let sync = CaSync {
        namespace: s.sentry.control_plane_namespace.clone(),
        trust_domain: s.sentry.control_plane_trust_domain.clone(),
        owner: s.trust_bundle_owner.clone(),
    };
    let sync_for_leader = sync.clone();
    tokio::spawn(sync.run(client.clone(), ca.clone(), s.ca_sync_interval));

    let health = TcpListener::bind(s.health_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (health): {e}", s.health_addr))?;
    let health_router = Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(ready))
        .with_state(ca.clone());
    if let Some(addr) = s.metrics_addr {
        let metrics = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (metrics): {e}"))?;
        let router = Router::new()
            .route(
                "/metrics",
                get(|State(ca): State<CaState>| async move { metrics_text(&ca) }),
            )
            .with_state(ca.clone());
        tokio::spawn(async move { axum::serve(metrics, router).await });
    }

    let listener = TcpListener::bind(s.sentry_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (certificate service): {e}", s.sentry_addr))?;
    let own_cert = |id: &str| {
        Arc::new(SelfCert::new(
            ca.clone(),
            &s.sentry.control_plane_trust_domain,
            &s.sentry.control_plane_namespace,
            id,
        ))
    };
    let cert = own_cert("dapr-sentry");
    let sentry_tls = Arc::new(daprs_mtls::tls::server_config(cert.clone(), None)?);

    // The Subscription conversion webhook, for the API server.
    let convert_listener = TcpListener::bind(s.webhook_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (conversion webhook): {e}", s.webhook_addr))?;
    let mut webhook_tls = daprs_mtls::tls::server_config(cert.clone(), None)?;
    webhook_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let webhook_tls = Arc::new(webhook_tls);
    let convert_router = Router::new().route("/convert", axum::routing::post(convert));
    tokio::spawn(serve_https(
        incoming(convert_listener, move || Some(webhook_tls.clone())),
        convert_router,
    ));
    let sentry_incoming = incoming(listener, move || Some(sentry_tls.clone()));

    // The operator API: mutual TLS against the current trust anchors.
    let api_listener = TcpListener::bind(s.api_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (operator API): {e}", s.api_addr))?;
    // Sidecars expect the operator's own identity here, as with Dapr.
    let api_tls = {
        let (ca, cert) = (ca.clone(), own_cert("dapr-operator"));
        let cached: std::sync::Mutex<Option<(String, Arc<rustls::ServerConfig>)>> =
            std::sync::Mutex::new(None);
        move || {
            let anchors = current(&ca).ok()?.trust_anchors.clone();
            let mut c = cached.lock().ok()?;
            if let Some((a, cfg)) = &*c
                && *a == anchors
            {
                return Some(cfg.clone());
            }
            let roots = Arc::new(daprs_mtls::tls::roots(&anchors).ok()?);
            let cfg = Arc::new(daprs_mtls::tls::server_config(cert.clone(), Some(roots)).ok()?);
            *c = Some((anchors, cfg.clone()));
            Some(cfg)
        }
    };
    // Health is answered once every port listens: ready then means the
    // certificate service and the API accept connections, not only that the
    // CA exists.
    tokio::spawn(async move { axum::serve(health, health_router).await });
    let (changes, _) = tokio::sync::broadcast::channel(256);
    let api = crate::api::OperatorApi {
        caches: crate::watch::start(&client, &changes),
        kube: client.clone(),
        changes,
    };
    let api_server = tonic::transport::Server::builder()
        .add_service(daprs_proto::operator::operator_server::OperatorServer::new(api))
        .serve_with_incoming(incoming(api_listener, api_tls));
    tokio::spawn(async move {
        if let Err(e) = api_server.await {
            tracing::error!(error = %e, "operator API stopped");
        }
    });
    let ca_for_leader = ca.clone();
    let sentry = Sentry {
        kube: client.clone(),
        ca,
        settings: s.sentry.clone(),
    };
    let grpc = tonic::transport::Server::builder()
        .add_service(daprs_proto::sentry::ca_server::CaServer::new(sentry))
        .serve_with_incoming(sentry_incoming);
    tracing::info!(sentry = %s.sentry_addr, health = %s.health_addr, "daprs-operator serving");
    if s.run_controllers {
        tokio::spawn(lead(
            client,
            ca_for_leader,
            sync_for_leader,
            s.identity.clone(),
            s.watchdog.clone(),
        ));
    }
    grpc.await.map_err(|e| e.to_string())
}
