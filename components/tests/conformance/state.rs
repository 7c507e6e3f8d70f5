//! The state store contract, run against in-memory, SQLite, Redis and PostgreSQL.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use daprs_components::{
    Error,
    registry::Built,
    state::{Concurrency, DeleteRequest, Operation, QUERY_API, SetRequest, StateStore},
};

use crate::unique;

pub async fn open(kind: &str, metadata: &[(&str, &str)]) -> Arc<dyn StateStore> {
    match crate::build(kind, metadata, &Default::default()).await {
        Built::State(s) => s,
        _ => panic!("{kind} is not a state store"),
    }
}

pub fn set(key: &str, value: &str) -> SetRequest {
    SetRequest {
        key: key.into(),
        value: Bytes::from(value.to_string()),
        etag: None,
        concurrency: Concurrency::LastWrite,
        ttl: None,
    }
}

pub async fn value(s: &dyn StateStore, key: &str) -> Option<String> {
    let item = s.get(key).await.expect("get")?;
    Some(String::from_utf8_lossy(&item.data).into_owned())
}

/// Everything a state store promises, on keys of its own.
pub async fn suite(s: Arc<dyn StateStore>) {
    let s = &*s;
    // One hash tag for the run's keys, so a store that shards by slot (a
    // Redis cluster) can run a transaction over them.
    let tag = unique("conf");
    let k = |name: &str| format!("{{{tag}}}||{name}");
    let (a, b, c) = (k("a"), k("b"), k("c"));

    // Write, read, overwrite; absent keys read as None.
    s.set(set(&a, "1")).await.expect("set");
    assert_eq!(value(s, &a).await.as_deref(), Some("1"));
    assert_eq!(value(s, &k("absent")).await, None);
    let e1 = s.get(&a).await.expect("get").expect("item").etag;
    s.set(set(&a, "2")).await.expect("overwrite");
    let e2 = s.get(&a).await.expect("get").expect("item").etag;
    assert_ne!(e1, e2, "every write changes the etag");

    // ETags: the current one writes, a stale one or one on a missing key does not.
    let mut with = set(&a, "3");
    with.etag = Some(e2.clone());
    s.set(with).await.expect("matching etag");
    let mut stale = set(&a, "4");
    stale.etag = Some(e2.clone());
    assert!(matches!(
        s.set(stale).await,
        Err(Error::EtagMismatch(_) | Error::EtagInvalid(_))
    ));
    assert_eq!(
        value(s, &a).await.as_deref(),
        Some("3"),
        "a conflict changes nothing"
    );
    let mut missing = set(&b, "x");
    missing.etag = Some(e2.clone());
    assert!(
        s.set(missing).await.is_err(),
        "an etag never matches a missing key"
    );

    // First-write only creates.
    let mut first = set(&b, "first");
    first.concurrency = Concurrency::FirstWrite;
    s.set(first.clone()).await.expect("creates");
    assert!(matches!(s.set(first).await, Err(Error::EtagMismatch(_))));

    // Delete with a stale etag fails; deleting an absent key succeeds.
    let e3 = s.get(&a).await.expect("get").expect("item").etag;
    let del = |key: &str, etag: Option<String>| DeleteRequest {
        key: key.into(),
        etag,
    };
    assert!(s.delete(del(&a, Some(e2))).await.is_err());
    s.delete(del(&a, Some(e3))).await.expect("delete");
    assert_eq!(value(s, &a).await, None);
    s.delete(del(&k("never"), None)).await.expect("absent");

    // Bulk reads keep the order asked for.
    let got = s.bulk_get(&[b.clone(), c.clone()]).await;
    assert_eq!(got.len(), 2);
    assert!(got[0].as_ref().expect("b").is_some() && got[1].as_ref().expect("c").is_none());

    // A transaction applies all or nothing.
    let ok = vec![Operation::Upsert(set(&c, "tx")), Operation::Delete(del(&b, None))];
    s.transact(ok).await.expect("transaction");
    assert_eq!(value(s, &c).await.as_deref(), Some("tx"));
    assert_eq!(value(s, &b).await, None);
    let mut bad = set(&b, "never");
    bad.etag = Some(s.get(&c).await.expect("get").expect("item").etag + "0");
    let fails = vec![Operation::Upsert(set(&c, "changed")), Operation::Upsert(bad)];
    assert!(s.transact(fails).await.is_err());
    assert_eq!(
        value(s, &c).await.as_deref(),
        Some("tx"),
        "nothing of a failed transaction stays"
    );

    // TTL: the key reads as absent once expired.
    let mut short = set(&a, "brief");
    short.ttl = Some(Duration::from_secs(1));
    s.set(short).await.expect("ttl");
    assert!(s.get(&a).await.expect("get").expect("live").expires_at.is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(value(s, &a).await, None, "expired");
    for key in [a, b, c] {
        let _ = s.delete(del(&key, None)).await;
    }

    // Queries list exactly the live items under a prefix.
    if s.features().contains(&QUERY_API) {
        let p = format!("{}||", unique("scan"));
        s.set(set(&format!("{p}x"), "{\"n\":1}")).await.expect("set");
        s.set(set(&format!("{p}y"), "{\"n\":2}")).await.expect("set");
        let mut gone = set(&format!("{p}z"), "{}");
        gone.ttl = Some(Duration::from_secs(1));
        s.set(gone).await.expect("set");
        s.set(set(&format!("{}x", &p[..p.len() - 1]), "outside"))
            .await
            .expect("set");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut keys: Vec<String> = s
            .scan(&p, None)
            .await
            .expect("scan")
            .expect("listed")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        assert_eq!(keys, [format!("{p}x"), format!("{p}y")]);
        // A store may narrow a scan by the filter, never below what matches.
        let q = daprs_components::state::query::parse(br#"{"filter": {"EQ": {"n": 2}}}"#).expect("query");
        let rows: Vec<_> = s
            .scan(&p, q.filter.as_ref())
            .await
            .expect("scan")
            .expect("listed")
            .into_iter()
            .map(|(k, i)| (k, serde_json::from_slice(&i.data).unwrap_or_default(), ()))
            .collect();
        let (page, _) = daprs_components::state::query::run(&q, rows);
        assert_eq!(
            page.into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
            [format!("{p}y")]
        );
    }
}

#[tokio::test]
async fn in_memory() {
    suite(open("state.in-memory", &[]).await).await;
}

#[tokio::test]
async fn sqlite() {
    let dir = std::env::temp_dir().join(unique("daprs-conf-sqlite"));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("state.db").display().to_string();
    suite(open("state.sqlite", &[("connectionString", &db)]).await).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn redis() {
    suite(open("state.redis", &[("redisHost", "127.0.0.1:6379")]).await).await;
}

#[tokio::test]
async fn postgresql() {
    // Written the way Dapr's documentation writes it (`database`, pool keywords).
    let conn = "host=127.0.0.1 user=postgres port=5432 connect_timeout=10 database=test pool_max_conns=4";
    suite(
        open(
            "state.postgresql",
            &[("connectionString", conn), ("tableName", "daprs_conf_state")],
        )
        .await,
    )
    .await;
}

#[tokio::test]
async fn postgresql_with_a_url_connection_string() {
    let conn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable&application_name=daprs";
    suite(
        open(
            "state.postgresql",
            &[("connectionString", conn), ("tableName", "daprs_conf_state_url")],
        )
        .await,
    )
    .await;
}
