//! Streams through the gRPC proxy: a bidirectional echo stream's messages
//! per second and bytes per second, through two sidecars and straight to
//! the app in the same run, and the sidecars' memory while 100 MB pass.

use std::{
    pin::Pin,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming, transport::Channel};

use crate::sidecar::{Daprd, Probe};

pub mod echo {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/daprs.test.v1.rs"));
}

use echo::{
    Msg,
    echo_client::EchoClient,
    echo_server::{Echo, EchoServer},
};

type Out = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

struct App;

#[tonic::async_trait]
impl Echo for App {
    async fn unary(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        Ok(Response::new(req.into_inner()))
    }

    type ServerStreamStream = Out;

    async fn server_stream(&self, _: Request<Msg>) -> Result<Response<Out>, Status> {
        Err(Status::unimplemented("not measured"))
    }

    async fn client_stream(&self, req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        let mut s = req.into_inner();
        let (mut count, mut bytes) = (0u32, 0u64);
        while let Some(m) = s.next().await {
            count += 1;
            bytes += m?.data.len() as u64;
        }
        Ok(Response::new(Msg {
            text: bytes.to_string(),
            data: Vec::new(),
            count,
        }))
    }

    type BidiStream = Out;

    async fn bidi(&self, req: Request<Streaming<Msg>>) -> Result<Response<Out>, Status> {
        Ok(Response::new(Box::pin(req.into_inner())))
    }
}

/// Serves the echo service on `listener` until the process ends.
pub fn serve(listener: tokio::net::TcpListener) {
    let svc = EchoServer::new(App)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
}

async fn client(port: u16) -> anyhow::Result<EchoClient<Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(4 << 20))
        .connect()
        .await?;
    Ok(EchoClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

fn addressed<T>(app: Option<&str>, msg: T) -> anyhow::Result<Request<T>> {
    let mut r = Request::new(msg);
    if let Some(app) = app {
        r.metadata_mut().insert("dapr-app-id", app.parse()?);
    }
    Ok(r)
}

/// One bidirectional stream: `count` messages of `size` bytes sent as fast
/// as flow control allows, each echoed back.
pub struct Throughput {
    pub messages_per_s: f64,
    /// Payload bytes each way per second.
    pub mib_per_s: f64,
}

pub async fn bidi(port: u16, app: Option<&str>, count: u32, size: usize) -> anyhow::Result<Throughput> {
    let mut c = client(port).await?;
    let data = vec![7u8; size];
    let out = tokio_stream::iter((0..count).map(move |i| Msg {
        text: String::new(),
        data: data.clone(),
        count: i,
    }));
    let started = Instant::now();
    let mut replies = c.bidi(addressed(app, out)?).await?.into_inner();
    let mut got = 0u32;
    while let Some(m) = replies.next().await {
        let m = m?;
        anyhow::ensure!(m.count == got, "reply {} out of order", m.count);
        got += 1;
    }
    anyhow::ensure!(got == count, "{got} of {count} replies");
    let secs = started.elapsed().as_secs_f64();
    Ok(Throughput {
        messages_per_s: f64::from(count) / secs,
        mib_per_s: f64::from(count) * size as f64 / secs / (1024.0 * 1024.0),
    })
}

/// Both sidecars' RSS (idle, peak) in bytes while `mib` MiB pass in 1 MiB messages.
pub async fn rss_during(
    sidecars: [&Daprd; 2],
    port: u16,
    app: &str,
    mib: u32,
) -> anyhow::Result<[(u64, u64); 2]> {
    let mut c = client(port).await?;
    // Warm up the connections so idle includes them.
    c.unary(addressed(Some(app), Msg::default())?).await?;
    let idle = [sidecars[0].usage()?.rss_bytes, sidecars[1].usage()?.rss_bytes];
    let mut peak = idle;
    let out = tokio_stream::iter((0..mib).map(|i| Msg {
        text: String::new(),
        data: vec![(i % 251) as u8; 1 << 20],
        count: i,
    }));
    let call = c.client_stream(addressed(Some(app), out)?);
    tokio::pin!(call);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let res = loop {
        tokio::select! {
            r = &mut call => break r?,
            _ = tick.tick() => {
                for (i, d) in sidecars.iter().enumerate() {
                    peak[i] = peak[i].max(d.usage()?.rss_bytes);
                }
            }
        }
    };
    let total: u64 = res.into_inner().text.parse().context("byte count")?;
    anyhow::ensure!(total == u64::from(mib) << 20, "the app got {total} bytes");
    Ok([(idle[0], peak[0]), (idle[1], peak[1])])
}

/// The streaming rows of the report: one bidirectional stream direct and
/// through the sidecars, then both sidecars' RSS while a large client stream
/// passes.
pub async fn section(caller: &Daprd, target: &Daprd, echo_port: u16) -> anyhow::Result<String> {
    const MIB: f64 = 1024.0 * 1024.0;
    let mut out = String::from(
        "### Proxied gRPC streams (one bidirectional stream, each message echoed)\n\n\
         | messages | path | messages/s | MiB/s each way | through sidecars / direct |\n|---|---|---|---|---|\n",
    );
    for (count, size) in [(100_000u32, 64usize), (10_000, 16 << 10)] {
        let direct = bidi(echo_port, None, count, size).await?;
        let via = bidi(caller.grpc_port, Some("bench-stream"), count, size).await?;
        let label = format!("{count} × {size} B");
        out.push_str(&format!(
            "| {label} | direct | {:.0} | {:.1} | |\n| {label} | app → daprd → daprd → app | {:.0} | {:.1} | {:.0}% |\n",
            direct.messages_per_s,
            direct.mib_per_s,
            via.messages_per_s,
            via.mib_per_s,
            100.0 * via.messages_per_s / direct.messages_per_s
        ));
    }
    let rss = rss_during([caller, target], caller.grpc_port, "bench-stream", 100).await?;
    let mib = |b: u64| b as f64 / MIB;
    out.push_str(&format!(
        "\nRSS while a 100 MiB client stream (1 MiB messages) passes: caller sidecar {:.1} → {:.1} MiB (+{:.1}), target sidecar {:.1} → {:.1} MiB (+{:.1}).\n\n",
        mib(rss[0].0),
        mib(rss[0].1),
        mib(rss[0].1.saturating_sub(rss[0].0)),
        mib(rss[1].0),
        mib(rss[1].1),
        mib(rss[1].1.saturating_sub(rss[1].0)),
    ));
    Ok(out)
}
