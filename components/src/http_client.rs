//! An HTTP client to one server. Plain HTTP goes on a pool of HTTP/1.1
//! keep-alive connections of daprd's own ([`Pool`]): one idle list behind
//! one lock, each connection driven by its own task. hyper-util's pooled
//! client did the same job with about a third more instructions per request
//! (BENCHMARKS.md); it still serves TLS (with ALPN) and HTTP/2 without TLS.
//! daprd calls HTTP apps with it, and `bindings.http` its server.

use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header::HOST};
use http_body_util::Full;
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{self, connect::HttpConnector},
    rt::TokioIo,
};

/// How requests reach one server.
pub enum HttpClient {
    /// Plain HTTP/1.1 on pooled keep-alive connections.
    Pool(Pool),
    /// TLS, or HTTP/2 without TLS.
    Hyper(Box<legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>>),
}

impl HttpClient {
    /// Sends `req` (its URI absolute, as `http://host:port/path`).
    pub async fn request(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String> {
        match self {
            Self::Pool(p) => p.request(req).await,
            Self::Hyper(c) => c.request(req).await.map_err(|e| crate::error_chain(&e)),
        }
    }
}

/// Idle connections kept per `host:port`.
const MAX_IDLE: usize = 256;

/// Keep-alive HTTP/1.1 connections to one `host:port`.
pub struct Pool {
    addr: String,
    /// `addr` as the `Host` of each request, made once.
    host: Option<HeaderValue>,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Pool {
    /// A pool dialling `addr` (`host:port`); nothing is dialled until the
    /// first request.
    pub fn new(addr: String) -> Self {
        Self {
            host: HeaderValue::from_str(&addr).ok(),
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The same pool sending `host` as each request's `Host` (a URL's
    /// authority without its default port, say).
    pub fn with_host(mut self, host: HeaderValue) -> Self {
        self.host = Some(host);
        self
    }

    /// A connection ready for a request; busy ones stay, closed ones go.
    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|s| !s.is_closed());
        let i = idle.iter().position(SendRequest::is_ready)?;
        Some(idle.swap_remove(i))
    }

    fn put_back(&self, sender: SendRequest<Full<Bytes>>) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(sender);
        }
    }

    async fn dial(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(self.addr.as_str()).await?;
            tcp.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "pooled connection closed");
                }
            });
            Ok::<_, std::io::Error>(sender)
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), connect)
            .await
            .map_err(|_| format!("connecting to {} timed out", self.addr))?
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))
    }

    /// Sends `req` (its URI absolute, as `http://host:port/path`).
    pub async fn request(&self, mut req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String> {
        origin_form(&mut req, self.host.as_ref())?;
        // A kept connection the app has closed meanwhile gives the request
        // back unsent; it then goes on another.
        while let Some(mut sender) = self.take_idle() {
            match sender.try_send_request(req).await {
                Ok(res) => {
                    self.put_back(sender);
                    return Ok(res);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(crate::error_chain(&e.into_error())),
                },
            }
        }
        let mut sender = self.dial().await?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| crate::error_chain(&e))?;
        self.put_back(sender);
        Ok(res)
    }
}

/// HTTP/1.1 sends the path and query, with the authority in `Host` (the
/// pool's own, else the URI's).
fn origin_form(req: &mut Request<Full<Bytes>>, host: Option<&HeaderValue>) -> Result<(), String> {
    if !req.headers().contains_key(HOST) {
        let host = match (host, req.uri().authority()) {
            (Some(h), _) => Some(h.clone()),
            (None, Some(a)) => {
                Some(HeaderValue::from_str(a.as_str()).map_err(|e| format!("invalid host: {e}"))?)
            }
            (None, None) => None,
        };
        if let Some(h) = host {
            req.headers_mut().insert(HOST, h);
        }
    }
    if req.uri().scheme().is_none() && req.uri().authority().is_none() {
        return Ok(());
    }
    // The path is already parsed: keep it, drop scheme and authority.
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = None;
    parts.authority = None;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = Uri::from_parts(parts).map_err(|e| format!("invalid request path: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An app that answers `ok` to each request, closing each connection
    /// after `per_conn` of them; the count of connections it accepted.
    async fn app(per_conn: usize) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    for _ in 0..per_conn {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if s.read(&mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn get(pool: &Pool, addr: &str) -> String {
        let req = Request::get(format!("http://{addr}/x"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let res = pool.request(req).await.expect("answered");
        let body = res.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn connections_are_kept_and_one_the_app_closed_is_replaced() {
        let (addr, accepted) = app(usize::MAX).await;
        let pool = Pool::new(addr.clone());
        for _ in 0..10 {
            assert_eq!(get(&pool, &addr).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one keep-alive connection");

        let (addr, accepted) = app(1).await;
        let pool = Pool::new(addr.clone());
        for _ in 0..3 {
            assert_eq!(get(&pool, &addr).await, "ok");
            // Let the app's close arrive before the next request.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn requests_go_out_in_origin_form_with_a_host() {
        let mut req = Request::post("http://127.0.0.1:3000/orders/new?x=1")
            .body(Full::new(Bytes::new()))
            .expect("request");
        origin_form(&mut req, None).expect("origin form");
        assert_eq!(req.uri().to_string(), "/orders/new?x=1");
        assert_eq!(req.headers()[HOST], "127.0.0.1:3000");
        let mut req = Request::get("http://127.0.0.1:3000")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let pool_host = HeaderValue::from_static("[::1]:3000");
        origin_form(&mut req, Some(&pool_host)).expect("origin form");
        assert_eq!(req.uri().to_string(), "/");
        assert_eq!(req.headers()[HOST], "[::1]:3000");
    }
}
