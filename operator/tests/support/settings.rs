//! `serve` settings for tests: free loopback ports, the default control
//! plane, a quick CA sync and no controllers.

use std::{net::SocketAddr, time::Duration};

use daprs_operator::{sentry::SentrySettings, serve::ServeSettings};

pub fn free() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

pub fn serve_settings() -> ServeSettings {
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
        metrics_addr: Some(free()),
        trust_bundle_owner: None,
        ca_sync_interval: Duration::from_millis(200),
        run_controllers: false,
        identity: "test".into(),
        watchdog: None,
    }
}
