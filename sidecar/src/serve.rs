//! The ports a sidecar serves: all bound before anything is announced, so
//! a clash fails start-up cleanly, then each served by a task of its own
//! until the shutdown: the HTTP and gRPC APIs, the internal port other
//! sidecars call, the public health port and the metrics port.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use daprs_mtls::http::Limits;
use daprs_telemetry::trace::Tracer;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{
    app_channel,
    error::StartError,
    flags::Mode,
    grpc_router, http_api,
    listen::{self, ApiListener},
    observe,
    runtime::Runtime,
    settings::Settings,
};

/// Every port, bound.
pub struct Ports {
    internal: Vec<TcpListener>,
    /// The internal port (chosen by the system when not given).
    pub internal_port: u16,
    /// Where other sidecars on this machine reach the internal port.
    pub internal_addr: Option<SocketAddr>,
    http: Vec<ApiListener>,
    grpc: Vec<ApiListener>,
    public: Vec<TcpListener>,
}

impl Ports {
    pub async fn bind(settings: &Settings) -> Result<Self, StartError> {
        let internal_port = match (settings.flags.dapr_internal_grpc_port, settings.flags.mode) {
            (Some(p), _) => p,
            (None, Mode::Kubernetes) => 50002,
            (None, Mode::Standalone) => 0,
        };
        let internal =
            listen::bind_all("internal gRPC API", &settings.internal_listen, internal_port).await?;
        let internal_port = listen::port_of(&internal)?;
        let internal_addr = listen::reachable_addr(&internal);
        let tcp = |what, port| async move {
            let bound = listen::bind_all(what, &settings.listen_addresses, port).await?;
            Ok::<Vec<_>, StartError>(bound.into_iter().map(ApiListener::Tcp).collect())
        };
        let (http_listeners, grpc_listeners) = match &settings.flags.unix_domain_socket {
            Some(dir) => (
                vec![listen::bind_unix(
                    "HTTP API",
                    &dir.join(format!("dapr-{}-http.socket", settings.flags.app_id)),
                )?],
                vec![listen::bind_unix(
                    "gRPC API",
                    &dir.join(format!("dapr-{}-grpc.socket", settings.flags.app_id)),
                )?],
            ),
            None => (
                tcp("HTTP API", settings.flags.dapr_http_port).await?,
                tcp("gRPC API", settings.flags.dapr_grpc_port).await?,
            ),
        };
        let public = match settings.flags.dapr_public_port {
            Some(p) => listen::bind_all("public health API", &settings.public_listen, p).await?,
            None => Vec::new(),
        };
        Ok(Self {
            internal,
            internal_port,
            internal_addr,
            http: http_listeners,
            grpc: grpc_listeners,
            public,
        })
    }
}

/// Serves `router` on each of `listeners`, a task each, until `shutdown`.
fn spawn_each<S: daprs_mtls::http::Api>(
    tasks: &mut JoinSet<Result<(), String>>,
    listeners: impl IntoIterator<Item = ApiListener>,
    router: &S,
    limits: Limits,
    coalesce: bool,
    shutdown: &watch::Receiver<bool>,
) {
    for l in listeners {
        let stop = stopped(shutdown.clone());
        tasks.spawn(listen::serve_http(l, router.clone(), limits, stop, coalesce));
    }
}

/// Ends when `shutdown` turns true.
pub async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|v| *v).await;
}

