//! State management on every store: CRUD, bulk, transactions, ETags, TTL.

use std::time::Duration;

use daprs_proto::{
    common::{Etag, StateItem},
    runtime::{DeleteStateRequest, GetStateRequest, SaveStateRequest},
};

use super::harness::{Daprd, Spec, resources, temp_dir};

fn component(name: &str, kind: &str, meta: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {kind}\n  version: v1\n  metadata:"
    );
    if meta.is_empty() {
        s.push_str(" []");
    }
    s.push('\n');
    for (k, v) in meta {
        s.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    s
}

async fn store_daprd(name: &str, kind: &str, meta: &[(&str, &str)]) -> (Daprd, std::path::PathBuf) {
    let home = temp_dir(name);
    // Redis and PostgreSQL keep keys from earlier runs, and port numbers
    // come round again: the app-id (the key prefix) must not.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let app_id = format!("{name}-{nanos:x}");
    let res = resources(&home, &component("store", kind, meta));
    let d = Daprd::start(Spec {
        resources: Some(&res),
        ..Spec::new(&app_id, &home)
    })
    .await;
    (d, home)
}

async fn etag_of(d: &Daprd, key: &str) -> String {
    let r = d.send("GET", &format!("/v1.0/state/store/{key}"), &[], "").await;
    assert_eq!(r.status, 200, "get {key}: {}", r.text());
    r.header("etag").expect("etag header").to_string()
}

/// The largest TTL is kept and read back; one second more, or a TTL whose
/// expiry would not fit in the store's clock, is refused on every way in, and
/// the store goes on serving.
async fn ttl_edges(d: &Daprd) {
    let r = d
        .send(
            "POST",
            "/v1.0/state/store",
            &[],
            r#"[{"key":"ttl-max","value":"far","metadata":{"ttlInSeconds":"2147483647"}}]"#,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = d.send("GET", "/v1.0/state/store/ttl-max", &[], "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "\"far\""));
    assert!(
        r.header("metadata.ttlexpiretime")
            .is_some_and(|t| t.starts_with("20"))
    );
    for ttl in [
        "2147483648",
        "10000000000000000",
        "9223372036854775807",
        "99999999999999999999",
    ] {
        let body = format!(r#"[{{"key":"ttl-bad","value":1,"metadata":{{"ttlInSeconds":"{ttl}"}}}}]"#);
        let r = d.send("POST", "/v1.0/state/store", &[], body).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "ERR_MALFORMED_REQUEST"),
            "{ttl}"
        );
        let path = format!("/v1.0/state/store?metadata.ttlInSeconds={ttl}");
        let r = d
            .send("POST", &path, &[], r#"[{"key":"ttl-bad","value":1}]"#)
            .await;
        assert_eq!(r.status, 400, "query {ttl}");
        let tx = format!(
            r#"{{"operations":[{{"operation":"upsert","request":{{"key":"ttl-bad","value":1,"metadata":{{"ttlInSeconds":"{ttl}"}}}}}}]}}"#
        );
        let r = d.send("POST", "/v1.0/state/store/transaction", &[], tx).await;
        assert_eq!(r.status, 400, "transaction {ttl}");
        let err = d
            .grpc()
            .await
            .save_state(SaveStateRequest {
                store_name: "store".into(),
                states: vec![StateItem {
                    key: "ttl-bad".into(),
                    value: bytes::Bytes::from_static(b"1"),
                    metadata: [("ttlInSeconds".to_string(), ttl.to_string())].into(),
                    ..Default::default()
                }],
            })
            .await
            .expect_err("out-of-range TTL");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "gRPC {ttl}");
    }
    // Nothing was written, and the store still serves reads and writes.
    assert_eq!(
        d.send("GET", "/v1.0/state/store/ttl-bad", &[], "").await.status,
        204
    );
    let r = d
        .send("POST", "/v1.0/state/store", &[], r#"[{"key":"after","value":2}]"#)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        d.send("GET", "/v1.0/state/store/after", &[], "").await.text(),
        "2"
    );
}

