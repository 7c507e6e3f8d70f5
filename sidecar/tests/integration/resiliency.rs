//! Resiliency policies with small test apps: retries seen in the app's call
//! count, timeouts that fire on time, a circuit breaker that opens and
//! half-opens, a state store call retried on a real Redis, and proxied gRPC.

use std::{
    collections::HashMap,
    process::Command,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    routing::any,
};

use super::{
    harness::{Daprd, Spec, free_port, resources, start_fails, temp_dir},
    metrics::{scrape, value},
    proxy::{echo::Msg, echo_app},
};

/// Calls per route, and how many more times `/flaky/{key}` fails.
#[derive(Clone, Default)]
struct Counts {
    calls: Arc<Mutex<HashMap<String, usize>>>,
}

impl Counts {
    fn bump(&self, key: &str) -> usize {
        let mut m = self.calls.lock().expect("counts");
        let n = m.entry(key.to_string()).or_default();
        *n += 1;
        *n
    }
    fn get(&self, key: &str) -> usize {
        self.calls.lock().expect("counts").get(key).copied().unwrap_or(0)
    }
}

/// `/flaky/{key}/{n}` fails with 503 for its first n calls; `/slow/{ms}`
/// answers late; `/down` always fails; `/ok` always answers.
async fn app() -> (Counts, u16) {
    let counts = Counts::default();
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let router = Router::new()
        .route(
            "/flaky/{key}/{n}",
            any(
                |State(c): State<Counts>, Path((key, n)): Path<(String, usize)>| async move {
                    if c.bump(&key) <= n {
                        (StatusCode::SERVICE_UNAVAILABLE, "not yet")
                    } else {
                        (StatusCode::OK, "at last")
                    }
                },
            ),
        )
        .route(
            "/slow/{ms}",
            any(|State(c): State<Counts>, Path(ms): Path<u64>| async move {
                c.bump("slow");
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "late"
            }),
        )
        .route(
            "/down",
            any(|State(c): State<Counts>| async move {
                c.bump("down");
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .route(
            "/ok",
            any(|State(c): State<Counts>| async move {
                c.bump("ok");
                "fine"
            }),
        )
        .with_state(counts.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (counts, port)
}

const POLICIES: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: policies
spec:
  policies:
    timeouts:
      quick: 300ms
    retries:
      threeQuick:
        policy: constant
        duration: 20ms
        maxRetries: 3
      onlyServerErrors:
        policy: constant
        duration: 20ms
        maxRetries: 2
        matching:
          httpStatusCodes: "500"
    circuitBreakers:
      twoStrikes:
        maxRequests: 1
        timeout: 1s
        trip: consecutiveFailures >= 2
  targets:
    apps:
      res-target:
        timeout: quick
        retry: threeQuick
      res-breaker:
        circuitBreaker: twoStrikes
      res-matching:
        retry: onlyServerErrors
"#;

async fn caller(home: &std::path::Path, extra: &str) -> Daprd {
    let res = resources(home, &format!("{POLICIES}{extra}"));
    Daprd::start(Spec {
        resources: Some(&res),
        ..Spec::new("res-caller", home)
    })
    .await
}

async fn target(home: &std::path::Path, id: &str, port: u16, protocol: &str) -> Daprd {
    Daprd::start(Spec {
        app_port: Some(port),
        protocol,
        ..Spec::new(id, home)
    })
    .await
}

#[tokio::test]
async fn retries_and_timeouts_on_app_calls() {
    let home = temp_dir("res-apps");
    let (counts, port) = app().await;
    let _t = target(&home, "res-target", port, "http").await;
    let _m = target(&home, "res-matching", port, "http").await;
    let c = caller(&home, "").await;

    // Fails twice, then succeeds: the caller sees 200 and the app three calls.
    let r = c
        .send("GET", "/v1.0/invoke/res-target/method/flaky/a/2", &[], "")
        .await;
    assert_eq!((r.status, r.text().as_str()), (200, "at last"));
    assert_eq!(counts.get("a"), 3);
    // Fails five times: three retries are not enough; the app's answer comes back.
    let r = c
        .send("GET", "/v1.0/invoke/res-target/method/flaky/b/5", &[], "")
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(counts.get("b"), 4);
    // Dapr's resiliency metrics: two calls under each policy, five retries.
    let s = scrape(&c).await;
    let labels = |policy| {
        [
            ("app_id", "res-caller"),
            ("name", "policies"),
            ("flow_direction", "outbound"),
            ("target", "app_res-target"),
            ("policy", policy),
        ]
    };
    assert_eq!(value(&s, "dapr_resiliency_count", &labels("retry")), Some(2.0));
    assert_eq!(value(&s, "dapr_resiliency_count", &labels("timeout")), Some(2.0));
    assert_eq!(
        value(&s, "dapr_resiliency_activations_total", &labels("retry")),
        Some(5.0)
    );
    // Only the matching codes are retried: 503 is not in "500".
    let r = c
        .send("GET", "/v1.0/invoke/res-matching/method/flaky/c/1", &[], "")
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(counts.get("c"), 1);

    // A slow app: each attempt is cut at 300 ms (then retried); with a
    // caller's own single try the timeout fires on time.
    let home2 = temp_dir("res-timeout");
    let _t2 = target(&home2, "res-target", port, "http").await;
    let once = POLICIES.replace("maxRetries: 3", "maxRetries: 0");
    let res = resources(&home2, &once);
    let c2 = Daprd::start(Spec {
        resources: Some(&res),
        ..Spec::new("res-caller2", &home2)
    })
    .await;
    let started = Instant::now();
    let r = c2
        .send("GET", "/v1.0/invoke/res-target/method/slow/2000", &[], "")
        .await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "ERR_DIRECT_INVOKE"),
        "{}",
        r.text()
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(350),
        "the timeout fired after {took:?}"
    );
}

#[tokio::test]
async fn a_circuit_breaker_opens_then_half_opens_after_its_timeout() {
    let home = temp_dir("res-breaker");
    let (counts, port) = app().await;
    let _t = target(&home, "res-breaker", port, "http").await;
    let c = caller(&home, "").await;
    let call = |path: &'static str| c.send("GET", path, &[], "");
    // Two failures trip it.
    for _ in 0..2 {
        assert_eq!(call("/v1.0/invoke/res-breaker/method/down").await.status, 500);
    }
    assert_eq!(counts.get("down"), 2);
    // Open: refused without reaching the app, even for a route that works.
    let r = call("/v1.0/invoke/res-breaker/method/ok").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("open"), "{}", r.text());
    assert_eq!(counts.get("ok"), 0);
    // After its 1 s timeout one probe goes through, and its success closes it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call("/v1.0/invoke/res-breaker/method/ok").await.status, 200);
    assert_eq!(call("/v1.0/invoke/res-breaker/method/ok").await.status, 200);
    assert_eq!(counts.get("ok"), 2);
    // Each change of state is one activation, labelled with the new state.
    let s = scrape(&c).await;
    for state in ["open", "half-open", "closed"] {
        let labels = [
            ("target", "app_res-breaker"),
            ("policy", "circuitbreaker"),
            ("status", state),
        ];
        assert_eq!(
            value(&s, "dapr_resiliency_activations_total", &labels),
            Some(1.0),
            "{state}"
        );
    }
    let closed = [
        ("target", "app_res-breaker"),
        ("policy", "circuitbreaker"),
        ("status", "closed"),
    ];
    assert_eq!(value(&s, "dapr_resiliency_count", &closed), Some(3.0));
}

/// A Redis of the test's own (other tests share the machine's), killed on drop.
struct OwnRedis(std::process::Child, u16);

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl OwnRedis {
    async fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self(child, port)
    }

    fn cli(&self, args: &[&str]) {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.1.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "{out:?}");
    }
}

