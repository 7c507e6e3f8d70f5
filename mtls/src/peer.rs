//! Unary gRPC calls to one peer over one HTTP/2 connection, sent so that a
//! call costs one write: the request's HEADERS and its one DATA frame (which
//! carries END_STREAM) are queued together before the connection task runs.
//! hyper's client waits for send capacity before queueing the body, and
//! tonic ends a body with an empty DATA frame of its own, so through them
//! the same call takes three writes, and on loopback each write wakes the
//! peer once more.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::HeaderValue;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::{Code, Status};

use crate::h1::{Failure, Trailers, pool::Pool};

/// How often an idle connection is checked, and how long the answer may take.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A peer's address and the connection to it, opened on first use and
/// opened again after it fails.
pub struct Peer {
    addr: String,
    /// `addr` as a URI authority, parsed once.
    authority: Option<http::uri::Authority>,
    tls: Option<Arc<rustls::ClientConfig>>,
    sender: Mutex<Option<SendRequest<Bytes>>>,
    connecting: tokio::sync::Mutex<()>,
    /// For a sidecar, the connections unary calls take.
    h1: Option<Pool>,
}

/// Dials `addr` (`host:port`) with Nagle's algorithm off, then TLS with
/// `config` when given.
pub async fn dial(addr: &str, config: Option<Arc<rustls::ClientConfig>>) -> std::io::Result<Box<dyn Io>> {
    Ok(match connect(addr, config).await? {
        Stream::Plain(tcp) => Box::new(tcp),
        Stream::Tls(tls) => tls,
    })
}

/// A dialled connection, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// As [`dial`], without boxing a plain connection.
pub async fn connect(addr: &str, config: Option<Arc<rustls::ClientConfig>>) -> std::io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let Some(config) = config else {
        return Ok(Stream::Plain(tcp));
    };
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_string();
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(Stream::Tls(Box::new(tls)))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl crate::h1::Probe for Stream {
    fn quiet(&mut self) -> bool {
        match self {
            Self::Plain(s) => s.quiet(),
            Self::Tls(s) => crate::h1::nothing_to_read(s),
        }
    }
}

/// A connection's byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The status a failed HTTP/2 exchange means to a gRPC caller, as gRPC's
/// own clients map it.
pub(crate) fn status_of(e: &h2::Error) -> Status {
    if let Some(reason) = e.reason() {
        let code = match reason {
            h2::Reason::REFUSED_STREAM => Code::Unavailable,
            h2::Reason::CANCEL => Code::Cancelled,
            h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
            h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
            _ if e.is_go_away() => Code::Unavailable,
            _ => Code::Internal,
        };
        return Status::new(code, format!("the peer's HTTP/2 stream failed: {e}"));
    }
    Status::unavailable(format!("connection to the peer failed: {e}"))
}

impl Peer {
    /// A peer at `addr`, reached in plaintext or through TLS with `tls`.
    pub fn new(addr: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self {
            addr: addr.to_string(),
            authority: addr.parse().ok(),
            tls,
            sender: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            h1: None,
        }
    }

    /// Another daprd at `addr`: unary calls go over HTTP/1.1, the rest over
    /// HTTP/2 as to any peer.
    pub fn sidecar(addr: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let h1_tls = tls.as_deref().map(|config| {
            let mut config = config.clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        });
        Self {
            h1: Some(Pool::new(addr.to_string(), h1_tls)),
            ..Self::new(addr, tls)
        }
    }

    fn cached(&self) -> Option<SendRequest<Bytes>> {
        self.sender.lock().ok().and_then(|s| s.clone())
    }

    pub(crate) fn forget(&self) {
        if let Ok(mut s) = self.sender.lock() {
            *s = None;
        }
    }

