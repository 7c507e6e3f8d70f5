//! Where sampled spans go: Zipkin, an OpenTelemetry collector over gRPC or
//! HTTP, or the log. Spans queue in memory and leave in batches from a
//! thread of their own, so a slow or absent collector never holds up a
//! request: a full queue drops spans (counted) instead.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use tokio::sync::mpsc;

pub use super::settings::{Env, OtelSpec, Otlp, Protocol, Settings, process_env};
use super::{Sampler, SpanData, Tracer, context::hex, otlp, zipkin};

/// A control-plane program's tracer: on when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or its traces form) names a collector, sampling every span.
pub fn from_env(service: &str) -> Tracer {
    let env = process_env;
    match Otlp::resolve(None, &env) {
        Ok(Some(otlp)) => {
            let mut settings = Settings::new(service, &env);
            settings.otlp = Some(otlp);
            start(Sampler::new(1.0), settings)
        }
        Ok(None) => Tracer::off(),
        Err(e) => {
            tracing::warn!(error = %e, "tracing is off");
            Tracer::off()
        }
    }
}

/// A tracer sampling with `sampler`, exporting as `settings` say from a
/// thread of its own. Spans are sampled (and passed on as sampled) even
/// with no exporter, as Dapr does.
pub fn start(sampler: Sampler, settings: Settings) -> Tracer {
    if !settings.exports() {
        return Tracer::new(sampler, None);
    }
    let (tx, rx) = mpsc::channel(settings.queue);
    let exporters = match Exporters::new(&settings) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "spans are not exported");
            return Tracer::new(sampler, None);
        }
    };
    let full = Arc::new(tokio::sync::Notify::new());
    let tracer = Tracer::exporting(sampler, tx, full.clone(), settings.batch);
    let dropped = tracer.dropped_counter();
    // Exports run on a thread of their own: encoding and sending a batch
    // never waits in line with requests, however few threads serve them.
    let thread = std::thread::Builder::new()
        .name("trace-export".into())
        .spawn(
            move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(exporters.run(rx, settings, dropped, full)),
                Err(e) => tracing::warn!(error = %e, "spans are not exported"),
            },
        );
    if let Err(e) = thread {
        tracing::warn!(error = %e, "spans are not exported");
    }
    tracer
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for `url`. The system's trust roots are read only for an
/// `https` collector: reading them costs more than a thousand requests.
fn client(url: &str, h2_only: bool) -> Result<HttpClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    if url.starts_with("https://") {
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = if h2_only {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().enable_http2().build()
    };
    let mut b = Client::builder(hyper_util::rt::TokioExecutor::new());
    b.http2_only(h2_only).pool_idle_timeout(Duration::from_secs(30));
    Ok(b.build(connector))
}

struct Exporters {
    zipkin: Option<(String, HttpClient)>,
    otlp: Option<(Otlp, HttpClient)>,
    stdout: bool,
}

impl Exporters {
    fn new(s: &Settings) -> Result<Self, String> {
        Ok(Self {
            zipkin: match &s.zipkin {
                Some(url) => Some((url.clone(), client(url, false)?)),
                None => None,
            },
            otlp: match &s.otlp {
                Some(o) => Some((o.clone(), client(&o.url, o.protocol == Protocol::Grpc)?)),
                None => None,
            },
            stdout: s.stdout,
        })
    }

    /// Exports a batch when one is full or the delay has passed since the
    /// last, until the queue closes.
    async fn run(
        self,
        mut rx: mpsc::Receiver<Box<SpanData>>,
        settings: Settings,
        dropped: Arc<AtomicU64>,
        full: Arc<tokio::sync::Notify>,
    ) {
        let mut batch = Vec::with_capacity(settings.batch);
        let mut failures = Failures::default();
        loop {
            tokio::select! {
                () = tokio::time::sleep(settings.delay) => {}
                () = full.notified() => {}
            }
            // Everything waiting, a batch at a time.
            loop {
                let closed = loop {
                    if batch.len() == settings.batch {
                        break false;
                    }
                    match rx.try_recv() {
                        Ok(span) => batch.push(span),
                        Err(mpsc::error::TryRecvError::Empty) => break false,
                        Err(mpsc::error::TryRecvError::Disconnected) => break true,
                    }
                };
                let more = batch.len() == settings.batch;
                if !batch.is_empty() {
                    self.export(&settings.service, &batch, &mut failures).await;
                    batch.clear();
                }
                failures.dropped(dropped.load(Ordering::Relaxed), settings.queue);
                if closed {
                    return;
                }
                if !more {
                    break;
                }
            }
        }
    }