/// The behaviour every state store must show.
async fn exercise(d: &Daprd) {
    let save = |body: &str| {
        d.send(
            "POST",
            "/v1.0/state/store",
            &[("content-type", "application/json")],
            body.to_string(),
        )
    };

    // Save and read back.
    let r = save(r#"[{"key":"k1","value":{"b":2,"a":1}},{"key":"k2","value":"text"}]"#).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = d.send("GET", "/v1.0/state/store/k1", &[], "").await;
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"a":1,"b":2}"#));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        d.send("GET", "/v1.0/state/store/k2", &[], "").await.text(),
        r#""text""#
    );
    assert_eq!(
        d.send("GET", "/v1.0/state/store/absent", &[], "").await.status,
        204
    );

    // ETags: a matching one updates and changes the ETag, a stale one conflicts.
    let e1 = etag_of(d, "k1").await;
    let r = save(&format!(r#"[{{"key":"k1","value":3,"etag":"{e1}"}}]"#)).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let e2 = etag_of(d, "k1").await;
    assert_ne!(e1, e2);
    let r = save(&format!(r#"[{{"key":"k1","value":4,"etag":"{e1}"}}]"#)).await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "ERR_STATE_SAVE"));
    assert_eq!(
        d.send("GET", "/v1.0/state/store/k1", &[], "").await.text(),
        "3",
        "a conflict changes nothing"
    );

    // Delete honours If-Match.
    let r = d
        .send("DELETE", "/v1.0/state/store/k1", &[("if-match", &e1)], "")
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "ERR_STATE_DELETE"));
    assert_eq!(
        d.send("DELETE", "/v1.0/state/store/k1", &[("if-match", &e2)], "")
            .await
            .status,
        204
    );
    assert_eq!(d.send("GET", "/v1.0/state/store/k1", &[], "").await.status, 204);
    assert_eq!(
        d.send("DELETE", "/v1.0/state/store/never", &[], "").await.status,
        204
    );

    // First-write concurrency only creates.
    let fw =
        r#"[{"key":"k3","value":"first","options":{"concurrency":"first-write","consistency":"strong"}}]"#;
    assert_eq!(save(fw).await.status, 204);
    let r = save(fw).await;
    assert_eq!(r.status, 409);

    // Bulk get keeps request order and reports missing keys without data.
    let r = d
        .send(
            "POST",
            "/v1.0/state/store/bulk",
            &[],
            r#"{"keys":["k2","nope","k3"],"parallelism":2}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v[0]["key"], "k2");
    assert_eq!(v[0]["data"], "text");
    assert!(v[0]["etag"].is_string());
    assert_eq!(v[1]["key"], "nope");
    assert!(v[1].get("data").is_none());
    assert_eq!(v[2]["data"], "first");

    // Transactions apply everything...
    let tx = r#"{"operations":[
        {"operation":"upsert","request":{"key":"t1","value":1}},
        {"operation":"upsert","request":{"key":"t2","value":{"n":2}}},
        {"operation":"delete","request":{"key":"k2"}}]}"#;
    let r = d.send("POST", "/v1.0/state/store/transaction", &[], tx).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        d.send("GET", "/v1.0/state/store/t2", &[], "").await.text(),
        r#"{"n":2}"#
    );
    assert_eq!(d.send("GET", "/v1.0/state/store/k2", &[], "").await.status, 204);
    // ...or nothing.
    let stale = etag_of(d, "t1").await;
    save(r#"[{"key":"t1","value":10}]"#).await;
    let tx = format!(
        r#"{{"operations":[{{"operation":"upsert","request":{{"key":"t3","value":3}}}},
        {{"operation":"upsert","request":{{"key":"t1","value":11,"etag":"{stale}"}}}}]}}"#
    );
    let r = d.send("POST", "/v1.0/state/store/transaction", &[], tx).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "ERR_STATE_TRANSACTION")
    );
    assert_eq!(
        d.send("GET", "/v1.0/state/store/t3", &[], "").await.status,
        204,
        "t3 was rolled back"
    );
    assert_eq!(d.send("GET", "/v1.0/state/store/t1", &[], "").await.text(), "10");
    let r = d
        .send(
            "POST",
            "/v1.0/state/store/transaction",
            &[],
            r#"{"operations":[{"operation":"merge","request":{"key":"x"}}]}"#,
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_NOT_SUPPORTED_STATE_OPERATION")
    );

    // TTL: the key is there with its expiry time, then gone.
    let r = d
        .send(
            "POST",
            "/v1.0/state/store?metadata.ttlInSeconds=1",
            &[],
            r#"[{"key":"ttl","value":"short"}]"#,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = d.send("GET", "/v1.0/state/store/ttl", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("metadata.ttlexpiretime")
            .is_some_and(|t| t.ends_with('Z'))
    );
    let r = d
        .send(
            "POST",
            "/v1.0/state/store",
            &[],
            r#"[{"key":"keep","value":1,"metadata":{"ttlInSeconds":"-1"}}]"#,
        )
        .await;
    assert_eq!(r.status, 204);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        d.send("GET", "/v1.0/state/store/ttl", &[], "").await.status,
        204,
        "expired"
    );
    assert_eq!(d.send("GET", "/v1.0/state/store/keep", &[], "").await.status, 200);
    ttl_edges(d).await;

    // Bad input: each a clear 4xx.
    for (body, code) in [
        ("{not json", "ERR_MALFORMED_REQUEST"),
        (r#"[{"value":1}]"#, "ERR_MALFORMED_REQUEST"),
        (r#"[{"key":"a||b","value":1}]"#, "ERR_MALFORMED_REQUEST"),
        (r#"[{"key":"","value":1}]"#, "ERR_MALFORMED_REQUEST"),
        (
            r#"[{"key":"x","value":1,"metadata":{"ttlInSeconds":"soon"}}]"#,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            r#"[{"key":"x","value":1,"options":{"concurrency":"sometimes"}}]"#,
            "ERR_MALFORMED_REQUEST",
        ),
    ] {
        let r = save(body).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, code),
            "{body}: {}",
            r.text()
        );
    }
    let r = d.send("POST", "/v1.0/state/nostore", &[], "[]").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_STATE_STORE_NOT_FOUND")
    );
    let r = d
        .send("GET", "/v1.0/state/store/x?consistency=psychic", &[], "")
        .await;
    assert_eq!(r.status, 400);
    let r = d
        .send("POST", "/v1.0/state/store/bulk", &[], r#"{"keys":"k1"}"#)
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    let r = d.send("POST", "/v1.0/state/store/other", &[], "{}").await;
    assert_eq!(r.status, 405);

    // The gRPC API on the same store.
    let mut c = d.grpc().await;
    let item = |key: &str, value: &[u8], etag: Option<&str>| StateItem {
        key: key.into(),
        value: value.to_vec().into(),
        etag: etag.map(|e| Etag { value: e.into() }),
        ..Default::default()
    };
    c.save_state(SaveStateRequest {
        store_name: "store".into(),
        states: vec![item("g1", b"raw bytes", None)],
    })
    .await
    .expect("save");
    let got = c
        .get_state(GetStateRequest {
            store_name: "store".into(),
            key: "g1".into(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.data.as_ref(), b"raw bytes");
    assert!(!got.etag.is_empty());
    assert_eq!(
        d.send("GET", "/v1.0/state/store/g1", &[], "").await.text(),
        "raw bytes",
        "gRPC bytes are stored raw"
    );
    let err = c
        .save_state(SaveStateRequest {
            store_name: "store".into(),
            states: vec![item("g1", b"x", Some("999999"))],
        })
        .await
        .expect_err("stale etag");
    assert_eq!(err.code(), tonic::Code::Aborted);
    let missing = c
        .get_state(GetStateRequest {
            store_name: "store".into(),
            key: "none".into(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert!(missing.data.is_empty() && missing.etag.is_empty());
    c.delete_state(DeleteStateRequest {
        store_name: "store".into(),
        key: "g1".into(),
        etag: Some(Etag { value: got.etag }),
        ..Default::default()
    })
    .await
    .expect("delete");
    let err = c
        .get_state(GetStateRequest {
            store_name: "nostore".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("no store");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn in_memory_store() {
    let (d, _home) = store_daprd("mem", "state.in-memory", &[]).await;
    exercise(&d).await;
}

#[tokio::test]
async fn sqlite_store() {
    let home = temp_dir("sqlite-file");
    let db = home.join("state.db").display().to_string();
    let (d, _home) = store_daprd("sqlite", "state.sqlite", &[("connectionString", &db)]).await;
    exercise(&d).await;
}

#[tokio::test]
async fn redis_store() {
    let (d, _home) = store_daprd("redis", "state.redis", &[("redisHost", "127.0.0.1:6379")]).await;
    exercise(&d).await;
    // Redis ETags are version numbers; anything else is invalid.
    let r = d
        .send(
            "POST",
            "/v1.0/state/store",
            &[],
            r#"[{"key":"k","value":1,"etag":"not-a-number"}]"#,
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "ERR_STATE_SAVE"));
}

#[tokio::test]
async fn postgresql_store() {
    let (d, _home) = store_daprd(
        "pg",
        "state.postgresql",
        &[
            (
                "connectionString",
                "host=127.0.0.1 port=5432 user=postgres dbname=test",
            ),
            ("tableName", "daprs_it_state"),
        ],
    )
    .await;
    exercise(&d).await;
}

#[tokio::test]
async fn sqlite_data_survives_a_restart_including_embedded_defaults() {
    let home = temp_dir("restart");
    let d = Daprd::start(Spec::new("restart", &home)).await;
    let r = d
        .send(
            "POST",
            "/v1.0/state/statestore",
            &[],
            r#"[{"key":"survivor","value":{"alive":true}}]"#,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    d.stop();
    let d = Daprd::start(Spec::new("restart", &home)).await;
    let r = d.send("GET", "/v1.0/state/statestore/survivor", &[], "").await;
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"alive":true}"#));
    assert!(
        home.join("state.db").exists(),
        "embedded default keeps data in the data folder"
    );
}

#[tokio::test]
async fn keys_are_prefixed_per_app_unless_configured() {
    let home = temp_dir("prefix");
    let db = home.join("shared.db").display().to_string();
    let yaml = component("store", "state.sqlite", &[("connectionString", &db)]);
    let shared = component(
        "shared",
        "state.sqlite",
        &[
            ("connectionString", &db),
            ("keyPrefix", "none"),
            ("tableName", "plain"),
        ],
    );
    let res = resources(&home, &format!("{yaml}---\n{shared}"));
    let a = Daprd::start(Spec {
        resources: Some(&res),
        ..Spec::new("pa", &home)
    })
    .await;
    let b = Daprd::start(Spec {
        resources: Some(&res),
        ..Spec::new("pb", &home)
    })
    .await;
    a.send(
        "POST",
        "/v1.0/state/store",
        &[],
        r#"[{"key":"same","value":"from a"}]"#,
    )
    .await;
    assert_eq!(
        b.send("GET", "/v1.0/state/store/same", &[], "").await.status,
        204,
        "apps do not see each other's keys"
    );
    a.send(
        "POST",
        "/v1.0/state/shared",
        &[],
        r#"[{"key":"same","value":"shared"}]"#,
    )
    .await;
    assert_eq!(
        b.send("GET", "/v1.0/state/shared/same", &[], "").await.text(),
        r#""shared""#
    );
}
