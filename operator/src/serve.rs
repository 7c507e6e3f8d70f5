//! `daprs-operator serve`: the CA and its gRPC service, the controllers and
//! the health endpoints, in one process.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::{
    ca_sync::CaSync,
    controllers,
    sentry::{CaState, Sentry, SentrySettings},
    tls::{self, SelfCert},
};

/// What `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub sentry: SentrySettings,
    pub sentry_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub ca_sync_interval: Duration,
    pub run_controllers: bool,
    /// This replica's name in the leader election (the pod name).
    pub identity: String,
}

/// Keeps the injector's certificate and the webhook's caBundle current.
async fn injector_tls(client: kube::Client, ca: CaState, namespace: String, trust_domain: String) {
    loop {
        let current = ca.read().ok().and_then(|c| c.as_ref().ok().cloned());
        if let Some(ca) = current
            && let Err(e) = crate::webhook_tls::ensure(&client, &ca, &namespace, &trust_domain).await
        {
            tracing::warn!("injector certificate: {e}");
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// Runs the controllers (and the injector's certificate upkeep) only while
/// this replica holds the lease.
async fn lead(client: kube::Client, ca: CaState, namespace: String, trust_domain: String, identity: String) {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::leader::campaign(
        client.clone(),
        namespace.clone(),
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
        let tls = tokio::spawn(injector_tls(
            client.clone(),
            ca.clone(),
            namespace.clone(),
            trust_domain.clone(),
        ));
        let _ = rx.wait_for(|l| !*l).await;
        controllers.abort();
        tls.abort();
        tracing::warn!("lost the lease; controllers stopped");
    }
}

/// A TLS connection tonic can serve.
struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently.
fn tls_incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
) -> impl futures_util::Stream<Item = std::io::Result<TlsConn>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsConn>>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

async fn ready(State(ca): State<CaState>) -> (StatusCode, String) {
    match &*ca.read().unwrap_or_else(|e| e.into_inner()) {
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
    };
    tokio::spawn(sync.run(client.clone(), ca.clone(), s.ca_sync_interval));

    let health = TcpListener::bind(s.health_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (health): {e}", s.health_addr))?;
    let router = Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(ready))
        .with_state(ca.clone());
    tokio::spawn(async move { axum::serve(health, router).await });

    let listener = TcpListener::bind(s.sentry_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (certificate service): {e}", s.sentry_addr))?;
    let cert = Arc::new(SelfCert::new(
        ca.clone(),
        &s.sentry.control_plane_trust_domain,
        &s.sentry.control_plane_namespace,
    ));
    let incoming = tls_incoming(listener, tls::server_config(cert)?);
    let ca_for_leader = ca.clone();
    let sentry = Sentry {
        kube: client.clone(),
        ca,
        settings: s.sentry.clone(),
    };
    let grpc = tonic::transport::Server::builder()
        .add_service(daprs_proto::sentry::ca_server::CaServer::new(sentry))
        .serve_with_incoming(incoming);
    tracing::info!(sentry = %s.sentry_addr, health = %s.health_addr, "daprs-operator serving");
    if s.run_controllers {
        tokio::spawn(lead(
            client,
            ca_for_leader,
            s.sentry.control_plane_namespace.clone(),
            s.sentry.control_plane_trust_domain.clone(),
            s.identity.clone(),
        ));
    }
    grpc.await.map_err(|e| e.to_string())
}