#[tokio::test]
async fn a_failing_state_store_call_is_retried_on_a_real_redis() {
    let redis = OwnRedis::start().await;
    let home = temp_dir("res-redis");
    let store = |name: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:{}\n---\n",
            redis.1
        )
    };
    let yaml = format!(
        "{}{}{}",
        store("guarded"),
        store("plain"),
        r#"apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: store-policy
spec:
  policies:
    retries:
      patient:
        policy: constant
        duration: 50ms
        maxRetries: 40
  targets:
    components:
      guarded:
        outbound:
          retry: patient
"#
    );
    let res = resources(&home, &yaml);
    let d = Daprd::start(Spec {
        resources: Some(&res),
        ..Spec::new("res-redis", &home)
    })
    .await;
    // Redis refuses writes (out of memory) until the limit is lifted.
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    let r = d
        .send("POST", "/v1.0/state/plain", &[], r#"[{"key":"k","value":"v"}]"#)
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_STATE_SAVE"),
        "no policy: fails at once"
    );
    let lift = {
        let port = redis.1;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Command::new("redis-cli")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "CONFIG",
                    "SET",
                    "maxmemory",
                    "0",
                ])
                .output()
        })
    };
    let started = Instant::now();
    let r = d
        .send("POST", "/v1.0/state/guarded", &[], r#"[{"key":"k","value":"v"}]"#)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert!(lift.await.expect("join").expect("redis-cli").status.success());
    // Counted against the store, as Dapr labels a component target.
    let s = scrape(&d).await;
    let retry = [
        ("name", "store-policy"),
        ("target", "statestore_guarded"),
        ("policy", "retry"),
    ];
    assert_eq!(value(&s, "dapr_resiliency_count", &retry), Some(1.0));
    assert!(value(&s, "dapr_resiliency_activations_total", &retry) >= Some(1.0));
    assert_eq!(
        d.send("GET", "/v1.0/state/guarded/k", &[], "").await.text(),
        "\"v\""
    );
}

