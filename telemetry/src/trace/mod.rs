//! Distributed tracing: trace context in and out of requests
//! ([`context`]), Dapr's sampling, spans, and the exporters that batch them
//! to Zipkin or an OpenTelemetry collector off the request path
//! ([`export`]).
//!
//! A [`Tracer`] that is off costs nothing per request; one that is on but
//! does not sample a request only makes up its span's ids.

pub mod context;
pub mod export;
pub mod otlp;
mod settings;
mod span;
mod zipkin;

use std::{
    cell::Cell,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

pub use context::SpanContext;
pub use span::SpanData;
use tokio::sync::mpsc;

/// What a span stands for, as OpenTelemetry names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// Dapr's sampling: a span whose parent was sampled is sampled; any other
/// by its trace id against `samplingRate`, so every hop of a trace decides
/// the same.
#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    /// Trace ids whose low 63 bits fall below this are sampled.
    bound: u64,
}

impl Sampler {
    /// Dapr's default when `samplingRate` is missing or not a number.
    pub const DEFAULT_RATE: f64 = 1e-4;

    pub fn new(rate: f64) -> Self {
        let bound = if rate.is_nan() || rate <= 0.0 {
            0
        } else if rate >= 1.0 {
            u64::MAX
        } else {
            (rate * (1u64 << 63) as f64) as u64
        };
        Self { bound }
    }

    /// `samplingRate` as the Configuration spells it.
    pub fn rate_of(spec: &str) -> f64 {
        spec.trim().parse().unwrap_or(Self::DEFAULT_RATE)
    }

    pub fn samples(&self, parent: Option<&SpanContext>, trace_id: &[u8; 16]) -> bool {
        if parent.is_some_and(SpanContext::sampled) {
            return true;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        (u64::from_be_bytes(low) >> 1) < self.bound
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now_ns().into());
    h.finish() | 1
}

/// A random 64-bit number (splitmix64 over a per-thread random seed): ids
/// must not collide, not resist prediction.
fn random_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

fn nonzero_u64() -> u64 {
    loop {
        let r = random_u64();
        if r != 0 {
            return r;
        }
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Inner {
    sampler: Sampler,
    /// Where finished sampled spans go; none when nothing exports them.
    queue: Option<mpsc::Sender<Box<SpanData>>>,
    /// Spans the full queue had no room for; the exporter reports them.
    dropped: Arc<AtomicU64>,
    /// Wakes the exporter when a batch is waiting, so it is not woken for
    /// every span; with how many spans make a batch.
    full: Option<(Arc<tokio::sync::Notify>, usize)>,
}

/// Starts spans. Cheap to clone; [`Tracer::off`] when tracing is disabled.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

impl Tracer {
    /// Tracing disabled: no spans, and trace headers pass through untouched.
    pub fn off() -> Self {
        Self::default()
    }

    /// A tracer sampling at `sampler`'s rate; sampled spans go to `queue`.
    pub fn new(sampler: Sampler, queue: Option<mpsc::Sender<Box<SpanData>>>) -> Self {
        Self::with(sampler, queue, None)
    }

    /// A tracer whose exporter is woken through `full` once `batch` spans wait.
    fn exporting(
        sampler: Sampler,
        queue: mpsc::Sender<Box<SpanData>>,
        full: Arc<tokio::sync::Notify>,
        batch: usize,
    ) -> Self {
        Self::with(sampler, Some(queue), Some((full, batch)))
    }

    fn with(
        sampler: Sampler,
        queue: Option<mpsc::Sender<Box<SpanData>>>,
        full: Option<(Arc<tokio::sync::Notify>, usize)>,
    ) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                sampler,
                queue,
                dropped: Arc::default(),
                full,
            })),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Spans dropped because the export queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.inner.as_ref().map(|i| i.dropped.clone()).unwrap_or_default()
    }

    /// Starts a span under `parent` (a new trace when there is none); `None`
    /// when tracing is off.
    pub fn start(&self, kind: SpanKind, parent: Option<SpanContext>) -> Option<Span> {
        let inner = self.inner.as_ref()?;
        let trace_id = match &parent {
            Some(p) => p.trace_id,
            None => {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&random_u64().to_be_bytes());
                id[8..].copy_from_slice(&nonzero_u64().to_be_bytes());
                id
            }
        };
        let sampled = inner.sampler.samples(parent.as_ref(), &trace_id);
        let context = SpanContext {
            trace_id,
            span_id: nonzero_u64().to_be_bytes(),
            flags: u8::from(sampled),
        };
        let record = (sampled && inner.queue.is_some())
            .then(|| Box::new(SpanData::new(kind, context, parent.map(|p| p.span_id), now_ns())));
        Some(Span {
            tracer: inner.clone(),
            context,
            record,
        })
    }
}

