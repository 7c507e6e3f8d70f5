//! Binding the sidecar's ports and serving HTTP on them with the limits of
//! [`daprs_mtls::http`].

use std::net::{IpAddr, SocketAddr};

use axum::response::IntoResponse;
use daprs_mtls::{coalesce::Coalesce, http::Limits};
use tokio::net::TcpListener;

use crate::{error::StartError, settings::Settings};

/// Where a public API listens.
pub enum ApiListener {
    Tcp(TcpListener),
    /// A Unix domain socket, removed from the folder when serving ends.
    Unix(tokio::net::UnixListener, SocketFile),
}

/// Removes a socket file when dropped.
pub struct SocketFile(std::path::PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
        what,
        addr: addr.to_string(),
        source,
    })
}

/// Listens on a Unix domain socket at `path`, replacing a stale socket file.
pub fn bind_unix(what: &'static str, path: &std::path::Path) -> Result<ApiListener, StartError> {
    let fail = |source: std::io::Error| StartError::Bind {
        what,
        addr: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(fail)?;
    Ok(ApiListener::Unix(listener, SocketFile(path.to_path_buf())))
}

/// Binds `port` on every address it can; an address that cannot be bound (say
/// `[::1]` where IPv6 is off) is logged and skipped, and only when none can be
/// bound does start-up fail, as Dapr does. Port 0 picks one free port, then
/// the same port on the other addresses.
pub async fn bind_all(what: &'static str, ips: &[IpAddr], port: u16) -> Result<Vec<TcpListener>, StartError> {
    let mut bound: Vec<TcpListener> = Vec::new();
    let mut first_error = None;
    for ip in ips {
        let port = match bound.first().map(TcpListener::local_addr) {
            Some(Ok(a)) => a.port(),
            _ => port,
        };
        match bind(what, SocketAddr::new(*ip, port)).await {
            Ok(l) => bound.push(l),
            Err(e) => {
                tracing::warn!("{e}; continuing without it");
                first_error.get_or_insert(e);
            }
        }
    }
    match (bound.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        _ => Ok(bound),
    }
}

/// The port the first listener got.
pub fn port_of(listeners: &[TcpListener]) -> Result<u16, StartError> {
    listeners
        .first()
        .ok_or_else(|| StartError::Io("no listener".into()))?
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| StartError::Io(e.to_string()))
}

/// The address other local sidecars dial to reach `listeners`: the first
/// bound address, or loopback where it is bound to all interfaces.
pub fn reachable_addr(listeners: &[TcpListener]) -> Option<SocketAddr> {
    let a = listeners.first()?.local_addr().ok()?;
    Some(match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
        _ => a,
    })
}

/// The limits of every HTTP port of the sidecar.
pub fn http_limits(settings: &Settings) -> Limits {
    Limits {
        max_head: settings.read_buffer_size,
        head_too_large: daprs_mtls::http::head_too_large,
        max_body: settings.max_body_size,
        too_large: body_too_large,
        timeouts: settings.http_timeouts,
        h2_windows: None,
        h1_whole: None,
    }
}

/// The largest request metadata the gRPC ports take: room for large tokens
/// and many entries, refused per call beyond that.
pub const GRPC_MAX_METADATA: usize = 64 << 10;

/// The limits of the gRPC ports: message sizes are checked per message, and
/// a stream may stay quiet for as long as its two ends like.
pub fn grpc_limits(settings: &Settings, h2_windows: Option<(u32, u32)>) -> Limits {
    Limits {
        max_head: GRPC_MAX_METADATA,
        head_too_large: metadata_too_large,
        max_body: usize::MAX,
        timeouts: daprs_mtls::http::Timeouts {
            body: None,
            ..settings.http_timeouts
        },
        h2_windows,
        ..http_limits(settings)
    }
}

/// 413 for a request that declares a body over `--max-body-size`.
pub fn body_too_large(limit: usize) -> axum::response::Response {
    crate::error::ApiError::body_too_large(limit).into_response()
}

/// `RESOURCE_EXHAUSTED` for a gRPC call whose metadata is over the limit.
fn metadata_too_large(limit: usize) -> axum::response::Response {
    tonic::Status::resource_exhausted(format!("request metadata may be at most {limit} bytes"))
        .into_http::<axum::body::Body>()
}

/// Serves `router` on `l` until `stop`, then lets in-flight requests finish.
/// With `coalesce`, each connection's small writes are held until a flush,
/// and a burst that opens a response waits one turn of the task, so a unary
/// gRPC reply leaves in one write (see [`Coalesce`]).
pub async fn serve_http<S: daprs_mtls::http::Api>(
    l: ApiListener,
    router: S,
    limits: Limits,
    stop: impl std::future::Future<Output = ()>,
    coalesce: bool,
) -> Result<(), String> {
    use daprs_mtls::http::serve;
    match (l, coalesce) {
        (ApiListener::Tcp(l), false) => serve(l, router, limits, stop).await,
        (ApiListener::Tcp(l), true) => serve(Coalesce(l), router, limits, stop).await,
        (ApiListener::Unix(l, _cleanup), false) => serve(l, router, limits, stop).await,
        (ApiListener::Unix(l, _cleanup), true) => serve(Coalesce(l), router, limits, stop).await,
    }
    Ok(())
}
