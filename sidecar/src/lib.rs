//! `daprd`: a Dapr-compatible sidecar.
//!
//! Layout:
//! - [`flags`]: Dapr's command-line flags and the settings derived from them.
//! - [`resources`]: resource files, embedded defaults, metadata resolution;
//!   [`components`]: building each Component through `daprs-components`.
//! - [`runtime`]: shared state; [`state_api`], [`secrets_api`], [`pubsub`] and
//!   [`invoke`] hold the building blocks that both APIs call.
//! - [`http_api`], [`grpc_api`]: the public APIs; [`internal`]: sidecar-to-sidecar;
//!   [`grpc_router`] puts the gRPC ports together; [`listen`] binds and serves
//!   one port; [`serve`] binds them all and serves each.
//! - [`proxy`]: gRPC proxying of apps' own services; [`endpoints`]: services
//!   outside Dapr (HTTPEndpoints and URLs).
//! - [`acl`]: who may invoke this app; [`resiliency`]: timeouts, retries and
//!   circuit breakers for every call to an app or component.
//! - [`app_channel`]: calls into the app; [`registry`]: name resolution.
//! - [`identity`]: the workload certificate; [`control_plane`]: resources
//!   from the operator in Kubernetes mode.
//! - [`metrics`]: Dapr's metrics; [`trace`]: trace context and the tracer;
//!   [`observe`]: the layers that record both and the API log lines for
//!   every call; [`logging`]: Dapr's log format.
//!
//! [`run`] starts everything and returns when the sidecar has shut down.

pub mod acl;
pub mod app_channel;
pub mod bindings_api;
pub mod components;
pub mod config;
pub mod configuration_api;
pub mod control_plane;
pub mod endpoints;
pub mod error;
pub mod flags;
pub mod grpc_api;
pub mod grpc_router;
pub mod http_api;
pub mod identity;
pub mod internal;
pub mod invoke;
pub mod listen;
pub mod lock_api;
pub mod logging;
pub mod metadata_api;
pub mod metrics;
pub mod observe;
pub mod proxy;
pub mod pubsub;
pub mod registry;
pub mod resiliency;
pub mod resources;
pub mod runtime;
pub mod secrets_api;
pub mod serve;
pub mod settings;
mod startup;
pub mod state_api;
pub mod trace;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::watch;

use crate::{
    error::StartError,
    flags::Mode,
    registry::DEFAULT_NAMESPACE,
    runtime::{Health, Runtime},
    settings::Settings,
};