/// A span being timed; exported when it ends or is dropped.
pub struct Span {
    tracer: Arc<Inner>,
    context: SpanContext,
    /// Boxed: a span moves with its request's future, and so does only a pointer.
    record: Option<Box<SpanData>>,
}

impl Span {
    pub fn context(&self) -> SpanContext {
        self.context
    }

    /// Whether names and attributes are kept: only for spans that will be
    /// exported, so callers skip building them otherwise.
    pub fn recording(&self) -> bool {
        self.record.is_some()
    }

    pub fn set_name(&mut self, name: &str) {
        self.set_name_parts(&[name]);
    }

    /// Names the span with `parts` joined, so callers need not join them.
    pub fn set_name_parts(&mut self, parts: &[&str]) {
        if let Some(r) = &mut self.record {
            r.set_name(parts);
        }
    }

    /// Adds an attribute; an empty value is left out.
    pub fn set_attribute(&mut self, key: &'static str, value: &str) {
        self.set_attribute_parts(key, &[value]);
    }

    /// Adds an attribute whose value is `parts` joined.
    pub fn set_attribute_parts(&mut self, key: &'static str, parts: &[&str]) {
        if let Some(r) = &mut self.record {
            r.add_attribute(key, parts);
        }
    }

    /// Marks the span failed.
    pub fn set_error(&mut self, message: &str) {
        if let Some(r) = &mut self.record {
            r.set_error(message);
        }
    }

    /// Ends the span now.
    pub fn end(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        record.end = now_ns().max(record.start);
        let Some(q) = &self.tracer.queue else {
            return;
        };
        if q.try_send(record).is_err() {
            self.tracer.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((full, batch)) = &self.tracer.full
            && q.max_capacity() - q.capacity() >= *batch
        {
            full.notify_one();
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.finish();
    }
}

/// OpenTelemetry's status for an HTTP answer, as Dapr maps it: the gRPC
/// code's name for 4xx and 5xx, nothing for success.
pub fn http_error(status: u16) -> Option<&'static str> {
    let code = match status {
        100..=399 => return None,
        401 => 16,
        403 => 7,
        404 => 5,
        429 => 8,
        501 => 12,
        503 => 14,
        504 => 4,
        400..=499 => 3,
        _ => 13,
    };
    Some(crate::grpc_code_name(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_the_parent_then_the_rate() {
        let never = Sampler::new(0.0);
        let always = Sampler::new(1.0);
        let id = [0xff; 16];
        assert!(!never.samples(None, &id));
        assert!(always.samples(None, &id));
        let parent = SpanContext {
            trace_id: id,
            span_id: [1; 8],
            flags: 1,
        };
        assert!(never.samples(Some(&parent), &id));
        let half = Sampler::new(0.5);
        let mut low = [0u8; 16];
        low[8] = 0x20;
        assert!(half.samples(None, &low));
        assert!(!half.samples(None, &id));
        assert_eq!(Sampler::rate_of("0.25"), 0.25);
        assert_eq!(Sampler::rate_of(""), Sampler::DEFAULT_RATE);
    }

    #[tokio::test]
    async fn sampled_spans_reach_the_queue_with_their_parent() {
        let (tx, mut rx) = mpsc::channel(4);
        let tracer = Tracer::new(Sampler::new(1.0), Some(tx));
        let root = tracer.start(SpanKind::Client, None).expect("valid in the test");
        let mut child = tracer
            .start(SpanKind::Server, Some(root.context()))
            .expect("valid in the test");
        assert_eq!(child.context().trace_id, root.context().trace_id);
        assert_ne!(child.context().span_id, root.context().span_id);
        child.set_name("CallLocal/a/b");
        child.set_attribute("dapr.protocol", "http");
        child.set_attribute("empty", "");
        child.set_error("NotFound");
        child.end();
        let got = rx.recv().await.expect("valid in the test");
        assert_eq!(got.name(), "CallLocal/a/b");
        assert_eq!(got.parent, Some(root.context().span_id));
        assert_eq!(got.attributes().count(), 1);
        assert_eq!(got.error(), Some("NotFound"));
        drop(root);
        assert!(rx.recv().await.expect("valid in the test").parent.is_none());
    }

    #[test]
    fn unsampled_and_off_tracers_record_nothing() {
        assert!(Tracer::off().start(SpanKind::Server, None).is_none());
        let (tx, mut rx) = mpsc::channel(4);
        let tracer = Tracer::new(Sampler::new(0.0), Some(tx));
        let span = tracer.start(SpanKind::Server, None).expect("valid in the test");
        assert!(!span.recording() && !span.context().sampled());
        span.end();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn http_statuses_map_to_dapr_span_errors() {
        assert_eq!(http_error(204), None);
        assert_eq!(http_error(404), Some("NotFound"));
        assert_eq!(http_error(400), Some("InvalidArgument"));
        assert_eq!(http_error(500), Some("Internal"));
    }
}