    async fn export(&self, service: &str, spans: &[Box<SpanData>], failures: &mut Failures) {
        if self.stdout {
            for s in spans {
                tracing::info!(
                    target: "dapr_trace",
                    name = %s.name(),
                    trace_id = %hex(&s.context.trace_id),
                    span_id = %hex(&s.context.span_id),
                    parent_id = %s.parent.map(|p| hex(&p)).unwrap_or_default(),
                    duration_us = s.end.saturating_sub(s.start) / 1000,
                    "span"
                );
            }
        }
        if let Some((url, client)) = &self.zipkin {
            let body = zipkin::spans(service, spans);
            let sent = post(
                client,
                url,
                "application/json",
                body.into(),
                &[],
                Duration::from_secs(10),
            )
            .await;
            failures.note("zipkin", url, sent);
        }
        if let Some((o, client)) = &self.otlp {
            let sent = match o.protocol {
                Protocol::HttpProtobuf => {
                    let body = otlp::encode(service, spans);
                    post(
                        client,
                        &o.url,
                        "application/x-protobuf",
                        body.into(),
                        &o.headers,
                        o.timeout,
                    )
                    .await
                }
                Protocol::HttpJson => {
                    let body = otlp::json_request(service, spans).to_string();
                    post(
                        client,
                        &o.url,
                        "application/json",
                        body.into(),
                        &o.headers,
                        o.timeout,
                    )
                    .await
                }
                Protocol::Grpc => grpc_export(client, o, &otlp::encode(service, spans)).await,
            };
            failures.note("otlp", &o.url, sent);
        }
    }
}

/// Export failures are logged when they start and stop, not per batch;
/// spans dropped from a full queue at most twice a minute.
#[derive(Default)]
struct Failures {
    failing: std::collections::HashSet<&'static str>,
    reported_drops: u64,
    last_drop_report: Option<tokio::time::Instant>,
}

impl Failures {
    fn dropped(&mut self, total: u64, queue: usize) {
        let recent = self
            .last_drop_report
            .is_some_and(|t| t.elapsed() < Duration::from_secs(30));
        if total > self.reported_drops && !recent {
            tracing::warn!(
                dropped = total - self.reported_drops,
                queue,
                "spans dropped: the export queue (OTEL_BSP_MAX_QUEUE_SIZE) was full"
            );
            self.reported_drops = total;
            self.last_drop_report = Some(tokio::time::Instant::now());
        }
    }

    fn note(&mut self, exporter: &'static str, url: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if self.failing.remove(exporter) {
                    tracing::info!(exporter, url, "spans are exported again");
                }
            }
            Err(e) => {
                if self.failing.insert(exporter) {
                    tracing::warn!(exporter, url, error = %e, "spans could not be exported; dropping them until the collector answers");
                }
            }
        }
    }
}

fn request(
    url: &str,
    content_type: &str,
    body: Bytes,
    headers: &[(String, String)],
) -> Result<http::Request<Full<Bytes>>, String> {
    let mut req = http::Request::post(url).header(http::header::CONTENT_TYPE, content_type);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.body(Full::new(body)).map_err(|e| e.to_string())
}

async fn post(
    client: &HttpClient,
    url: &str,
    content_type: &str,
    body: Bytes,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    let req = request(url, content_type, body, headers)?;
    let res = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let _ = tokio::time::timeout(timeout, res.into_body().collect()).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {status}"))
    }
}

async fn grpc_export(client: &HttpClient, o: &Otlp, message: &[u8]) -> Result<(), String> {
    // One uncompressed message behind gRPC's five-byte prefix.
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .map_err(|e| e.to_string())?
            .to_be_bytes(),
    );
    framed.extend_from_slice(message);
    let url = format!("{}{}", o.url, otlp::GRPC_PATH);
    let mut req = request(&url, "application/grpc", framed.into(), &o.headers)?;
    req.headers_mut()
        .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    let call = async {
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        let head_status = res.headers().get("grpc-status").cloned();
        let collected = res.into_body().collect().await.map_err(|e| e.to_string())?;
        let status = head_status.or_else(|| collected.trailers().and_then(|t| t.get("grpc-status").cloned()));
        match status.as_ref().map(http::HeaderValue::as_bytes) {
            Some(b"0") => Ok(()),
            Some(code) => Err(format!(
                "the collector answered gRPC status {}",
                String::from_utf8_lossy(code)
            )),
            None => Err("the collector's answer has no gRPC status".to_string()),
        }
    };
    tokio::time::timeout(o.timeout, call)
        .await
        .map_err(|_| format!("no answer within {:?}", o.timeout))?
}
