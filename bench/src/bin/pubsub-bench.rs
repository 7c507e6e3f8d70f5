//! `pubsub-bench`: publish → delivery through one `daprd` (the app publishes
//! over HTTP and receives each CloudEvent on its HTTP route), beside the
//! same broker driven directly from Rust (the components crate's client,
//! no sidecar), in the same run: saturated throughput and end-to-end
//! latency at a fixed rate, for `pubsub.in-memory`, `pubsub.redis` and
//! `pubsub.jetstream`.
//!
//! Build `daprd` in release mode first; see BENCHMARKS.md.

// Shared with `daprs-bench`, which uses all of it.
#[allow(dead_code)]
#[path = "../sidecar.rs"]
mod sidecar;

use std::{
    convert::Infallible,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::bail;
use bytes::Bytes;
use clap::Parser;
use daprs_components::{
    Metadata,
    pubsub::{CONSUMER_ID, Handler, Message, PubSub, Subscription},
    registry::{self, Built},
};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use sidecar::{Daprd, Probe};
use tokio::sync::Notify;

#[derive(Parser)]
#[command(
    name = "pubsub-bench",
    about = "Measure pub/sub through daprd against the broker used directly"
)]
struct Args {
    /// The daprd binary (default: next to this program).
    #[arg(long)]
    daprd: Option<PathBuf>,
    /// Messages of each saturated run.
    #[arg(long, default_value_t = 20_000)]
    messages: u32,
    /// Publishers in the saturated runs.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Rate of the latency runs, messages per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds of each latency run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Redis address for `pubsub.redis`.
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis: String,
    /// NATS URL for `pubsub.jetstream`.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
}

/// The process-wide clock publishers stamp into payloads.
fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// A payload of about 1 KiB carrying its send time and run tag.
fn payload(tag: u32) -> Bytes {
    let t = epoch().elapsed().as_nanos() as u64;
    Bytes::from(format!(
        "{{\"t\":{t},\"run\":{tag},\"pad\":\"{}\"}}",
        "x".repeat(960)
    ))
}

/// Deliveries of the current run: count and end-to-end latencies.
#[derive(Default)]
struct Sink {
    run: std::sync::atomic::AtomicU32,
    got: Mutex<Vec<Duration>>,
    done: Notify,
    want: std::sync::atomic::AtomicUsize,
}

impl Sink {
    /// Records one delivery of `data` (the publisher's JSON, or a CloudEvent around it).
    fn record(&self, data: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        let body = if v.get("data").is_some() { &v["data"] } else { &v };
        let (Some(t), Some(run)) = (body["t"].as_u64(), body["run"].as_u64()) else {
            return;
        };
        if run != u64::from(self.run.load(std::sync::atomic::Ordering::Relaxed)) {
            return;
        }
        let sent = Duration::from_nanos(t);
        let latency = epoch().elapsed().saturating_sub(sent);
        let mut got = self.got.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        got.push(latency);
        if got.len() >= self.want.load(std::sync::atomic::Ordering::Relaxed) {
            self.done.notify_one();
        }
    }

