//! The operator's metrics with Dapr's control-plane names: the certificate
//! authority's (`dapr_sentry_*`) and the Service controller's
//! (`dapr_operator_*`). One set per process, served on `--metrics-port`.

use std::sync::LazyLock;

use daprs_telemetry::registry::Family;

/// What the operator records.
pub struct OperatorMetrics {
    pub service_created: Family,
    pub service_updated: Family,
    pub service_deleted: Family,
    pub sign_requests: Family,
    pub sign_success: Family,
    pub sign_failure: Family,
}

/// The process's metrics.
pub static METRICS: LazyLock<OperatorMetrics> = LazyLock::new(|| OperatorMetrics {
    service_created: Family::counter(
        "dapr_operator_service_created_total",
        "The number of <app-id>-dapr Services created.",
        &["app_id"],
    ),
    service_updated: Family::counter(
        "dapr_operator_service_updated_total",
        "The number of <app-id>-dapr Services updated.",
        &["app_id"],
    ),
    service_deleted: Family::counter(
        "dapr_operator_service_deleted_total",
        "The number of <app-id>-dapr Services deleted.",
        &["app_id"],
    ),
    sign_requests: Family::counter(
        "dapr_sentry_cert_sign_request_received_total",
        "The number of certificate signing requests received.",
        &[],
    ),
    sign_success: Family::counter(
        "dapr_sentry_cert_sign_success_total",
        "The number of certificates issued.",
        &[],
    ),
    sign_failure: Family::counter(
        "dapr_sentry_cert_sign_failure_total",
        "The number of signing requests refused or failed, by reason.",
        &["reason"],
    ),
});

impl OperatorMetrics {
    /// Everything recorded, as Prometheus text.
    pub fn render(&self, out: &mut String) {
        for f in [
            &self.service_created,
            &self.service_updated,
            &self.service_deleted,
            &self.sign_requests,
            &self.sign_success,
            &self.sign_failure,
        ] {
            f.render(out);
        }
    }
}
