//! One HTTP/1.1 keep-alive connection, driven by the task that makes the
//! request: the request goes out in one write and the answer is read whole
//! into the connection's buffer. No connection task and no channel stand
//! between the caller and the socket, so an exchange wakes nothing but the
//! caller; the answer's body is a slice of the buffer it was read into.
//! [`pool`] keeps such connections to one server.

mod head;
pub mod pool;
pub mod serve;

use std::{
    pin::Pin,
    task::{Context, Poll, Waker},
};

use bytes::{Buf, Bytes, BytesMut};
use head::{BadField, BadLength, content_length, keeps_alive, sliced, spans, write_fields};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, request, response};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};

/// Largest response head read; a larger one is refused.
const MAX_HEAD: usize = 64 << 10;
/// Most interim (1xx) answers before the real one.
const MAX_INTERIM: usize = 8;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// A body at most this long goes out in the same buffer as the head.
const JOINED_BODY: usize = 64 << 10;
/// The largest write buffer a connection keeps between requests.
const KEPT_OUT: usize = 16 << 10;

/// What a body over the caller's limit is called.
pub const TOO_LARGE: &str = "the answer is over the size limit";

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// The answer's body is over the caller's limit.
    TooLarge,
    /// The request could not be written: the server never saw it whole.
    NotSent(std::io::Error),
    /// The request went out and the connection ended before any byte of
    /// the answer: on a kept connection the server may have closed it
    /// meanwhile, or failed while handling the request.
    Unanswered(std::io::Error),
    /// Anything else: a broken or malformed answer.
    Broken(String),
    /// No connection to the server could be made.
    Unreachable(String),
}

impl Failure {
    pub fn message(&self) -> String {
        match self {
            Self::TooLarge => TOO_LARGE.to_string(),
            Self::NotSent(e) => format!("the request could not be sent: {e}"),
            Self::Unanswered(e) => format!("the connection closed before an answer: {e}"),
            Self::Broken(m) | Self::Unreachable(m) => m.clone(),
        }
    }
}

/// A connection, what has been read from it but not used, and the buffer
/// requests are written from (kept, so a request allocates nothing).
pub struct Conn<S = TcpStream> {
    io: S,
    buf: BytesMut,
    out: Vec<u8>,
}

/// The trailer fields of a chunked answer, kept in its extensions.
#[derive(Clone, Debug)]
pub struct Trailers(pub HeaderMap);

/// A stream a kept connection is checked on before its next request.
pub trait Probe {
    /// Whether the server has neither closed the stream nor sent anything
    /// unasked. Costs no system call unless the socket was seen readable.
    fn quiet(&mut self) -> bool;
}

