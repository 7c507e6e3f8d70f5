//! The binding contract, run against every binding on its real server:
//! output operations and their answers, input events delivered and
//! redelivered after a refusal, the cron schedule's timing, and refused
//! operations.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use daprs_components::{
    Error, Metadata,
    bindings::{Binding, Event, Handler, Request},
    registry::Built,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{md, unique};

async fn open(kind: &str, metadata: &[(&str, &str)]) -> Arc<dyn Binding> {
    match crate::build(kind, metadata, &Default::default()).await {
        Built::Binding(b) => b,
        _ => panic!("{kind} is not a binding"),
    }
}

fn call(op: &str, data: &str, metadata: &[(&str, &str)]) -> Request {
    Request {
        operation: op.into(),
        data: Bytes::from(data.to_string()),
        metadata: md(metadata),
    }
}

/// Events a handler received; it refuses the first one when asked to.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(Instant, Event)>>>);

impl Received {
    fn handler(&self, refuse_first: bool) -> Handler {
        let got = self.0.clone();
        Arc::new(move |e: Event| {
            let got = got.clone();
            Box::pin(async move {
                let mut g = got.lock().expect("lock");
                g.push((Instant::now(), e));
                if refuse_first && g.len() == 1 {
                    return Err("not now".to_string());
                }
                Ok(())
            })
        })
    }

    async fn wait(&self, n: usize) -> Vec<(Instant, Event)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.0.lock().expect("lock").clone();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{} of {n} events arrived", got.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn cron_fires_on_schedule() {
    // Every second in a zone half an hour off UTC still lands on whole
    // seconds, and the events name the zone.
    let b = open(
        "bindings.cron",
        &[("schedule", "CRON_TZ=Asia/Kolkata * * * * * *")],
    )
    .await;
    assert!(b.operations() == ["delete"] && b.is_input());
    let got = Received::default();
    let _reading = b.read(got.handler(false)).await.expect("read");
    let events = got.wait(3).await;
    let unix = |t: Instant| std::time::SystemTime::now() - Instant::now().saturating_duration_since(t);
    for (t, e) in &events {
        // Each firing lands within 100 ms of a whole second.
        let ms = unix(*t)
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .subsec_millis();
        assert!(!(100..=900).contains(&ms), "fired {ms} ms past the second");
        assert!(e.metadata.contains_key("readTimeUTC"));
        assert_eq!(e.metadata["timeZone"], "Asia/Kolkata");
    }
    let gaps: Vec<u128> = events.windows(2).map(|w| (w[1].0 - w[0].0).as_millis()).collect();
    assert!(gaps.iter().all(|g| (900..=1100).contains(g)), "{gaps:?}");
    let every = open("bindings.cron", &[("schedule", "@every 300ms")]).await;
    let got = Received::default();
    let start = Instant::now();
    let reading = every.read(got.handler(false)).await.expect("read");
    let first = got.wait(1).await[0].0 - start;
    assert!((200..=400).contains(&first.as_millis()), "{first:?}");
    // `delete` stops the schedule.
    every.invoke(call("delete", "", &[])).await.expect("delete");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = got.0.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(got.0.lock().expect("lock").len(), n, "fired after delete");
    drop(reading);
    assert!(matches!(
        crate::try_build("bindings.cron", &[("schedule", "61 * * * * *")], &Default::default()).await,
        Err(e) if e.contains("61")
    ));
}

