//! State query through daprd over HTTP and gRPC on the in-memory, SQLite
//! and PostgreSQL stores, with Dapr's query language, pages, the app's own
//! keys only, bad queries and a store without queries.

use daprs_proto::{
    common::StateItem,
    runtime::{QueryStateRequest, SaveStateRequest},
};
use serde_json::{Value, json};

use super::harness::{Daprd, Spec, resources, temp_dir};

fn stores(home: &std::path::Path, table: &str) -> String {
    format!(
        r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: mem}}
spec: {{type: state.in-memory, version: v1}}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: lite}}
spec:
  type: state.sqlite
  version: v1
  metadata: [{{name: connectionString, value: "{}"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: pg}}
spec:
  type: state.postgresql
  version: v1
  metadata:
  - {{name: connectionString, value: "host=127.0.0.1 user=postgres database=test"}}
  - {{name: tableName, value: "{table}"}}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: cache}}
spec:
  type: state.redis
  version: v1
  metadata: [{{name: redisHost, value: "127.0.0.1:6379"}}]
"#,
        home.join("q.db").display()
    )
}

fn employees() -> Value {
    json!([
        {"key": "1", "value": {"person": {"org": "Dev Ops", "id": 1036}, "city": "Seattle", "state": "WA"}},
        {"key": "2", "value": {"person": {"org": "Hardware", "id": 1028}, "city": "Portland", "state": "OR"}},
        {"key": "3", "value": {"person": {"org": "Finance", "id": 1071}, "city": "Sacramento", "state": "CA"}},
        {"key": "4", "value": {"person": {"org": "Dev Ops", "id": 1042}, "city": "Spokane", "state": "WA"}},
        {"key": "5", "value": {"person": {"org": "Dev Ops", "id": 1007}, "city": "San Francisco", "state": "CA"}},
    ])
}

#[tokio::test]
async fn queries_over_http_and_grpc_on_every_store_with_query() {
    let home = temp_dir("query");
    let table = format!("daprs_it_query_{}", std::process::id());
    let res = resources(&home, &stores(&home, &table));
    let start = |id| {
        let mut s = Spec::new(id, &home);
        s.resources = Some(&res);
        Daprd::start(s)
    };
    let (d, other) = (start("querier").await, start("other").await);
    let mut grpc = d.grpc().await;
    for store in ["mem", "lite", "pg"] {
        let r = d
            .send(
                "POST",
                &format!("/v1.0/state/{store}"),
                &[],
                employees().to_string(),
            )
            .await;
        assert_eq!(r.status, 204, "{store}");
        // Another app's items in the same store are not this app's results.
        other
            .send(
                "POST",
                &format!("/v1.0/state/{store}"),
                &[],
                json!([{"key": "9", "value": {"state": "WA"}}]).to_string(),
            )
            .await;

        // A value that is not JSON (written over gRPC, raw) matches no path.
        let mut raw = grpc.clone();
        raw.save_state(SaveStateRequest {
            store_name: store.into(),
            states: vec![StateItem {
                key: "raw".into(),
                value: b"\xff not json".to_vec().into(),
                ..Default::default()
            }],
        })
        .await
        .expect("save raw");

        let q = json!({
            "filter": {"OR": [{"EQ": {"state": "WA"}}, {"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"IN": {"state": ["CA"]}}]}]},
            "sort": [{"key": "person.id", "order": "DESC"}],
            "page": {"limit": 2}
        });
        let r = d
            .send(
                "POST",
                &format!("/v1.0-alpha1/state/{store}/query"),
                &[],
                q.to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{store}: {}", r.text());
        let page = r.json();
        let keys: Vec<&str> = page["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["key"].as_str())
            .collect();
        assert_eq!(keys, ["4", "1"], "{store}");
        assert_eq!(page["results"][0]["data"]["city"], "Spokane");
        assert!(page["results"][0]["etag"].is_string());
        let token = page["token"].as_str().expect("a next page").to_string();

        // The next page, over gRPC.
        let mut next = q.clone();
        next["page"]["token"] = json!(token);
        let res = grpc
            .query_state_alpha1(QueryStateRequest {
                store_name: store.into(),
                query: next.to_string(),
                metadata: Default::default(),
            })
            .await
            .expect("query")
            .into_inner();
        let keys: Vec<&str> = res.results.iter().map(|i| i.key.as_str()).collect();
        assert_eq!((keys, res.token.as_str()), (vec!["5"], ""), "{store}");
        let v: Value = serde_json::from_slice(&res.results[0].data).expect("json");
        assert_eq!(v["city"], "San Francisco");

        // Nothing matches: 204.
        let none = json!({"filter": {"EQ": {"state": "TX"}}});
        let r = d
            .send(
                "PUT",
                &format!("/v1.0-alpha1/state/{store}/query"),
                &[],
                none.to_string(),
            )
            .await;
        assert_eq!(r.status, 204, "{store}");
    }

    // Bad queries and a store that cannot query.
    for (store, body, status, code) in [
        (
            "mem",
            r#"{"filter": {"LIKE": {"a": "b"}}}"#,
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        ("mem", "{not json", 400, "ERR_MALFORMED_REQUEST"),
        (
            "lite",
            r#"{"page": {"token": "nope"}}"#,
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        ("cache", "{}", 500, "ERR_STATE_STORE_NOT_SUPPORTED"),
        ("nostore", "{}", 400, "ERR_STATE_STORE_NOT_FOUND"),
    ] {
        let r = d
            .send("POST", &format!("/v1.0-alpha1/state/{store}/query"), &[], body)
            .await;
        assert_eq!(
            (r.status, r.error_code()),
            (status, code.to_string()),
            "{store} {body}"
        );
    }
    let s = grpc
        .query_state_alpha1(QueryStateRequest {
            store_name: "cache".into(),
            query: "{}".into(),
            metadata: Default::default(),
        })
        .await
        .expect_err("no query on redis");
    assert!(s.message().contains("doesn't support query"), "{s:?}");

    // Bulk delete over HTTP.
    let r = d
        .send(
            "DELETE",
            "/v1.0/state/mem",
            &[],
            json!([{"key": "1"}, {"key": "2"}]).to_string(),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(d.get("/v1.0/state/mem/1").await.map(|r| r.status), Ok(204));
    assert_eq!(d.get("/v1.0/state/mem/3").await.map(|r| r.status), Ok(200));
}