impl Probe for TcpStream {
    fn quiet(&mut self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// [`Probe::quiet`] for any stream: one read without waiting (over TLS it
/// takes in any record the server sent meanwhile, such as a session ticket
/// or a close).
pub fn nothing_to_read<S: AsyncRead + Unpin>(io: &mut S) -> bool {
    let mut probe = [0u8; 1];
    let mut probe = ReadBuf::new(&mut probe);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(Pin::new(io).poll_read(&mut cx, &mut probe), Poll::Pending)
}

impl<S: Probe> Conn<S> {
    /// Whether a kept connection can take a request: nothing unread is
    /// left and the stream is [quiet](Probe::quiet).
    pub fn reusable(&mut self) -> bool {
        self.buf.is_empty() && self.io.quiet()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// A connection over `io`, which nothing has been sent or read on.
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(8 << 10),
            out: Vec::new(),
        }
    }

    /// Sends the request and reads the answer; the body at most `limit`
    /// bytes. Also whether the connection may be kept.
    pub async fn exchange(
        &mut self,
        head: &request::Parts,
        body: &Bytes,
        limit: usize,
    ) -> Result<(response::Parts, Bytes, bool), Failure> {
        self.out.clear();
        encode_head(&mut self.out, head, body.len());
        if body.len() <= JOINED_BODY {
            self.out.extend_from_slice(body);
            self.io.write_all(&self.out).await.map_err(Failure::NotSent)?;
        } else {
            self.io.write_all(&self.out).await.map_err(Failure::NotSent)?;
            self.io.write_all(body).await.map_err(Failure::NotSent)?;
        }
        // A large request's buffer is not kept by an idle connection.
        if self.out.capacity() > KEPT_OUT {
            self.out = Vec::new();
        }
        let (parts, body, keep) = self.answer(&head.method, limit).await?;
        // Bytes nobody asked for make the connection's state unknown.
        Ok((parts, body, keep && self.buf.is_empty()))
    }

    /// The answer to a request of `method`, its body at most `limit` bytes,
    /// and whether the server lets the connection be kept.
    async fn answer(
        &mut self,
        method: &Method,
        limit: usize,
    ) -> Result<(response::Parts, Bytes, bool), Failure> {
        let mut interim = 0;
        let (parts, framing, mut keep) = loop {
            let (parts, framing, keep) = self.read_head(method).await?;
            // An interim answer (100 Continue, 103 Early Hints) precedes the real one.
            if parts.status.is_informational() && parts.status != StatusCode::SWITCHING_PROTOCOLS {
                interim += 1;
                if interim > MAX_INTERIM {
                    return Err(Failure::Broken(format!(
                        "more than {MAX_INTERIM} interim answers"
                    )));
                }
                continue;
            }
            break (parts, framing, keep);
        };
        let mut parts = parts;
        let body = match framing {
            Framing::Empty => Bytes::new(),
            Framing::Length(n) => {
                if n > limit as u64 {
                    return Err(Failure::TooLarge);
                }
                self.read_exact(n as usize).await?
            }
            Framing::Chunked => {
                let (body, trailers) = self.read_chunked(limit).await?;
                if !trailers.is_empty() {
                    parts.extensions.insert(Trailers(trailers));
                }
                body
            }
            Framing::UntilClose => {
                keep = false;
                self.read_to_close(limit).await?
            }
        };
        Ok((parts, body, keep))
    }

    /// The next answer on the connection, whatever was asked.
    #[cfg(test)]
    pub(crate) async fn read_answer(&mut self) -> (response::Parts, Bytes) {
        let (parts, body, _) = self.answer(&Method::POST, 1 << 20).await.expect("an answer");
        (parts, body)
    }

    /// Reads more into the buffer: how many bytes came (0 at its end).
    async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 << 10);
        }
        self.io.read_buf(&mut self.buf).await
    }

    /// Reads more into the buffer; an error at its end.
    async fn fill(&mut self) -> Result<(), Failure> {
        match self.read_more().await.map_err(read_failed)? {
            0 => Err(Failure::Broken(
                "the server closed the connection mid-answer".into(),
            )),
            _ => Ok(()),
        }
    }

    async fn read_head(&mut self, method: &Method) -> Result<(response::Parts, Framing, bool), Failure> {
        let mut answered = !self.buf.is_empty();
        loop {
            if let Some(head) = parse_head(&mut self.buf, method)? {
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Failure::Broken(format!(
                    "the answer's head is over {MAX_HEAD} bytes"
                )));
            }
            if answered {
                self.fill().await?;
                continue;
            }
            // Nothing of the answer yet: a failure here may be a kept
            // connection the server had closed.
            match self.read_more().await {
                Ok(0) => return Err(Failure::Unanswered(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => answered = true,
                Err(e) => return Err(Failure::Unanswered(e)),
            }
        }
    }

    async fn read_exact(&mut self, n: usize) -> Result<Bytes, Failure> {
        if self.buf.len() < n {
            self.buf.reserve(n - self.buf.len());
        }
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.split_to(n).freeze())
    }

    async fn read_line(&mut self) -> Result<BytesMut, Failure> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(i);
                self.buf.advance(2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Failure::Broken("a chunk's size line is too long".into()));
            }
            self.fill().await?;
        }
    }

    /// A chunked body and its trailer fields.
    async fn read_chunked(&mut self, limit: usize) -> Result<(Bytes, HeaderMap), Failure> {
        let mut body = BytesMut::new();
        loop {
            let line = self.read_line().await?;
            let size = chunk_size(&line)?;
            if size == 0 {
                // Trailer fields, up to the empty line.
                let mut block = BytesMut::new();
                loop {
                    let line = self.read_line().await?;
                    if line.is_empty() {
                        return Ok((body.freeze(), parse_trailers(block)?));
                    }
                    if block.len() + line.len() + 2 > MAX_HEAD {
                        return Err(Failure::Broken(format!(
                            "the answer's trailers are over {MAX_HEAD} bytes"
                        )));
                    }
                    block.extend_from_slice(&line);
                    block.extend_from_slice(b"\r\n");
                }
            }
            if size > (limit - body.len()) as u64 {
                return Err(Failure::TooLarge);
            }
            let chunk = self.read_exact(size as usize).await?;
            body.extend_from_slice(&chunk);
            if !self.read_line().await?.is_empty() {
                return Err(Failure::Broken("a chunk does not end where its size says".into()));
            }
        }
    }

    async fn read_to_close(&mut self, limit: usize) -> Result<Bytes, Failure> {
        loop {
            if self.buf.len() > limit {
                return Err(Failure::TooLarge);
            }
            if self.read_more().await.map_err(read_failed)? == 0 {
                if self.buf.len() > limit {
                    return Err(Failure::TooLarge);
                }
                return Ok(self.buf.split().freeze());
            }
        }
    }
}

