//! The connection against canned answers.

use super::*;

fn head(method: Method, uri: &str, headers: &[(&str, &str)]) -> request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

#[test]
fn requests_carry_their_length_and_not_the_callers_framing() {
    let mut out = Vec::new();
    let h = head(
        Method::POST,
        "/orders?x=1",
        &[
            ("host", "app:3000"),
            ("content-length", "99"),
            ("transfer-encoding", "chunked"),
        ],
    );
    encode_head(&mut out, &h, 5);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "POST /orders?x=1 HTTP/1.1\r\nhost: app:3000\r\ncontent-length: 5\r\n\r\n"
    );
    out.clear();
    encode_head(&mut out, &head(Method::GET, "/", &[]), 0);
    assert_eq!(String::from_utf8_lossy(&out), "GET / HTTP/1.1\r\n\r\n");
    out.clear();
    encode_head(&mut out, &head(Method::PUT, "/k", &[]), 0);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "PUT /k HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
    );
}

/// The head of `text`, and how many of its bytes it took.
fn parsed(text: &str, method: Method) -> (response::Parts, Framing, bool, usize) {
    let mut buf = BytesMut::from(text);
    match parse_head(&mut buf, &method) {
        Ok(Some((p, f, keep))) => (p, f, keep, text.len() - buf.len()),
        Ok(None) => panic!("partial: {text:?}"),
        Err(e) => panic!("{}: {text:?}", e.message()),
    }
}

#[test]
fn framing_and_keep_alive_follow_the_answer() {
    let (p, f, keep, len) = parsed(
        "HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc",
        Method::POST,
    );
    assert_eq!(
        (p.status.as_u16(), f, keep, len),
        (201, Framing::Length(3), true, 51)
    );
    assert_eq!(p.headers["x-a"], "b");
    let (_, f, keep, _) = parsed(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        Method::GET,
    );
    assert_eq!((f, keep), (Framing::Chunked, true));
    let (_, f, keep, _) = parsed("HTTP/1.1 200 OK\r\n\r\n", Method::GET);
    assert_eq!((f, keep), (Framing::UntilClose, false));
    let (_, f, keep, _) = parsed(
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n",
        Method::GET,
    );
    assert_eq!((f, keep), (Framing::Length(4), false));
    let (_, f, keep, _) = parsed("HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n", Method::GET);
    assert_eq!((f, keep), (Framing::Length(4), false));
    let (_, f, _, _) = parsed("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", Method::HEAD);
    assert_eq!(f, Framing::Empty);
    let (_, f, keep, _) = parsed("HTTP/1.1 204 No Content\r\n\r\n", Method::DELETE);
    assert_eq!((f, keep), (Framing::Empty, true));
    assert!(matches!(
        parse_head(&mut BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le"), &Method::GET),
        Ok(None)
    ));
}

#[test]
fn malformed_answers_are_refused() {
    for text in [
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
        "SMTP ready\r\n\r\n",
        "HTTP/1.1 999999 Odd\r\n\r\n",
    ] {
        assert!(
            matches!(
                parse_head(&mut BytesMut::from(text), &Method::GET),
                Err(Failure::Broken(_))
            ),
            "{text:?}"
        );
    }
    assert_eq!(chunk_size(b"1f;name=v").ok(), Some(31));
    assert!(chunk_size(b"").is_err());
    assert!(chunk_size(b"zz").is_err());
    assert!(chunk_size(b"ffffffffffffffffff").is_err());
}

/// A server that answers one request per entry of `answers`, written as
/// given, then closes.
/// One request read off `s`: its head, as text, after its body (when it
/// states a length) was read too; None once the client is gone.
pub(crate) async fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let len = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_string)
        })
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some(text)
}

async fn server(answers: Vec<&'static [u8]>) -> TcpStream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        for answer in answers {
            if read_request(&mut s).await.is_none() {
                return;
            }
            if s.write_all(answer).await.is_err() {
                return;
            }
        }
    });
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test]
async fn answers_are_read_whole_whatever_their_framing() {
    let tcp = server(vec![
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
    ])
    .await;
    let mut conn = Conn::new(tcp);
    let post = head(Method::POST, "/x", &[]);
    let body = Bytes::from_static(b"ping");
    let (p, b, keep) = conn.exchange(&post, &body, 1 << 20).await.expect("first");
    assert_eq!((p.status.as_u16(), &b[..], keep), (200, &b"hello"[..], true));
    assert!(conn.reusable());
    let (p, b, keep) = conn.exchange(&post, &body, 1 << 20).await.expect("chunked");
    assert_eq!((&b[..], keep), (&b"abcde"[..], true));
    let trailers = p.extensions.get::<Trailers>().map(|t| t.0.clone());
    assert_eq!(
        trailers.as_ref().and_then(|t| t.get("t")).map(|v| v.as_bytes()),
        Some(&b"v"[..])
    );
    assert!(matches!(
        conn.exchange(&post, &body, 9).await,
        Err(Failure::TooLarge)
    ));
    let mut conn = Conn::new(server(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"]).await);
    let (_, b, keep) = conn.exchange(&post, &body, 1 << 20).await.expect("until close");
    assert_eq!((&b[..], keep), (&b"until the end"[..], false));
    let mut conn = Conn::new(server(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"]).await);
    assert!(matches!(
        conn.exchange(&post, &body, 5).await,
        Err(Failure::TooLarge)
    ));
}

#[tokio::test]
async fn endless_interim_answers_and_trailers_are_refused() {
    let post = head(Method::POST, "/x", &[]);
    let body = Bytes::from_static(b"ping");
    let interim = "HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM + 1)
        + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut conn = Conn::new(server(vec![Box::leak(interim.into_bytes().into_boxed_slice())]).await);
    let refused = conn.exchange(&post, &body, 1 << 20).await;
    assert!(matches!(refused, Err(Failure::Broken(_))), "{refused:?}");
    let trailers = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n{}\r\n",
        "T: vvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\r\n".repeat(MAX_HEAD / 30)
    );
    let mut conn = Conn::new(server(vec![Box::leak(trailers.into_bytes().into_boxed_slice())]).await);
    let refused = conn.exchange(&post, &body, 1 << 20).await;
    assert!(matches!(refused, Err(Failure::Broken(_))), "{refused:?}");
}

#[tokio::test]
async fn a_closed_connection_is_seen_before_and_after_a_request() {
    let mut conn = Conn::new(server(vec![]).await);
    // The server closes without answering.
    let get = head(Method::GET, "/", &[]);
    let failed = conn.exchange(&get, &Bytes::new(), 1 << 20).await;
    assert!(matches!(failed, Err(Failure::Unanswered(_))), "{failed:?}");
    let mut conn = Conn::new(server(vec![]).await);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!conn.reusable());
    let mut conn = Conn::new(server(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"]).await);
    let cut = conn.exchange(&get, &Bytes::new(), 1 << 20).await;
    assert!(matches!(cut, Err(Failure::Broken(_))), "{cut:?}");
}