/// A one-request-at-a-time HTTP server that answers with what it was sent.
async fn echo_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0usize);
                        while buf.len() < i + 4 + len {
                            let Ok(n) = s.read(&mut chunk).await else { return };
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        break (head, String::from_utf8_lossy(&buf[i + 4..]).to_string());
                    }
                };
                let first = head.lines().next().unwrap_or_default().to_string();
                let header = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("X-Token: ")
                            .or_else(|| l.strip_prefix("x-token: "))
                    })
                    .unwrap_or_default()
                    .to_string();
                let status = if first.contains("/missing") {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let out = serde_json::json!({"line": first, "token": header, "body": body}).to_string();
                let res = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-answer: yes\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{out}",
                    out.len()
                );
                let _ = s.write_all(res.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn http_calls_the_endpoint() {
    let port = echo_server().await;
    let b = open(
        "bindings.http",
        &[("url", &format!("http://127.0.0.1:{port}/api"))],
    )
    .await;
    let res = b
        .invoke(call(
            "create",
            "hello",
            &[("path", "orders/1"), ("X-Token", "t1"), ("lower", "not a header")],
        ))
        .await
        .expect("post");
    let echo: serde_json::Value = serde_json::from_slice(&res.data.expect("body")).expect("json");
    assert_eq!(echo["line"], "POST /api/orders/1 HTTP/1.1");
    assert_eq!(
        (echo["token"].as_str(), echo["body"].as_str()),
        (Some("t1"), Some("hello"))
    );
    assert_eq!(res.metadata.get("statusCode").map(String::as_str), Some("200"));
    assert_eq!(res.metadata.get("status").map(String::as_str), Some("200 OK"));
    assert_eq!(res.metadata.get("x-answer").map(String::as_str), Some("yes"));
    let res = b.invoke(call("get", "", &[])).await.expect("get");
    assert!(String::from_utf8_lossy(&res.data.expect("body")).contains("GET /api HTTP/1.1"));
    let err = b
        .invoke(call("get", "", &[("path", "missing")]))
        .await
        .expect_err("404");
    assert!(err.to_string().contains("404"), "{err}");
    assert!(
        matches!(b.invoke(call("explode", "", &[])).await, Err(Error::Invalid(e)) if e.contains("create, get"))
    );
}

#[tokio::test]
async fn localstorage_keeps_files_in_its_root() {
    let root = std::env::temp_dir().join(unique("daprs-local"));
    let b = open(
        "bindings.localstorage",
        &[("rootPath", &root.display().to_string())],
    )
    .await;
    b.invoke(call("create", "one", &[("fileName", "a.txt")]))
        .await
        .expect("create");
    let made = b
        .invoke(call("create", "two", &[]))
        .await
        .expect("create unnamed");
    let name = made.metadata["fileName"].clone();
    let got = b
        .invoke(call("get", "", &[("fileName", "a.txt")]))
        .await
        .expect("get");
    assert_eq!(got.data.as_deref(), Some(&b"one"[..]));
    let list = b.invoke(call("list", "", &[])).await.expect("list");
    let names: Vec<String> = serde_json::from_slice(&list.data.expect("names")).expect("json");
    assert_eq!(names.len(), 2);
    assert!(names.contains(&name));
    for bad in ["../escape", "/etc/passwd", "a/../../b", ""] {
        let e = b
            .invoke(call("get", "", &[("fileName", bad)]))
            .await
            .expect_err(bad);
        assert!(matches!(e, Error::Invalid(_)), "{bad}: {e}");
    }
    b.invoke(call("delete", "", &[("fileName", "a.txt")]))
        .await
        .expect("delete");
    assert!(matches!(
        b.invoke(call("get", "", &[("fileName", "a.txt")])).await,
        Err(Error::NotFound(_))
    ));
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn redis_sets_gets_and_counts() {
    let b = open("bindings.redis", &[("redisHost", "127.0.0.1:6379")]).await;
    let key = unique("bind");
    b.invoke(call("create", "v1", &[("key", &key), ("ttlInSeconds", "60")]))
        .await
        .expect("create");
    let got = b.invoke(call("get", "", &[("key", &key)])).await.expect("get");
    assert_eq!(got.data.as_deref(), Some(&b"v1"[..]));
    let counter = unique("count");
    b.invoke(call("increment", "", &[("key", &counter)]))
        .await
        .expect("incr");
    let n = b
        .invoke(call("increment", "", &[("key", &counter)]))
        .await
        .expect("incr");
    assert_eq!(n.data.as_deref(), Some(&b"2"[..]));
    b.invoke(call("delete", "", &[("key", &key)]))
        .await
        .expect("delete");
    assert_eq!(
        b.invoke(call("get", "", &[("key", &key)]))
            .await
            .expect("get")
            .data,
        None
    );
    assert!(b.invoke(call("create", "v", &[])).await.is_err(), "no key");
}

#[tokio::test]
async fn postgresql_execs_and_queries_with_parameters() {
    let b = open(
        "bindings.postgresql",
        &[("connectionString", "host=127.0.0.1 user=postgres database=test")],
    )
    .await;
    let t = unique("bind").replace('-', "_");
    b.invoke(call(
        "exec",
        "",
        &[(
            "sql",
            &format!("CREATE TABLE {t} (id int, name text, tags jsonb)"),
        )],
    ))
    .await
    .expect("create table");
    let res = b
        .invoke(call(
            "exec",
            "",
            &[
                (
                    "sql",
                    &format!("INSERT INTO {t} VALUES ($1, $2, $3), ($4, $5, NULL)"),
                ),
                ("params", r#"[1, "one", {"a": 1}, "2", "two"]"#),
            ],
        ))
        .await
        .expect("insert");
    assert_eq!(res.metadata["rows-affected"], "2");
    let rows = b
        .invoke(call(
            "query",
            "",
            &[
                (
                    "sql",
                    &format!("SELECT id, name, tags FROM {t} WHERE id >= $1 ORDER BY id"),
                ),
                ("params", "[1]"),
            ],
        ))
        .await
        .expect("query");
    let rows: serde_json::Value = serde_json::from_slice(&rows.data.expect("rows")).expect("json");
    assert_eq!(rows, serde_json::json!([[1, "one", {"a": 1}], [2, "two", null]]));
    let bad = b
        .invoke(call("query", "", &[("sql", "SELECT $1::int"), ("params", "[]")]))
        .await;
    assert!(matches!(bad, Err(Error::Invalid(e)) if e.contains("1 parameters")));
    b.invoke(call("exec", "", &[("sql", &format!("DROP TABLE {t}"))]))
        .await
        .expect("drop");
}

/// Output then input on a queue or topic: the event arrives, and one the
/// handler refused comes again.
async fn round_trip(b: Arc<dyn Binding>, publish: Metadata) {
    let got = Received::default();
    let _reading = b.read(got.handler(true)).await.expect("read");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let payload = unique("payload");
    b.invoke(Request {
        operation: "create".into(),
        data: Bytes::from(payload.clone()),
        metadata: publish,
    })
    .await
    .expect("create");
    let events = got.wait(2).await;
    assert_eq!(events[0].1.data, Bytes::from(payload.clone()));
    assert_eq!(
        events[1].1.data,
        Bytes::from(payload),
        "a refused event is delivered again"
    );
}

#[tokio::test]
async fn rabbitmq_queues_both_ways() {
    let q = unique("bind-q");
    let b = open(
        "bindings.rabbitmq",
        &[
            ("host", "amqp://guest:guest@127.0.0.1:5672"),
            ("queueName", &q),
            ("durable", "false"),
            ("deleteWhenUnused", "true"),
        ],
    )
    .await;
    round_trip(b, Metadata::new()).await;
}

#[tokio::test]
async fn mqtt_topics_both_ways() {
    let topic = unique("bind/t");
    let b = open(
        "bindings.mqtt3",
        &[
            ("url", "tcp://127.0.0.1:1883"),
            ("topic", &topic),
            ("consumerID", &unique("c")),
            ("qos", "1"),
        ],
    )
    .await;
    round_trip(b, Metadata::new()).await;
}