fn read_failed(e: std::io::Error) -> Failure {
    Failure::Broken(format!("reading the answer failed: {e}"))
}

/// How the answer's body is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Methods whose requests carry a `content-length` even when empty.
fn sends_length(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE | Method::CONNECT
    )
}

/// The request line and header fields, in origin form, with the body's
/// length; the caller's own framing fields are replaced by it.
fn encode_head(out: &mut Vec<u8>, head: &request::Parts, body_len: usize) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(
        out,
        &head.headers,
        &[http::header::CONTENT_LENGTH, http::header::TRANSFER_ENCODING],
    );
    if body_len > 0 || sends_length(&head.method) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

type Head = (response::Parts, Framing, bool);

/// The answer's head, when `buf` holds all of it, taken off the buffer:
/// its parts, the body's framing and whether the connection may be kept.
/// Header values are slices of the head's bytes, not copies.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Failure> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Left uninitialised: httparse writes the fields it finds.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::Broken(format!("the answer is not HTTP/1.1: {e}"))),
    };
    let status = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| Failure::Broken("the answer has no valid status".into()))?;
    let version = if res.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let bad_field = |e| {
        Failure::Broken(match e {
            BadField::Name(name) => format!("invalid header name {name:?}"),
            BadField::Value(name) => format!("invalid value of header {name}"),
        })
    };
    let spans = spans(buf.as_ptr(), res.headers).map_err(bad_field)?;
    let head = buf.split_to(len).freeze();
    let headers = sliced(&head, spans).map_err(bad_field)?;
    let mut keep = keeps_alive(&headers, version);
    let framing = if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if let Some(te) = headers.get(http::header::TRANSFER_ENCODING) {
        let last = te.as_bytes().rsplit(|b| *b == b',').next().unwrap_or_default();
        if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match content_length(&headers) {
            Ok(None) => Framing::UntilClose,
            Ok(Some(n)) => Framing::Length(n),
            Err(BadLength::Invalid(v)) => {
                return Err(Failure::Broken(format!("invalid content-length {v:?}")));
            }
            Err(BadLength::Conflicting) => {
                return Err(Failure::Broken(
                    "the answer has conflicting content-length values".into(),
                ));
            }
        }
    };
    if framing == Framing::UntilClose {
        keep = false;
    }
    let mut parts = response::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some((parts, framing, keep)))
}

/// Trailer field lines, each ended by CRLF.
fn parse_trailers(mut block: BytesMut) -> Result<HeaderMap, Failure> {
    let mut trailers = HeaderMap::new();
    if block.is_empty() {
        return Ok(trailers);
    }
    block.extend_from_slice(b"\r\n");
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(&block, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            for f in fields {
                let name = HeaderName::from_bytes(f.name.as_bytes());
                let value = HeaderValue::from_bytes(f.value);
                match (name, value) {
                    (Ok(name), Ok(value)) => {
                        trailers.append(name, value);
                    }
                    _ => return Err(Failure::Broken(format!("invalid trailer field {:?}", f.name))),
                }
            }
            Ok(trailers)
        }
        Ok(httparse::Status::Partial) | Err(_) => {
            Err(Failure::Broken("the answer's trailers are malformed".into()))
        }
    }
}

/// A chunk's size, from its line (hex digits, then any extensions).
fn chunk_size(line: &[u8]) -> Result<u64, Failure> {
    let digits = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    std::str::from_utf8(digits)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 15)
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| {
            Failure::Broken(format!(
                "invalid chunk size {:?}",
                String::from_utf8_lossy(&line[..line.len().min(40)])
            ))
        })
}

#[cfg(test)]
pub(crate) mod tests;
