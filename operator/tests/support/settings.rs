//! `serve` settings for tests: free loopback ports, the default control
//! plane, a quick CA sync and no controllers.

use std::{net::SocketAddr, time::Duration};

use daprs_operator::serve::ServeSettings;

pub fn free() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

pub fn serve_settings() -> ServeSettings {
    let mut s = ServeSettings::loopback("test").expect("free ports");
    s.sentry.workload_ttl = Duration::from_secs(3600);
    s.metrics_addr = Some(free());
    s.ca_sync_interval = Duration::from_millis(200);
    s.run_controllers = false;
    s
}
