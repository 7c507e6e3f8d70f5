//! The injector's metrics with Dapr's names, served on `--metrics-port`.

use std::sync::LazyLock;

use daprs_telemetry::registry::Family;

use crate::admission::Outcome;

/// What the injector records.
pub struct InjectorMetrics {
    requests: Family,
    succeeded: Family,
    failed: Family,
}

/// The process's metrics.
pub static METRICS: LazyLock<InjectorMetrics> = LazyLock::new(|| InjectorMetrics {
    requests: Family::counter(
        "dapr_injector_sidecar_injection_requests_total",
        "The number of sidecar injection requests.",
        &[],
    ),
    succeeded: Family::counter(
        "dapr_injector_sidecar_injection_succeeded_total",
        "The number of pods daprd was added to.",
        &["app_id"],
    ),
    failed: Family::counter(
        "dapr_injector_sidecar_injection_failed_total",
        "The number of Dapr-enabled pods daprd was not added to, by reason.",
        &["app_id", "reason"],
    ),
});

impl InjectorMetrics {
    /// One review and what came of it.
    pub fn record(&self, outcome: &Outcome) {
        self.requests.add(&[], 1.0);
        match outcome {
            Outcome::Injected(app_id) => self.succeeded.add(&[app_id], 1.0),
            Outcome::Skipped(_) => {}
            Outcome::NotAllowed(_) => self.failed.add(&["", "requester_not_allowed"], 1.0),
            Outcome::Denied(_) => self.failed.add(&["", "refused"], 1.0),
        }
    }

    /// Everything recorded, as Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in [&self.requests, &self.succeeded, &self.failed] {
            f.render(&mut out);
        }
        daprs_telemetry::process::render(&mut out);
        out
    }
}
