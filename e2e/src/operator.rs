//! The operator as the envtest tier runs it: in the test's process, on free
//! loopback ports, for the control plane in `dapr-system`.

use std::time::Duration;

use daprs_operator::{sentry::SentrySettings, serve::ServeSettings};

fn free() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Settings for one operator; `owner` names the ConfigMap owning its CA.
pub fn settings(owner: Option<&str>) -> ServeSettings {
    ServeSettings {
        sentry: SentrySettings {
            control_plane_namespace: "dapr-system".into(),
            control_plane_trust_domain: "cluster.local".into(),
            workload_ttl: Duration::from_secs(3600),
            allowed_skew: Duration::from_secs(900),
        },
        sentry_addr: free(),
        api_addr: free(),
        webhook_addr: free(),
        health_addr: free(),
        metrics_addr: None,
        trust_bundle_owner: owner.map(str::to_string),
        ca_sync_interval: Duration::from_secs(1),
        run_controllers: true,
        identity: "envtest".into(),
        watchdog: None,
    }
}
