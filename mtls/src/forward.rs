//! Calls of any shape forwarded to a peer on the connection its unary calls
//! use, bodies passed frame by frame. The request's HEADERS go out with
//! whatever of its body has already arrived (all of it, for most unary
//! calls), so a unary call costs one write; the rest follows under the
//! peer's flow control, one frame ahead of its window at most.

use std::{
    future::poll_fn,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use futures_util::FutureExt;
use h2::{RecvStream, SendStream, client::SendRequest};
use http::{HeaderMap, header};
use http_body::{Body, Frame};
use tonic::Status;

use crate::peer::{Peer, status_of};

/// How much of a body that has already arrived is sent with its HEADERS.
const UP_FRONT: usize = 64 * 1024;

/// Headers HTTP/2 forbids, which an HTTP/1-minded client may still send.
const CONNECTION_SPECIFIC: [header::HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HeaderName::from_static("keep-alive"),
];

impl Peer {
    /// Sends `req` to the peer (its URI's path and query name the method)
    /// and returns the reply as soon as its headers are in; the reply's
    /// body streams as the peer sends it. Dropping the reply, or this
    /// future, cancels the call.
    pub async fn forward<B>(&self, req: http::Request<B>) -> Result<http::Response<Reply>, Status>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Send,
    {
        let (mut head, body) = req.into_parts();
        let path = match head.uri.path_and_query() {
            Some(p) => p.clone(),
            None => http::uri::PathAndQuery::from_static("/"),
        };
        head.uri = self.uri(path)?;
        for h in &CONNECTION_SPECIFIC {
            head.headers.remove(h);
        }
        let sender = self.sender().await?;
        let res = exchange(sender, head, body).await;
        if let Err(s) = &res
            && s.code() == tonic::Code::Unavailable
        {
            self.forget();
        }
        res
    }
}

/// What of a body could be read without waiting.
#[derive(Default)]
struct Arrived {
    data: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    ended: bool,
}

fn arrived<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> Result<Arrived, Status> {
    let mut got = Arrived {
        ended: body.is_end_stream(),
        ..Arrived::default()
    };
    let mut size = 0;
    while !got.ended && size < UP_FRONT {
        let Some(next) = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).now_or_never() else {
            break;
        };
        match next {
            None => got.ended = true,
            Some(Err(_)) => return Err(Status::cancelled("the caller's request broke off")),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    size += data.len();
                    if !data.is_empty() {
                        got.data.push(data);
                    }
                    got.ended = body.is_end_stream();
                }
                Err(frame) => {
                    got.trailers = frame.into_trailers().ok();
                    got.ended = true;
                }
            },
        }
    }
    Ok(got)
}

async fn exchange<B>(
    sender: SendRequest<Bytes>,
    head: http::request::Parts,
    mut body: B,
) -> Result<http::Response<Reply>, Status>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Send,
{
    let fail = |e: h2::Error| status_of(&e);
    let mut sender = sender.ready().await.map_err(fail)?;
    let got = arrived(&mut body)?;
    let last = got.data.len();
    let (response, mut tx) = sender
        .send_request(
            http::Request::from_parts(head, ()),
            got.ended && last == 0 && got.trailers.is_none(),
        )
        .map_err(fail)?;
    // Queued with the HEADERS without waiting for capacity: h2 writes them together.
    for (i, data) in got.data.into_iter().enumerate() {
        tx.send_data(data, got.ended && got.trailers.is_none() && i + 1 == last)
            .map_err(fail)?;
    }
    if let Some(t) = got.trailers {
        tx.send_trailers(t).map_err(fail)?;
    }
    let pump = (!got.ended).then(|| Pump(tokio::spawn(pump(body, tx))));
    let res = response.await.map_err(fail)?;
    Ok(res.map(|recv| Reply {
        recv,
        data_done: false,
        done: false,
        _pump: pump,
    }))
}

/// Sends the rest of a request body as it arrives, waiting for the peer's
/// window before each frame; stops when the peer resets the stream.
async fn pump<B>(mut body: B, mut tx: SendStream<Bytes>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Send,
{
    loop {
        let next = tokio::select! {
            next = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => next,
            _ = poll_fn(|cx| tx.poll_reset(cx)) => return,
        };
        let frame = match next {
            None => {
                let _ = tx.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(_)) => return tx.send_reset(h2::Reason::CANCEL),
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    let _ = tx.send_trailers(t);
                }
                return;
            }
        };
        let end = body.is_end_stream();
        if !data.is_empty() {
            tx.reserve_capacity(data.len());
            loop {
                match poll_fn(|cx| tx.poll_capacity(cx)).await {
                    Some(Ok(0)) => {}
                    Some(Ok(_)) => break,
                    Some(Err(_)) | None => return,
                }
            }
        } else if !end {
            continue;
        }
        if tx.send_data(data, end).is_err() || end {
            return;
        }
    }
}

/// The task sending a request body; the call is over when its reply is
/// dropped, so the task goes with it.
struct Pump(tokio::task::JoinHandle<()>);

impl Drop for Pump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A forwarded call's reply body: the peer's DATA frames, then its trailers.
pub struct Reply {
    recv: RecvStream,
    data_done: bool,
    done: bool,
    _pump: Option<Pump>,
}

impl Body for Reply {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The peer may send more once this has been handed on.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        let trailers = ready!(self.recv.poll_trailers(cx));
        self.done = true;
        Poll::Ready(trailers.transpose().map(|t| t.map(Frame::trailers)))
    }

    /// A reply of headers alone (gRPC's trailers-only answer) ends at once,
    /// so it is passed on as one too.
    fn is_end_stream(&self) -> bool {
        self.done || self.recv.is_end_stream()
    }
}
