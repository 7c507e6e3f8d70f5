//! State queries: any query text parses or is refused, and running a
//! parsed query over any JSON values never fails.
#![no_main]

use daprs_components::state::query;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = query::parse(data) else { return };
    let rows: Vec<(String, serde_json::Value, ())> = [
        serde_json::json!({"a": {"b": 1}, "s": "x"}),
        serde_json::json!({"a": {"b": "1"}, "s": null}),
        serde_json::json!([1, 2]),
        serde_json::json!("text"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, v)| (i.to_string(), v, ()))
    .collect();
    let _ = query::run(&q, rows);
});
