//! Load: one caller per connection, either at a fixed total rate (open
//! schedule) or as fast as each connection allows (closed loop).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use daprs_proto::{
    common::InvokeRequest,
    runtime::{InvokeServiceRequest, app_callback_client::AppCallbackClient, dapr_client::DaprClient},
};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// What a request goes to.
#[derive(Clone, Debug)]
pub enum Target {
    /// HTTP POST of the payload to `path` on `port`.
    Http { port: u16, path: String },
    /// `AppCallback/OnInvoke` straight to the app.
    AppGrpc { port: u16 },
    /// `Dapr/InvokeService` on a sidecar, for app `app_id`.
    DaprGrpc { port: u16, app_id: String },
    /// `AppCallback/OnInvoke` on a sidecar with `dapr-app-id`: proxied as raw gRPC.
    Proxied { port: u16, app_id: String },
}

/// One connection's client.
enum Caller {
    Http(SendRequest<Full<Bytes>>, String),
    AppGrpc(AppCallbackClient<Channel>),
    DaprGrpc(DaprClient<Channel>, String),
    Proxied(AppCallbackClient<Channel>, tonic::metadata::AsciiMetadataValue),
}

async fn grpc_channel(port: u16) -> anyhow::Result<Channel> {
    // One channel per caller is one HTTP/2 connection per caller.
    Ok(Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

impl Caller {
    async fn connect(target: &Target) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Http { port, path } => {
                let stream = tokio::net::TcpStream::connect(("127.0.0.1", *port)).await?;
                stream.set_nodelay(true)?;
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                Self::Http(send, path.clone())
            }
            Target::AppGrpc { port } => Self::AppGrpc(AppCallbackClient::new(grpc_channel(*port).await?)),
            Target::DaprGrpc { port, app_id } => {
                Self::DaprGrpc(DaprClient::new(grpc_channel(*port).await?), app_id.clone())
            }
            Target::Proxied { port, app_id } => Self::Proxied(
                AppCallbackClient::new(grpc_channel(*port).await?),
                app_id.parse()?,
            ),
        })
    }

    async fn call(&mut self, payload: &Bytes) -> anyhow::Result<()> {
        let message = || InvokeRequest {
            method: "echo".into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: payload.to_vec(),
            }),
            content_type: "application/octet-stream".into(),
            http_extension: None,
        };
        let got = match self {
            Self::Http(send, path) => {
                send.ready().await?;
                let req = hyper::Request::post(path.as_str())
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/octet-stream")
                    .body(Full::new(payload.clone()))?;
                let resp = send.send_request(req).await?;
                if !resp.status().is_success() {
                    bail!("HTTP status {}", resp.status());
                }
                resp.into_body().collect().await?.to_bytes().len()
            }
            Self::AppGrpc(client) => client
                .on_invoke(message())
                .await?
                .into_inner()
                .data
                .map_or(0, |d| d.value.len()),
            Self::Proxied(client, app_id) => {
                let mut req = tonic::Request::new(message());
                req.metadata_mut().insert("dapr-app-id", app_id.clone());
                client
                    .on_invoke(req)
                    .await?
                    .into_inner()
                    .data
                    .map_or(0, |d| d.value.len())
            }
            Self::DaprGrpc(client, app_id) => client
                .invoke_service(InvokeServiceRequest {
                    id: app_id.clone(),
                    message: Some(message()),
                })
                .await?
                .into_inner()
                .data
                .map_or(0, |d| d.value.len()),
        };
        if got != payload.len() {
            bail!("echo returned {got} bytes, sent {}", payload.len());
        }
        Ok(())
    }
}

/// Latencies of one run and how long it took.
pub struct Run {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Run {
    /// The `q` quantile (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }

    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// How the callers pace themselves.
#[derive(Clone, Copy)]
pub enum Pace {
    /// A total of this many requests per second, spread evenly.
    Rate(u32),
    /// Each caller sends its next request as soon as the last one returns.
    Saturate,
}

/// Runs `conns` callers against `target` for `duration`.
pub async fn run(
    target: &Target,
    conns: usize,
    pace: Pace,
    duration: Duration,
    payload: Bytes,
) -> anyhow::Result<Run> {
    let mut callers = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut caller = Caller::connect(target)
            .await
            .with_context(|| format!("connect to {target:?}"))?;
        // Warm the connection (and the sidecars' own connections) first.
        for _ in 0..20 {
            caller
                .call(&payload)
                .await
                .with_context(|| format!("warm-up call to {target:?}"))?;
        }
        callers.push(caller);
    }
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = callers
        .into_iter()
        .enumerate()
        .map(|(i, mut caller)| {
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let gap = match pace {
                    Pace::Rate(rps) => Some(Duration::from_secs_f64(conns as f64 / f64::from(rps))),
                    Pace::Saturate => None,
                };
                // Stagger the callers so the rate is even, not 16 at once.
                let mut next = start + gap.map_or(Duration::ZERO, |g| g * i as u32 / conns as u32);
                while next < end {
                    if gap.is_some() {
                        tokio::time::sleep_until(next.into()).await;
                    }
                    let t0 = Instant::now();
                    caller.call(&payload).await?;
                    latencies.push(t0.elapsed());
                    next = match gap {
                        Some(g) => next + g,
                        None => Instant::now(),
                    };
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Ok(Run { latencies, elapsed })
}
