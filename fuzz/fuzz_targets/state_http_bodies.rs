//! The state API's HTTP bodies and query strings: save, bulk and transaction.
//! Input: `query \xff body`. No input may panic; every accepted item's TTL
//! metadata is parsed as a store would.
#![no_main]

use daprs_components::state;
use daprs_sidecar::http_api;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let query = std::str::from_utf8(query).ok();
    if let Ok(items) = http_api::decode_save(body, query) {
        for item in &items {
            let _ = state::parse_ttl(&item.metadata);
        }
    }
    let _ = http_api::decode_bulk_keys(body);
    let _ = http_api::decode_transaction(body, query);
    let _ = http_api::query_pairs(query);
});
