//! App health probing, `--app-max-concurrency`, graceful drain on SIGTERM,
//! and the public health port.

use std::{
    sync::atomic::Ordering::SeqCst,
    time::{Duration, Instant},
};

use super::{
    apps::controlled_app,
    harness::{Daprd, Spec, free_port, temp_dir},
};

/// Flags probing the controlled app's `/healthz` every second, calling it
/// unhealthy after `threshold` failures.
fn health_checks(threshold: u32) -> Vec<String> {
    [
        "--enable-app-health-check",
        "--app-health-check-path",
        "/healthz",
        "--app-health-probe-interval",
        "1",
        "--app-health-threshold",
    ]
    .map(String::from)
    .into_iter()
    .chain([threshold.to_string()])
    .collect()
}

/// Polls `f` until it holds, for at most `within`.
async fn eventually(within: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn unhealthy_apps_stop_receiving_calls_until_they_recover() {
    let home = temp_dir("health");
    let (app, port) = controlled_app().await;
    let b = Daprd::start(Spec {
        app_port: Some(port),
        extra: health_checks(2),
        ..Spec::new("health-b", &home)
    })
    .await;
    let a = Daprd::start(Spec::new("health-a", &home)).await;
    let call = async || {
        a.send("POST", "/v1.0/invoke/health-b/method/ping", &[], "x")
            .await
    };
    assert_eq!(call().await.status, 200);

    app.unhealthy.store(true, SeqCst);
    eventually(
        Duration::from_secs(6),
        "calls refused while the app is unhealthy",
        async || {
            let r = call().await;
            r.status == 500 && r.error_code() == "ERR_DIRECT_INVOKE" && r.text().contains("not healthy")
        },
    )
    .await;
    let meta = b.get("/v1.0/metadata").await.expect("metadata").json();
    assert_eq!(
        meta["appConnectionProperties"]["health"]["healthCheckPath"],
        "/healthz"
    );

    app.unhealthy.store(false, SeqCst);
    eventually(
        Duration::from_secs(4),
        "calls served again after recovery",
        async || call().await.status == 200,
    )
    .await;
}

#[tokio::test]
async fn app_max_concurrency_limits_calls_into_the_app() {
    let home = temp_dir("concurrency");
    let (app, port) = controlled_app().await;
    let _b = Daprd::start(Spec {
        app_port: Some(port),
        extra: vec!["--app-max-concurrency".into(), "2".into()],
        ..Spec::new("limited-b", &home)
    })
    .await;
    let a = Daprd::start(Spec::new("limited-a", &home)).await;
    let started = Instant::now();
    let replies = futures_util::future::join_all(
        (0..6).map(|_| a.send("GET", "/v1.0/invoke/limited-b/method/slow/200", &[], "")),
    )
    .await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "slept 200");
    }
    assert_eq!(
        app.max_in_flight.load(SeqCst),
        2,
        "never more than 2 at once in the app"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "six 200 ms calls, two at a time, take three rounds"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let home = temp_dir("drain");
    let (_app, port) = controlled_app().await;
    let _b = Daprd::start(Spec {
        app_port: Some(port),
        ..Spec::new("drain-b", &home)
    })
    .await;
    let mut a = Daprd::start(Spec {
        extra: vec!["--dapr-graceful-shutdown-seconds".into(), "5".into()],
        ..Spec::new("drain-a", &home)
    })
    .await;
    let url = a.url("/v1.0/invoke/drain-b/method/slow/800");
    let in_flight = tokio::spawn(async move {
        super::harness::send("GET", &url, &[], bytes::Bytes::new())
            .await
            .map(|r| (r.status, r.text()))
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    a.terminate();

    let reply = in_flight.await.expect("join");
    assert_eq!(
        reply,
        Ok((200, "slept 800".to_string())),
        "the in-flight call completes"
    );
    let status = a
        .wait_exit(Duration::from_secs(6))
        .await
        .expect("daprd exits after draining");
    assert!(status.success(), "clean exit: {status}");
    assert!(
        stopping.elapsed() >= Duration::from_millis(500),
        "it waited for the call"
    );
    assert!(
        a.get("/v1.0/healthz").await.is_err(),
        "nothing listens after shutdown"
    );
}

#[tokio::test]
async fn public_port_serves_health_and_metadata_only_without_a_token() {
    let home = temp_dir("public");
    let public = free_port();
    let d = Daprd::start(Spec {
        extra: vec!["--dapr-public-port".into(), public.to_string()],
        env: vec![("DAPR_API_TOKEN", "s3cret".into())],
        ..Spec::new("public", &home)
    })
    .await;
    let on_public = async |method: &str, path: &str| {
        super::harness::send(
            method,
            &format!("http://127.0.0.1:{public}{path}"),
            &[],
            bytes::Bytes::new(),
        )
        .await
        .expect("public port answers")
    };
    assert_eq!(on_public("GET", "/v1.0/healthz").await.status, 204);
    assert_eq!(on_public("GET", "/v1.0/healthz/outbound").await.status, 204);
    let meta = on_public("GET", "/v1.0/metadata").await;
    assert_eq!(meta.status, 200);
    assert_eq!(meta.json()["id"], "public");
    assert_eq!(on_public("GET", "/v1.0/state/statestore/k").await.status, 404);
    assert_eq!(on_public("POST", "/v1.0/shutdown").await.status, 404);
    // The main port still wants the token.
    assert_eq!(d.get("/v1.0/state/statestore/k").await.expect("get").status, 401);
}

#[tokio::test]
async fn block_shutdown_keeps_serving_until_the_app_is_unhealthy_or_time_is_up() {
    let home = temp_dir("block");
    // No health checks: the block lasts the whole duration.
    let mut d = Daprd::start(Spec {
        extra: vec!["--dapr-block-shutdown-duration".into(), "2s".into()],
        ..Spec::new("blocking", &home)
    })
    .await;
    let stopping = Instant::now();
    d.terminate();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(d.get("/v1.0/metadata").await.expect("still serving").status, 200);
    let status = d
        .wait_exit(Duration::from_secs(6))
        .await
        .expect("exits after the block");
    assert!(status.success());
    assert!(
        stopping.elapsed() >= Duration::from_millis(1900),
        "blocked for the duration"
    );

    // With health checks: an unhealthy app ends the block early.
    let (app, port) = controlled_app().await;
    let mut d = Daprd::start(Spec {
        app_port: Some(port),
        extra: [
            vec!["--dapr-block-shutdown-duration".into(), "20s".into()],
            health_checks(1),
        ]
        .concat(),
        ..Spec::new("blocking-app", &home)
    })
    .await;
    let stopping = Instant::now();
    d.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.unhealthy.store(true, SeqCst);
    let status = d
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("exits once the app is unhealthy");
    assert!(status.success());
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "no wait for the rest of the block, nor for the probe loop: {:?}",
        stopping.elapsed()
    );
}