#[tokio::test]
async fn proxied_grpc_is_retried_when_unary_and_refused_retries_when_streaming() {
    use tonic::Code;
    let home = temp_dir("res-proxy");
    let (port, seen) = echo_app().await;
    let _t = target(&home, "res-target", port, "grpc").await;
    let c = caller(&home, "").await;
    let mut client = super::proxy::client(&c).await;
    // The app refuses "fail" every time: four tries (one and three retries).
    let before = seen.calls.load(Ordering::SeqCst);
    let err = client
        .unary(super::proxy::to(
            "res-target",
            Msg {
                text: "fail".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("fails");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(seen.calls.load(Ordering::SeqCst) - before, 4);
    // A good call goes through once.
    let ok = client
        .unary(super::proxy::to(
            "res-target",
            Msg {
                text: "hi".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("ok");
    assert!(ok.into_inner().text.starts_with("hi|"));
    // Retries cannot replay a stream.
    let mut req = super::proxy::to("res-target", tokio_stream::iter(Vec::<Msg>::new()));
    req.metadata_mut()
        .insert("dapr-stream", "true".parse().expect("value"));
    let err = client.bidi(req).await.expect_err("stream with retries");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("streaming"), "{}", err.message());
}

#[test]
fn an_invalid_resiliency_document_stops_start_up_naming_the_field() {
    let home = temp_dir("res-invalid");
    let dir = resources(
        &home,
        &POLICIES.replace("trip: consecutiveFailures >= 2", "trip: failures >= 2"),
    );
    let all = start_fails(
        &home,
        &[
            "--app-id",
            "res-bad",
            "--resources-path",
            &dir.display().to_string(),
        ],
    );
    assert!(all.contains("circuitBreakers.twoStrikes.trip"), "{all}");
}