/// Waits until the app's port accepts a TCP connection, polling with back-off.
async fn wait_for_app(address: &str, port: u16) {
    let mut delay = Duration::from_millis(5);
    let mut logged = false;
    loop {
        if tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect((address, port)),
        )
        .await
        .is_ok_and(|r| r.is_ok())
        {
            return;
        }
        if !logged && delay >= Duration::from_millis(100) {
            tracing::info!(port, "waiting for the app to listen on port {port}");
            logged = true;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// Probes the app and flips `app_healthy` after `threshold` consecutive failures or one success.
async fn probe_app(rt: Arc<Runtime>) {
    let f = &rt.settings.flags;
    let (interval, timeout, threshold) = (
        Duration::from_secs(f.app_health_probe_interval),
        Duration::from_millis(f.app_health_probe_timeout),
        f.app_health_threshold,
    );
    let Some(app) = rt.app.as_ref() else { return };
    let mut failures = 0;
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let ok = app.probe(&f.app_health_check_path, timeout).await;
        let was = rt.health.app_healthy.load(Ordering::Relaxed);
        if ok {
            failures = 0;
            if !was {
                tracing::info!("app is healthy");
                rt.health.app_healthy.store(true, Ordering::Relaxed);
            }
        } else {
            failures += 1;
            if was && failures >= threshold {
                tracing::warn!(failures, "app is unhealthy");
                rt.health.app_healthy.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// Runs the sidecar until shutdown (signal, `POST /v1.0/shutdown` or `Shutdown`).
pub async fn run(
    settings: Settings,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let started = std::time::Instant::now();
    let flags = settings.flags.clone();
    for flag in flags.inert.given() {
        tracing::info!(
            "flag {flag} is accepted for compatibility with Dapr and has no effect in this sidecar"
        );
    }
    let namespace = settings
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());

    let (svid, operator) = startup::control_plane(&settings, &namespace).await?;

    let (resources, from_operator) = startup::resources(&settings, operator.as_ref()).await?;
    let config = startup::load_config(&flags, operator.as_ref()).await?;
    let mut resiliency = startup::load_resiliency(&flags.app_id, &resources, operator.as_ref()).await?;
    let endpoints = startup::load_endpoints(&settings, &resources, operator.as_ref()).await?;
    let metrics = Arc::new(metrics::Metrics::new(
        flags.enable_metrics && config.metrics_enabled,
        &flags.app_id,
        settings.namespace.as_deref().unwrap_or(""),
        config.metric.as_ref(),
    ));
    let tracer =
        trace::tracer(&flags.app_id, config.tracing.as_ref(), &settings.env).map_err(StartError::Config)?;
    if svid.is_some() {
        metrics.mtls_started();
    }
    for name in &resiliency.names {
        metrics.resiliency_in_use(name);
    }
    resiliency.observe(&metrics);
    let mut loaded = components::init_all(&settings, &config, &resources, &metrics).await?;
    let declared = {
        let mut errors = Vec::new();
        let subs = pubsub::subscriptions::declarative(&resources, &flags.app_id, &mut errors);
        for e in errors {
            tracing::error!(error = %e, "subscription ignored");
        }
        subs
    };
    if flags.mode == Mode::Kubernetes && !flags.disable_builtin_k8s_secret_store {
        components::add_builtin_secret_store(&mut loaded, &settings.env, &namespace)
            .map_err(StartError::Config)?;
    }

    let data_dir = resources::data_dir(&settings.env);
    let resolver = startup::resolver(&settings, &data_dir);
    let app = startup::app_channel(&settings)?;

    // Bind every port before announcing anything, so a clash fails start-up cleanly.
    let ports = serve::Ports::bind(&settings).await?;
    let (internal_port, internal_addr) = (ports.internal_port, ports.internal_addr);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut invoker = invoke::Invoker::new(
        flags.app_id.clone(),
        namespace.clone(),
        resolver,
        settings.max_body_size,
    );
    // Mutual TLS between sidecars: the certificate on both ends of every call.
    let internal_tls = match (&svid, &settings.control_plane) {
        (Some(svid), Some(cp)) if cp.mtls => {
            invoker = invoker.with_mtls(svid.clone());
            let mut config = daprs_mtls::tls::server_config(svid.identity.clone(), Some(svid.roots.clone()))
                .map_err(StartError::ControlPlane)?;
            // Other sidecars make unary calls over HTTP/1.1 (`Peer::sidecar`).
            config.alpn_protocols.push(b"http/1.1".to_vec());
            Some(Arc::new(config))
        }
        _ => None,
    };
    if let (Some(svid), Some(cp)) = (svid.clone(), settings.control_plane.clone()) {
        let (app_id, ns) = (flags.app_id.clone(), namespace.clone());
        let (renewals, stop) = (metrics.clone(), serve::stopped(shutdown_rx.clone()));
        tokio::spawn(async move {
            tokio::select! {
                () = svid.renew(cp, app_id, ns, renewals) => {}
                () = stop => {}
            }
        });
    }
    let rt = Arc::new(Runtime {
        app_id: flags.app_id.clone(),
        namespace: settings.namespace.clone(),
        loaded: std::sync::RwLock::new(loaded),
        extended: Default::default(),
        health: Health::default(),
        app,
        invoker,
        shutdown,
        internal_port,
        settings,
        config,
        resiliency,
        endpoints,
        subscriptions: Default::default(),
        components_changed: tokio::sync::broadcast::channel(16).0,
        config_watches: Default::default(),
        metrics: metrics.clone(),
        tracer: tracer.clone(),
    });
    rt.health.app_healthy.store(true, Ordering::Relaxed);

    // Component changes from the operator, applied while running.
    let subscription_source = operator.clone();
    if let Some(op) = operator {
        let (rt, stop) = (rt.clone(), serve::stopped(shutdown_rx.clone()));
        tokio::spawn(async move {
            tokio::select! {
                () = op.follow(rt, from_operator) => {}
                () = stop => {}
            }
        });
    }

    let mut tasks = serve::all(&rt, ports, internal_tls, &shutdown_rx, tracer).await;

    // Announce this sidecar to the others.
    let registration = match rt.invoker.local_registry() {
        Some(reg) => Some(
            reg.register(
                &rt.app_id,
                &namespace,
                &internal_addr.map_or_else(|| format!("127.0.0.1:{internal_port}"), |a| a.to_string()),
            )
            .map_err(|e| StartError::Io(format!("cannot register in {}: {e}", data_dir.display())))?,
        ),
        None => None,
    };
    rt.health.outbound.store(true, Ordering::Relaxed);
    tracing::info!(
        app_id = %rt.app_id,
        http_port = flags.dapr_http_port,
        grpc_port = flags.dapr_grpc_port,
        internal_port,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "dapr initialized. Status: Running"
    );

    // The app listens, its subscriptions and input bindings start, then the
    // sidecar is ready; health probes follow.
    let subscribers = Arc::new(tokio::sync::Mutex::new(pubsub::delivery::Subscribers::default()));
    match rt.app.as_ref() {
        Some(app) => {
            let (rt2, address, port) = (rt.clone(), app.address.clone(), app.port);
            let stop = serve::stopped(shutdown_rx.clone());
            let subscribers = subscribers.clone();
            // Waiting for and probing the app ends with the shutdown; it is not
            // in-flight work to drain.
            tasks.spawn(async move {
                let watch_app = async {
                    wait_for_app(&address, port).await;
                    tracing::info!(port, "app is listening");
                    pubsub::delivery::serve(&rt2, &subscribers, declared, subscription_source).await;
                    bindings_api::serve_inputs(&rt2).await;
                    // Ready once subscribed, as Dapr is: an event published
                    // after /v1.0/healthz answers 204 reaches the app.
                    rt2.health.app_ready.store(true, Ordering::Relaxed);
                    if rt2.settings.flags.enable_app_health_check {
                        probe_app(rt2.clone()).await;
                    }
                };
                tokio::select! {
                    () = watch_app => {}
                    () = stop => {}
                }
                Ok(())
            });
        }
        None => rt.health.app_ready.store(true, Ordering::Relaxed),
    }

    tokio::spawn(shut_down_on(signal, rt.clone()));
    serve::stopped(shutdown_rx).await;
    drop(registration);
    drain(&rt, tasks, &subscribers).await;
    tracing::info!("daprd shut down");
    Ok(())
}

/// A signal starts the same shutdown as the API, after serving on while
/// `--dapr-block-shutdown-duration` says to.
async fn shut_down_on(signal: impl std::future::Future<Output = ()>, rt: Arc<Runtime>) {
    signal.await;
    if let Some(limit) = rt.settings.block_shutdown {
        tracing::info!(
            ?limit,
            "received termination signal; serving on until the app is unhealthy or the time is up"
        );
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline && rt.health.app_healthy.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tracing::info!("received termination signal, shutting down");
    rt.begin_shutdown();
}

/// Once shutting down: inbound delivery stops first (what is in flight
/// finishes, nothing new starts), then every server finishes its requests,
/// all within `--dapr-graceful-shutdown-seconds`.
async fn drain(
    rt: &Runtime,
    mut tasks: tokio::task::JoinSet<Result<(), String>>,
    subscribers: &tokio::sync::Mutex<pubsub::delivery::Subscribers>,
) {
    let grace = rt.settings.graceful_shutdown;
    let drained = tokio::time::timeout(grace, async {
        std::mem::take(&mut *subscribers.lock().await).stop(rt).await;
        while let Some(res) = tasks.join_next().await {
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %e, "server stopped with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            ?grace,
            "in-flight requests did not finish within --dapr-graceful-shutdown-seconds"
        );
        tasks.abort_all();
    }
}