    fn begin(&self, tag: u32, want: usize) {
        self.run.store(tag, std::sync::atomic::Ordering::Relaxed);
        self.want.store(want, std::sync::atomic::Ordering::Relaxed);
        self.got
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Waits until `want` deliveries arrived (or 60 s), then the sorted latencies.
    async fn finish(&self) -> anyhow::Result<Vec<Duration>> {
        let want = self.want.load(std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            {
                let got = self.got.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if got.len() >= want {
                    let mut v = got.clone();
                    v.sort_unstable();
                    return Ok(v);
                }
                if Instant::now() > deadline {
                    bail!("{} of {want} messages delivered within 60 s", got.len());
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), self.done.notified()).await;
        }
    }
}

/// The subscriber app: `GET /dapr/subscribe` lists `topic` on the
/// component the sidecar was given; every POST is a delivery.
fn serve_app(listener: tokio::net::TcpListener, sink: Arc<Sink>, topic: String) {
    let subs = Bytes::from(format!(
        r#"[{{"pubsubname":"bench","topic":"{topic}","route":"/in"}}]"#
    ));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (sink, subs) = (sink.clone(), subs.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (sink, subs) = (sink.clone(), subs.clone());
                    async move {
                        let list = req.uri().path() == "/dapr/subscribe";
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        if list {
                            return Ok::<_, Infallible>(Response::new(Full::new(subs)));
                        }
                        sink.record(&body);
                        Ok(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A broker under test: label, component type, metadata.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

/// How a run publishes one message.
#[derive(Clone)]
enum Publisher {
    /// `POST` to this publish URL of daprd.
    Daprd(Box<HttpClient>, String),
    /// The broker's client, called directly, and the topic.
    Direct(Arc<dyn PubSub>, String),
}

impl Publisher {
    async fn publish(&self, data: Bytes) -> anyhow::Result<()> {
        match self {
            Self::Daprd(client, url) => {
                let req = Request::post(url.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(data))?;
                let res = client.request(req).await?;
                if res.status() != 204 {
                    bail!("publish answered {}", res.status());
                }
            }
            Self::Direct(broker, topic) => {
                broker
                    .publish(Message {
                        topic: topic.clone(),
                        data,
                        content_type: Some("application/json".into()),
                        metadata: Metadata::new(),
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
}

fn ms(latencies: &[Duration], q: f64) -> f64 {
    if latencies.is_empty() {
        return f64::NAN;
    }
    latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

/// A saturated run (throughput) then a fixed-rate run (latency).
async fn measure(p: &Publisher, sink: &Sink, args: &Args, tag: u32) -> anyhow::Result<Figures> {
    // Saturated: `conns` publishers share `messages`; the clock stops at the last delivery.
    sink.begin(tag, args.messages as usize);
    let t0 = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let tasks: Vec<_> = (0..args.conns)
        .map(|_| {
            let (p, next, total) = (p.clone(), next.clone(), args.messages);
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                    p.publish(payload(tag)).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    sink.finish().await?;
    let rate = f64::from(args.messages) / t0.elapsed().as_secs_f64();

    // Fixed rate: one message every 1/rate s from one publisher per slot.
    let count = args.rate as u64 * args.seconds;
    sink.begin(tag + 1, count as usize);
    let gap = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let start = tokio::time::Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..count {
        tokio::time::sleep_until(start + gap * i as u32).await;
        let p = p.clone();
        sends.spawn(async move { p.publish(payload(tag + 1)).await });
    }
    while let Some(r) = sends.join_next().await {
        r??;
    }
    let latencies = sink.finish().await?;
    Ok(Figures {
        rate,
        p50: ms(&latencies, 0.5),
        p99: ms(&latencies, 0.99),
    })
}

async fn direct_broker(
    kind: &str,
    metadata: &[(&str, &str)],
    sink: Arc<Sink>,
    topic: &str,
) -> anyhow::Result<(Arc<dyn PubSub>, daprs_components::pubsub::Subscribed)> {
    let env = Default::default();
    let ctx = registry::Context {
        env: &env,
        namespace: None,
    };
    let md: Metadata = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let Built::PubSub(broker) = registry::build(kind, "v1", &md, &ctx)
        .await
        .map_err(anyhow::Error::msg)?
    else {
        bail!("{kind} is not a pub/sub");
    };
    let handler: Handler = Arc::new(move |m: Message| {
        let sink = sink.clone();
        Box::pin(async move {
            sink.record(&m.data);
            Ok(())
        })
    });
    let sub = Subscription {
        topic: topic.into(),
        metadata: Metadata::from([(CONSUMER_ID.to_string(), "direct".to_string())]),
    };
    let running = broker.subscribe(sub, handler).await?;
    Ok((broker, running))
}

/// Deletes the benchmark's streams, so runs leave nothing behind.
async fn redis_del(addr: &str, keys: &[&str]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
        let _ = s
            .write_all(format!("DEL {}\r\n", keys.join(" ")).as_bytes())
            .await;
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = sidecar::binary(args.daprd.as_ref())?;
    let home = std::env::temp_dir().join(format!("daprs-pubsub-bench-{}", std::process::id()));
    std::fs::create_dir_all(&home)?;
    let _ = epoch();
    let pid = std::process::id();
    let stream = format!("DAPRS_BENCH_{pid}");
    let cases: [Case<'_>; 3] = [
        ("pubsub.in-memory", "pubsub.in-memory", vec![]),
        (
            "pubsub.redis",
            "pubsub.redis",
            vec![("redisHost", args.redis.as_str())],
        ),
        (
            "pubsub.jetstream",
            "pubsub.jetstream",
            vec![("natsURL", args.nats.as_str()), ("streamName", stream.as_str())],
        ),
    ];
    println!(
        "| broker | path | throughput (msg/s) | p50 at {} msg/s (ms) | p99 (ms) |",
        args.rate
    );
    println!("|---|---|---|---|---|");
    for (i, (label, kind, metadata)) in cases.iter().enumerate() {
        let tag = 10 * (i as u32 + 1);
        // Through daprd: the component under the name `bench`, one subscriber app.
        let dir = home.join(format!("res-{i}"));
        std::fs::create_dir_all(&dir)?;
        let mut yaml = format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: bench}}\nspec:\n  type: {kind}\n  version: v1\n  metadata:\n"
        );
        for (k, v) in metadata {
            yaml.push_str(&format!("  - {{name: {k}, value: '{v}'}}\n"));
        }
        if metadata.is_empty() {
            yaml = yaml.replace("  metadata:\n", "");
        }
        std::fs::write(dir.join("bench.yaml"), yaml)?;
        let (via_topic, direct_topic) = (
            format!("bench-{pid}-{i}-daprd"),
            format!("bench-{pid}-{i}-direct"),
        );
        let sink = Arc::new(Sink::default());
        let app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let app_port = app.local_addr()?.port();
        serve_app(app, sink.clone(), via_topic.clone());
        let dir_arg = dir.display().to_string();
        let d = Daprd::start_with(
            &binary,
            &home,
            &format!("bench-sub-{i}"),
            Some((app_port, "http")),
            &["--resources-path", &dir_arg],
            &[],
        )
        .await?;
        // Let the subscription start before the first publish.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let client = Client::builder(TokioExecutor::new()).build_http();
        let url = format!("http://127.0.0.1:{}/v1.0/publish/bench/{via_topic}", d.http_port);
        let cpu0 = d.usage()?;
        let via = measure(&Publisher::Daprd(Box::new(client), url), &sink, &args, tag).await?;
        let cpu = d.usage()?.cpu.saturating_sub(cpu0.cpu);
        let sent = f64::from(args.messages) + (args.rate as u64 * args.seconds) as f64;
        let per_1000 = cpu.as_secs_f64() * 1000.0 / sent * 1000.0;
        drop(d);

        let sink = Arc::new(Sink::default());
        let (broker, running) = direct_broker(kind, metadata, sink.clone(), &direct_topic).await?;
        let direct = measure(
            &Publisher::Direct(broker, direct_topic.clone()),
            &sink,
            &args,
            tag + 5,
        )
        .await?;
        running.stop().await;
        if *kind == "pubsub.redis" {
            redis_del(&args.redis, &[&via_topic, &direct_topic]).await;
        }
        if *kind == "pubsub.jetstream"
            && let Ok(client) = async_nats::connect(args.nats.as_str()).await
        {
            let _ = async_nats::jetstream::new(client).delete_stream(&stream).await;
        }
        for (path, f) in [("direct (Rust client)", &direct), ("through daprd", &via)] {
            println!(
                "| {label} | {path} | {:.0} | {:.2} | {:.2} |",
                f.rate, f.p50, f.p99
            );
        }
        println!(
            "| {label} | daprd / direct | {:.0}% | daprd CPU {per_1000:.0} ms per 1,000 messages | |",
            100.0 * via.rate / direct.rate
        );
    }
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}
