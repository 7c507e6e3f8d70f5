//! The operator as the envtest tier runs it: in the test's process, on free
//! loopback ports, for the control plane in `dapr-system`.

use std::time::Duration;

use daprs_operator::serve::ServeSettings;

/// Settings for one operator; `owner` names the ConfigMap owning its CA.
pub fn settings(owner: Option<&str>) -> ServeSettings {
    let mut s = ServeSettings::loopback("envtest").unwrap_or_else(|e| panic!("no free port: {e}"));
    s.sentry.workload_ttl = Duration::from_secs(3600);
    s.trust_bundle_owner = owner.map(str::to_string);
    s
}
