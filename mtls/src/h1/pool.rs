//! Keep-alive HTTP/1.1 connections to one server, plain or TLS: one idle
//! list behind one lock, each connection used by one request at a time and
//! driven by the task that makes it.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header::HOST};

use super::{Conn, Failure};
use crate::peer::{Stream, connect};

/// An answer: its head and its whole body.
pub type Answer = (http::response::Parts, Bytes);

/// Idle connections kept per `host:port`.
const MAX_IDLE: usize = 256;

/// Keep-alive HTTP/1.1 connections to one `host:port`.
pub struct Pool {
    addr: String,
    /// `addr` as the `Host` of each request, made once.
    host: Option<HeaderValue>,
    /// TLS, when the server speaks it; its ALPN should offer `http/1.1`.
    tls: Option<Arc<rustls::ClientConfig>>,
    idle: Mutex<Vec<Conn<Stream>>>,
}

/// Whether a request that may have reached the server can be sent again:
/// only when repeating it changes nothing (RFC 9110, 9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl Pool {
    /// A pool dialling `addr` (`host:port`); nothing is dialled until the
    /// first request.
    pub fn new(addr: String, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self {
            host: HeaderValue::from_str(&addr).ok(),
            addr,
            tls,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The same pool sending `host` as each request's `Host` (a URL's
    /// authority without its default port, say).
    pub fn with_host(mut self, host: HeaderValue) -> Self {
        self.host = Some(host);
        self
    }

    /// The most recently used kept connection that the server has not
    /// closed; closed ones go.
    fn take_idle(&self) -> Option<Conn<Stream>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut conn) = idle.pop() {
            if conn.reusable() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, conn: Conn<Stream>) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }

    async fn dial(&self) -> Result<Conn<Stream>, Failure> {
        let connect = connect(&self.addr, self.tls.clone());
        tokio::time::timeout(std::time::Duration::from_secs(5), connect)
            .await
            .map_err(|_| Failure::Unreachable(format!("connecting to {} timed out", self.addr)))?
            .map(Conn::new)
            .map_err(|e| Failure::Unreachable(format!("cannot connect to {}: {e}", self.addr)))
    }

    /// Sends `req` (its URI absolute, as `http://host:port/path`) and reads
    /// the answer, its body at most `limit` bytes.
    pub async fn request(&self, req: Request<Bytes>, limit: usize) -> Result<Answer, Failure> {
        let (mut head, body) = req.into_parts();
        origin_form(&mut head, self.host.as_ref())?;
        // A kept connection the server closed just before the request was
        // sent: the request goes on another.
        while let Some(mut conn) = self.take_idle() {
            match conn.exchange(&head, &body, limit).await {
                Ok((parts, body, keep)) => {
                    if keep {
                        self.put_back(conn);
                    }
                    return Ok((parts, body));
                }
                Err(Failure::NotSent(_)) => {}
                Err(Failure::Unanswered(_)) if idempotent(&head.method) => {}
                Err(e) => return Err(e),
            }
        }
        let mut conn = self.dial().await?;
        let (parts, body, keep) = conn.exchange(&head, &body, limit).await?;
        if keep {
            self.put_back(conn);
        }
        Ok((parts, body))
    }
}

