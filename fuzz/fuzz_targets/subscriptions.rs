//! Subscriptions: any `GET /dapr/subscribe` answer and any routing rule
//! parses or is reported, and routing any event never fails.
#![no_main]

use daprs_sidecar::pubsub::{routing, subscriptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut errors = Vec::new();
    let subs = subscriptions::from_http_app(data, &mut errors);
    let event = serde_json::json!({"type": "t", "data": {"n": 1, "s": "x"}});
    let serde_json::Value::Object(event) = event else {
        return;
    };
    for s in &subs {
        let _ = s.route(&event);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(expr) = routing::parse(text)
    {
        let _ = routing::truth(&expr, &event);
    }
});
