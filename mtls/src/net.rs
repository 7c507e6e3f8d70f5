//! TLS connections for tonic: an accept loop that hands each served request
//! the client's SPIFFE ID, and a lazily connecting channel that dials
//! through a given client configuration.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::SpiffeId;

/// The SPIFFE ID of the client certificate (if one was presented), put in
/// each request's extensions by tonic.
#[derive(Clone, Debug, Default)]
pub struct PeerId(pub Option<String>);

impl PeerId {
    /// The parsed identity, when the peer presented one.
    pub fn spiffe(&self) -> Option<SpiffeId> {
        self.0.as_deref().and_then(SpiffeId::parse)
    }
}

/// A server-side TLS connection tonic can serve.
pub struct TlsConn {
    pub stream: tokio_rustls::server::TlsStream<TcpStream>,
    pub peer: PeerId,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerId;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently (a
/// slow client cannot hold up the others), with the configuration `config`
/// gives for each connection; None drops the connection (not ready yet).
pub fn incoming(
    listener: TcpListener,
    config: impl Fn() -> Option<Arc<rustls::ServerConfig>> + Send + 'static,
) -> impl futures_util::Stream<Item = std::io::Result<TlsConn>> {
    let rx = TlsListener::new(listener, config).0;
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

/// TLS connections for [`crate::http::serve`], handshakes done as for
/// [`incoming`]; each request carries the client's [`PeerId`].
pub struct TlsListener(tokio::sync::mpsc::Receiver<std::io::Result<TlsConn>>);

impl crate::http::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    async fn accept(&mut self) -> std::io::Result<(Self::Io, http::Extensions)> {
        match self.0.recv().await {
            Some(conn) => {
                let conn = conn?;
                let mut ext = http::Extensions::new();
                ext.insert(conn.peer);
                Ok((conn.stream, ext))
            }
            None => Err(std::io::Error::other("the TLS acceptor stopped")),
        }
    }
}

impl TlsListener {
    /// Starts accepting on `listener`.
    pub fn new(
        listener: TcpListener,
        config: impl Fn() -> Option<Arc<rustls::ServerConfig>> + Send + 'static,
    ) -> Self {
        Self(accept_tls(listener, config))
    }
}

fn accept_tls(
    listener: TcpListener,
    config: impl Fn() -> Option<Arc<rustls::ServerConfig>> + Send + 'static,
) -> tokio::sync::mpsc::Receiver<std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsConn>>(64);
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                // Nobody serves these connections any more.
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let Some(config) = config() else {
                tracing::debug!("TLS not ready; connection dropped");
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let peer = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| SpiffeId::uri_of(c));
                        let _ = tx
                            .send(Ok(TlsConn {
                                stream,
                                peer: PeerId(peer),
                            }))
                            .await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// A gRPC channel to `addr` (`host:port`), through TLS with `config` when
/// given, else in plaintext; it connects on first use and reconnects as
/// tonic does. Nagle's algorithm is off either way.
pub fn channel(addr: &str, config: Option<Arc<rustls::ClientConfig>>) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("invalid address {addr}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(4 << 20));
    let Some(config) = config else {
        return Ok(endpoint.tcp_nodelay(true).connect_lazy());
    };
    let addr = addr.to_string();
    let connector = tower::service_fn(move |_: Uri| {
        let (addr, config) = (addr.clone(), config.clone());
        async move {
            crate::peer::dial(&addr, Some(config))
                .await
                .map(hyper_util::rt::TokioIo::new)
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}