/// HTTP/1.1 sends the path and query, with the authority in `Host` (the
/// pool's own, else the URI's).
fn origin_form(head: &mut http::request::Parts, host: Option<&HeaderValue>) -> Result<(), Failure> {
    if !head.headers.contains_key(HOST) {
        let host = match (host, head.uri.authority()) {
            (Some(h), _) => Some(h.clone()),
            (None, Some(a)) => Some(
                HeaderValue::from_str(a.as_str())
                    .map_err(|e| Failure::NotSent(std::io::Error::other(format!("invalid host: {e}"))))?,
            ),
            (None, None) => None,
        };
        if let Some(h) = host {
            head.headers.insert(HOST, h);
        }
    }
    if head.uri.scheme().is_none() && head.uri.authority().is_none() {
        return Ok(());
    }
    // The path is already parsed: keep it, drop scheme and authority.
    let mut parts = std::mem::take(&mut head.uri).into_parts();
    parts.scheme = None;
    parts.authority = None;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    head.uri = Uri::from_parts(parts)
        .map_err(|e| Failure::NotSent(std::io::Error::other(format!("invalid request path: {e}"))))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// An app that answers `ok` to each request, closing each connection
    /// after `per_conn` of them; the count of connections it accepted.
    async fn app(per_conn: usize) -> (String, Arc<AtomicUsize>) {
        let (addr, accepted, _) = app_swallowing(per_conn, false).await;
        (addr, accepted)
    }

    /// The same, and with `swallow` each connection reads one more request
    /// and closes without answering it; also the count of requests read.
    async fn app_swallowing(per_conn: usize, swallow: bool) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heard = Arc::new(AtomicUsize::new(0));
        let (count, requests) = (accepted.clone(), heard.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let requests = requests.clone();
                tokio::spawn(async move {
                    for i in 0..per_conn.saturating_add(usize::from(swallow)) {
                        if crate::h1::tests::read_request(&mut s).await.is_none() {
                            return;
                        }
                        requests.fetch_add(1, Ordering::SeqCst);
                        if i == per_conn {
                            return;
                        }
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted, heard)
    }

    async fn get(pool: &Pool, addr: &str) -> String {
        let req = Request::get(format!("http://{addr}/x"))
            .body(Bytes::new())
            .expect("request");
        let (_, body) = pool.request(req, 1 << 20).await.expect("answered");
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn connections_are_kept_and_one_the_app_closed_is_replaced() {
        let (addr, accepted) = app(usize::MAX).await;
        let pool = Pool::new(addr.clone(), None);
        for _ in 0..10 {
            assert_eq!(get(&pool, &addr).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one keep-alive connection");

        let (addr, accepted) = app(1).await;
        let pool = Pool::new(addr.clone(), None);
        for _ in 0..3 {
            assert_eq!(get(&pool, &addr).await, "ok");
            // Let the app's close arrive before the next request.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_request_the_app_may_have_seen_is_repeated_only_when_idempotent() {
        let (addr, accepted, heard) = app_swallowing(1, true).await;
        let pool = Pool::new(addr.clone(), None);
        assert_eq!(get(&pool, &addr).await, "ok");
        // The kept connection's next request is read, then dropped unanswered:
        // a GET goes again on a new connection.
        assert_eq!(get(&pool, &addr).await, "ok");
        assert_eq!(
            (accepted.load(Ordering::SeqCst), heard.load(Ordering::SeqCst)),
            (2, 3)
        );
        // A POST is not sent twice: its failure is the caller's to see.
        let post = Request::post(format!("http://{addr}/x"))
            .body(Bytes::from_static(b"{}"))
            .expect("request");
        let failed = pool.request(post, 1 << 20).await;
        assert!(matches!(failed, Err(Failure::Unanswered(_))), "{failed:?}");
        assert_eq!(
            (accepted.load(Ordering::SeqCst), heard.load(Ordering::SeqCst)),
            (2, 4)
        );
    }

    #[test]
    fn requests_go_out_in_origin_form_with_a_host() {
        let (mut req, ()) = Request::post("http://127.0.0.1:3000/orders/new?x=1")
            .body(())
            .expect("request")
            .into_parts();
        origin_form(&mut req, None).expect("origin form");
        assert_eq!(req.uri.to_string(), "/orders/new?x=1");
        assert_eq!(req.headers[HOST], "127.0.0.1:3000");
        let (mut req, ()) = Request::get("http://127.0.0.1:3000")
            .body(())
            .expect("request")
            .into_parts();
        let pool_host = HeaderValue::from_static("[::1]:3000");
        origin_form(&mut req, Some(&pool_host)).expect("origin form");
        assert_eq!(req.uri.to_string(), "/");
        assert_eq!(req.headers[HOST], "[::1]:3000");
    }
}