/// Serves every port until `shutdown` turns true; each server is a task of
/// the set returned, which ends once its in-flight requests have finished.
pub async fn all(
    rt: &Arc<Runtime>,
    ports: Ports,
    internal_tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: &watch::Receiver<bool>,
    tracer: Tracer,
) -> JoinSet<Result<(), String>> {
    let mut tasks = JoinSet::new();

    // HTTP API.
    let observe = observe::Observe::new(&rt.metrics, rt.api_log(), tracer);
    let api = tower::ServiceBuilder::new()
        .option_layer(observe.layer::<observe::Http>())
        .service(http_api::Api::new(rt.clone()));
    let limits = listen::http_limits(&rt.settings);
    spawn_each(&mut tasks, ports.http, &api, limits, false, shutdown);
    let public_router = http_api::public_port_router(rt.clone());
    let public = ports.public.into_iter().map(ApiListener::Tcp);
    spawn_each(&mut tasks, public, &public_router, limits, false, shutdown);

    // gRPC API, and any other service proxied to the app named by dapr-app-id.
    // Unlike the internal port's, its writes are not coalesced: in A/B runs
    // that saved no latency (BENCHMARKS.md).
    let grpc_router = tower::ServiceBuilder::new()
        .option_layer(observe.layer::<observe::Grpc>())
        .service(grpc_router::api(rt.clone()).await);
    let windows = Some((app_channel::STREAM_WINDOW, app_channel::CONNECTION_WINDOW));
    let grpc_limits = listen::grpc_limits(&rt.settings, windows);
    spawn_each(&mut tasks, ports.grpc, &grpc_router, grpc_limits, false, shutdown);

    // Internal API for other sidecars; calls for other services go on to the app.
    // Sidecar-to-sidecar calls are counted, not logged as API calls; their
    // spans are begun where the call is read (invocation, proxying).
    let counted = observe::Observe::new(&rt.metrics, None, daprs_telemetry::trace::Tracer::off());
    let internal_router = tower::ServiceBuilder::new()
        .option_layer(counted.layer::<observe::Grpc>())
        .service(grpc_router::internal(rt.clone()));
    // Other sidecars' unary calls come over HTTP/1.1 (`daprs_mtls::peer`).
    let internal_limits = Limits {
        h1_whole: Some(grpc_router::internal_message_limit(&rt.settings) + 5),
        ..listen::grpc_limits(&rt.settings, windows)
    };
    match internal_tls {
        None => {
            let plain = ports.internal.into_iter().map(ApiListener::Tcp);
            spawn_each(
                &mut tasks,
                plain,
                &internal_router,
                internal_limits,
                true,
                shutdown,
            );
        }
        Some(config) => {
            for l in ports.internal {
                let (router, stop, config) =
                    (internal_router.clone(), stopped(shutdown.clone()), config.clone());
                let l = daprs_mtls::coalesce::Coalesce(daprs_mtls::net::TlsListener::new(l, move || {
                    Some(config.clone())
                }));
                tasks.spawn(async move {
                    daprs_mtls::http::serve(l, router, internal_limits, stop).await;
                    Ok(())
                });
            }
        }
    }

    // Metrics.
    if rt.metrics.enabled() {
        match listen::bind_all(
            "metrics",
            &rt.settings.metrics_listen,
            rt.settings.flags.metrics_port,
        )
        .await
        {
            Ok(ls) => {
                let router = axum::Router::new()
                    .route("/metrics", axum::routing::get(metrics_text))
                    .with_state(rt.clone());
                let ls = ls.into_iter().map(ApiListener::Tcp);
                spawn_each(&mut tasks, ls, &router, limits, false, shutdown);
            }
            Err(e) => tracing::warn!(error = %e, "metrics are off"),
        }
    }
    tasks
}

async fn metrics_text(axum::extract::State(rt): axum::extract::State<Arc<Runtime>>) -> String {
    let ready = |b: bool| if b { 1 } else { 0 };
    let mut out = format!(
        "# HELP dapr_runtime_ready Whether the sidecar is ready (outbound and app).\n\
         # TYPE dapr_runtime_ready gauge\n\
         dapr_runtime_ready{{app_id=\"{id}\",target=\"outbound\"}} {o}\n\
         dapr_runtime_ready{{app_id=\"{id}\",target=\"app\"}} {a}\n\
         # HELP dapr_runtime_components Components in use.\n\
         # TYPE dapr_runtime_components gauge\n\
         dapr_runtime_components{{app_id=\"{id}\"}} {c}\n",
        id = rt.app_id,
        o = ready(rt.health.outbound.load(Ordering::Relaxed)),
        a = ready(rt.health.app_ready.load(Ordering::Relaxed)),
        c = rt.components().len(),
    );
    rt.metrics.render(&mut out);
    daprs_telemetry::process::render(&mut out);
    out
}