    pub(crate) async fn sender(&self) -> Result<SendRequest<Bytes>, Status> {
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        // One dial at a time; the others use its connection.
        let _one = self.connecting.lock().await;
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        let unavailable =
            |e: std::io::Error| Status::unavailable(format!("cannot connect to {}: {e}", self.addr));
        let connect = async {
            let io = dial(&self.addr, self.tls.clone()).await?;
            let (send, conn) = h2::client::Builder::new()
                .initial_window_size(1 << 20)
                .initial_connection_window_size(4 << 20)
                .max_frame_size(crate::MAX_FRAME)
                .handshake::<_, Bytes>(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(drive(conn));
            Ok(send)
        };
        let send = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| Status::unavailable(format!("connecting to {} timed out", self.addr)))?
            .map_err(unavailable)?;
        if let Ok(mut s) = self.sender.lock() {
            *s = Some(send.clone());
        }
        Ok(send)
    }

    /// Calls `path` with `message` and request `metadata`; returns the
    /// reply's headers and message, refusing a reply over `limit` bytes.
    pub async fn unary<R: prost::Message + Default>(
        &self,
        path: &http::uri::PathAndQuery,
        metadata: http::HeaderMap,
        message: &impl prost::Message,
        limit: usize,
    ) -> Result<(http::HeaderMap, R), Status> {
        let mut frame = BytesMut::with_capacity(5 + message.encoded_len());
        frame.put_bytes(0, 5);
        message.encode_raw(&mut frame);
        let len = u32::try_from(frame.len() - 5)
            .map_err(|_| Status::resource_exhausted("the message is over 4 GiB"))?;
        frame[1..5].copy_from_slice(&len.to_be_bytes());
        if let Some(pool) = &self.h1 {
            let (headers, reply) = over_h1(pool, path, metadata, frame.freeze(), limit).await?;
            let reply = R::decode(reply)
                .map_err(|e| Status::internal(format!("the reply to {path} does not decode: {e}")))?;
            return Ok((headers, reply));
        }
        let mut req = http::Request::new(());
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri(path.clone())?;
        *req.headers_mut() = metadata;
        grpc_request(req.headers_mut());
        let sender = self.sender().await?;
        let res = self.exchange(sender, req, frame.freeze(), limit).await;
        if let Err(s) = &res
            && s.code() == Code::Unavailable
        {
            self.forget();
        }
        let (headers, reply) = res?;
        let reply = R::decode(reply)
            .map_err(|e| Status::internal(format!("the reply to {path} does not decode: {e}")))?;
        Ok((headers, reply))
    }

