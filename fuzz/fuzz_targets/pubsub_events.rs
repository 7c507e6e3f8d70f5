//! Publishing: any body, content type and request metadata either builds a
//! CloudEvent that is a JSON object subscribers can read, or is refused.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use daprs_sidecar::pubsub::{cloudevent, delivery};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First line: content type; second: metadata as k=v&k=v; the rest: body.
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let ct = parts.next().map(String::from_utf8_lossy);
    let md = parts.next().map(String::from_utf8_lossy).unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let metadata = md
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let origin = cloudevent::Origin {
        app_id: "app",
        pubsub: "ps",
        topic: "t",
        traceparent: None,
        tracestate: None,
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let Ok(bytes) = cloudevent::envelope(body, ct.as_deref(), &metadata, &origin, now) else {
        return;
    };
    let serde_json::Value::Object(ce) = serde_json::from_slice(&bytes).expect("JSON") else {
        panic!("a CloudEvent is an object")
    };
    assert_eq!(ce["topic"], "t");
    let _ = cloudevent::expired(ce.get("expiration").and_then(serde_json::Value::as_str), now);
    let _ = delivery::topic_event_request(&ce, "/route");
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = cloudevent::parse_rfc3339(text);
    }
});