    /// `path` on this peer, as an HTTP/2 request names it (the path is
    /// parsed already, so it is not parsed again).
    pub(crate) fn uri(&self, path: http::uri::PathAndQuery) -> Result<http::Uri, Status> {
        let Some(authority) = self.authority.clone() else {
            return Err(Status::internal(format!(
                "invalid request for {path}: {} is not an address",
                self.addr
            )));
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(authority);
        parts.path_and_query = Some(path);
        http::Uri::from_parts(parts).map_err(|e| Status::internal(format!("invalid request: {e}")))
    }

    async fn exchange(
        &self,
        sender: SendRequest<Bytes>,
        req: http::Request<()>,
        message: Bytes,
        limit: usize,
    ) -> Result<(http::HeaderMap, Bytes), Status> {
        let fail = |e: h2::Error| status_of(&e);
        let mut sender = sender.ready().await.map_err(fail)?;
        let (response, mut body_tx) = sender.send_request(req, false).map_err(fail)?;
        // Queued with the HEADERS, without waiting for capacity: h2 sends it
        // as soon as the stream opens, in the same write.
        body_tx.send_data(message, true).map_err(fail)?;
        let res = response.await.map_err(fail)?;
        let (parts, mut body) = res.into_parts();
        refused(&parts)?;
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(fail)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if data.len() + chunk.len() > limit.saturating_add(5) {
                return Err(Status::resource_exhausted(format!(
                    "the reply is over the limit of {limit} bytes"
                )));
            }
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(fail)?.unwrap_or_default();
        if !trailers.contains_key(GRPC_STATUS) {
            return Err(Status::internal("the peer's reply has no grpc-status"));
        }
        if let Some(status) = failure(&trailers) {
            return Err(status);
        }
        Ok((parts.headers, message_of(data.freeze(), "the peer's reply")?))
    }
}

/// A unary call over one of `pool`'s HTTP/1.1 connections: the reply's
/// headers and message.
async fn over_h1(
    pool: &Pool,
    path: &http::uri::PathAndQuery,
    metadata: http::HeaderMap,
    frame: Bytes,
    limit: usize,
) -> Result<(http::HeaderMap, Bytes), Status> {
    let mut req = http::Request::new(frame);
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from(path.clone());
    *req.headers_mut() = metadata;
    grpc_request(req.headers_mut());
    let (parts, body) = pool
        .request(req, limit.saturating_add(5))
        .await
        .map_err(|f| match f {
            Failure::TooLarge => {
                Status::resource_exhausted(format!("the reply is over the limit of {limit} bytes"))
            }
            f => Status::unavailable(format!("the call to the peer failed: {}", f.message())),
        })?;
    refused(&parts)?;
    if !parts.headers.contains_key(GRPC_STATUS) {
        let trailers = parts.extensions.get::<Trailers>().map(|t| &t.0);
        match trailers {
            Some(t) if t.contains_key(GRPC_STATUS) => {
                if let Some(status) = failure(t) {
                    return Err(status);
                }
            }
            _ => return Err(Status::internal("the peer's reply has no grpc-status")),
        }
    }
    Ok((parts.headers, message_of(body, "the peer's reply")?))
}

const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The failure a reply's head reports: a status in it (a trailers-only
/// answer), or an HTTP status other than 200.
fn refused(parts: &http::response::Parts) -> Result<(), Status> {
    if let Some(status) = failure(&parts.headers) {
        return Err(status);
    }
    if parts.status != http::StatusCode::OK {
        return Err(Status::unknown(format!(
            "the peer answered HTTP {} to a gRPC call",
            parts.status
        )));
    }
    Ok(())
}

/// Marks `h` as a gRPC request's.
fn grpc_request(h: &mut http::HeaderMap) {
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(http::header::TE, HeaderValue::from_static("trailers"));
}

/// The failure that `h` (headers or trailers) reports, if any. Most replies
/// succeed, and tonic's parsing of a status copies every other header too,
/// so a plain `0` is recognised first.
fn failure(h: &http::HeaderMap) -> Option<Status> {
    match h.get(GRPC_STATUS) {
        None => None,
        Some(v) if v.as_bytes() == b"0" => None,
        Some(_) => Status::from_header_map(h).filter(|s| s.code() != Code::Ok),
    }
}

/// The one uncompressed message of a unary call's body (`what` names the
/// body in errors: the request, or a reply).
pub fn message_of(mut data: Bytes, what: &str) -> Result<Bytes, Status> {
    if data.len() < 5 {
        return Err(Status::internal(format!("{what} has no message")));
    }
    if data[0] != 0 {
        return Err(Status::unimplemented(format!("{what} is compressed")));
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() != len + 5 {
        return Err(Status::internal(format!("{what} is not one whole message")));
    }
    Ok(data.split_off(5))
}

/// Runs a connection until it closes, pinging it when idle so a peer that
/// vanished without closing it is noticed.
async fn drive<T: AsyncRead + AsyncWrite + Unpin>(mut conn: h2::client::Connection<T, Bytes>) {
    let Some(mut ping) = conn.ping_pong() else {
        let _ = conn.await;
        return;
    };
    let keepalive = async move {
        loop {
            tokio::time::sleep(KEEPALIVE).await;
            match tokio::time::timeout(KEEPALIVE_TIMEOUT, ping.ping(h2::Ping::opaque())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return tracing::debug!(error = %e, "peer connection ping failed"),
                Err(_) => return tracing::debug!("peer connection did not answer a ping"),
            }
        }
    };
    tokio::select! {
        r = &mut conn => if let Err(e) = r {
            tracing::debug!(error = %e, "peer connection closed");
        },
        () = keepalive => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_status_other_than_ok_is_a_failure() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            failure(&h).map(|s| (s.code(), s.message().to_string()))
        };
        assert_eq!(with(&[]), None);
        assert_eq!(with(&[("grpc-status", "0"), ("grpc-message", "fine")]), None);
        assert_eq!(
            with(&[("grpc-status", "5"), ("grpc-message", "no%20such")]),
            Some((Code::NotFound, "no such".to_string()))
        );
        assert_eq!(with(&[("grpc-status", "x")]).map(|f| f.0), Some(Code::Unknown));
    }

    #[test]
    fn a_reply_is_one_whole_uncompressed_message() {
        let ok = Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1]);
        assert_eq!(message_of(ok, "reply").expect("ok").as_ref(), &[8, 1]);
        assert_eq!(
            message_of(Bytes::from_static(&[1, 0, 0, 0, 0]), "reply")
                .expect_err("gzip")
                .code(),
            Code::Unimplemented
        );
        for bad in [&[0u8, 0, 0][..], &[0, 0, 0, 0, 3, 1], &[0, 0, 0, 0, 0, 1]] {
            assert_eq!(
                message_of(Bytes::copy_from_slice(bad), "reply")
                    .expect_err("bad")
                    .code(),
                Code::Internal
            );
        }
    }

    /// A server that reads each request (head and `content-length` body)
    /// and writes the next of `answers`; also what the first request was.
    async fn answering(answers: Vec<&'static str>) -> (String, tokio::sync::oneshot::Receiver<String>) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (seen, heard) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut seen = Some(seen);
            for answer in answers {
                let Some(text) = crate::h1::tests::read_request(&mut s).await else {
                    return;
                };
                if let Some(tx) = seen.take() {
                    let _ = tx.send(text);
                }
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        (addr, heard)
    }

    #[tokio::test]
    async fn a_sidecar_is_called_over_http1_with_the_status_in_the_head_or_the_trailers() {
        // `8` and `1` framed: a message of one varint field.
        let ok_head = "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: 0\r\n\
                       content-length: 7\r\n\r\n\x00\x00\x00\x00\x02\x08\x01";
        let ok_trailers = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                           7\r\n\x00\x00\x00\x00\x02\x08\x01\r\n0\r\ngrpc-status: 0\r\n\r\n";
        let failed = "HTTP/1.1 200 OK\r\ngrpc-status: 5\r\ngrpc-message: gone\r\ncontent-length: 0\r\n\r\n";
        let failed_late = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                           0\r\ngrpc-status: 7\r\n\r\n";
        let silent = "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n\x00\x00\x00\x00\x02\x08\x01";
        let (addr, heard) = answering(vec![ok_head, ok_trailers, failed, failed_late, silent]).await;
        let peer = Peer::sidecar(&addr, None);
        let path = http::uri::PathAndQuery::from_static("/p.S/M");
        let call = || peer.unary::<u32>(&path, http::HeaderMap::new(), &1u32, 1 << 20);
        assert_eq!(call().await.expect("status in the head").1, 1);
        let head = heard.await.expect("request");
        assert!(head.starts_with("POST /p.S/M HTTP/1.1\r\n"), "{head}");
        for field in [
            "content-type: application/grpc",
            "te: trailers",
            &format!("host: {addr}"),
        ] {
            assert!(head.contains(field), "{field} in {head}");
        }
        assert_eq!(call().await.expect("status in the trailers").1, 1);
        let err = call().await.expect_err("not found");
        assert_eq!((err.code(), err.message()), (Code::NotFound, "gone"));
        assert_eq!(call().await.expect_err("denied").code(), Code::PermissionDenied);
        assert_eq!(call().await.expect_err("no status").code(), Code::Internal);
        // The server is gone: the peer is unavailable.
        assert_eq!(call().await.expect_err("closed").code(), Code::Unavailable);
    }
}
