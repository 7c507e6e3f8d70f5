//! daprd's command line as Dapr's CLI and manifests write it: every flag of
//! Dapr's daprd is accepted, those without effect here say so once, and a
//! flag Dapr does not have is a usage error (exit code 2).

use std::process::Command;

use super::harness::{Daprd, Spec, free_port, temp_dir};

/// Runs daprd to its exit: the exit code and what it printed on stderr.
pub fn daprd_exit(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_daprd"))
        .args(args)
        .output()
        .expect("run daprd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_exit_with_code_2_and_a_clear_message() {
    let (code, err) = daprd_exit(&["--app-id", "x", "--no-such-flag"]);
    assert_eq!(code, 2);
    assert!(err.contains("--no-such-flag"), "{err}");
    let (code, err) = daprd_exit(&["--app-id", "x", "--app-protocol", "tcp"]);
    assert_eq!(code, 2);
    assert!(err.contains("tcp") && err.contains("grpc"), "{err}");
    let (code, err) = daprd_exit(&["--app-port", "80"]);
    assert_eq!(code, 2);
    assert!(err.contains("--app-id"), "{err}");
    let (code, err) = daprd_exit(&["-app-id", "x", "-app-port", "3500"]);
    assert_eq!(
        code, 2,
        "single-dash flags are accepted, and the port clash reported"
    );
    assert!(err.contains("--dapr-http-port"), "{err}");
}

#[tokio::test]
async fn a_dapr_run_command_line_starts_and_cors_follows_allowed_origins() {
    let home = temp_dir("dapr-run-flags");
    let components = home.join("components");
    std::fs::create_dir_all(&components).expect("dir");
    let mut spec = Spec::new("cli", &home);
    spec.extra = [
        "--placement-host-address",
        "localhost:50005",
        "--scheduler-host-address",
        "localhost:50006",
        "--enable-profiling",
        "--profile-port",
        &free_port().to_string(),
        "--components-path",
        &components.display().to_string(),
        "--dapr-http-max-request-size",
        "-1",
        "--dapr-http-read-buffer-size",
        "-1",
        "--app-max-concurrency",
        "-1",
        "--allowed-origins",
        "http://ui.example",
        "--disable-init-endpoints",
        "config",
    ]
    .map(String::from)
    .to_vec();
    let d = Daprd::start(spec).await;
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    for flag in [
        "--placement-host-address",
        "--scheduler-host-address",
        "--enable-profiling",
    ] {
        assert!(log.contains(&format!("flag {flag} is accepted")), "{flag}: {log}");
    }

    // CORS: a preflight from an allowed origin, an actual call, and an origin that is not allowed.
    let pre = d
        .send(
            "OPTIONS",
            "/v1.0/state/statestore",
            &[
                ("origin", "http://ui.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            "",
        )
        .await;
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("http://ui.example")
    );
    assert_eq!(pre.header("access-control-allow-headers"), Some("content-type"));
    assert!(
        pre.header("access-control-allow-methods")
            .is_some_and(|m| m.contains("PUT"))
    );
    let r = d
        .send("GET", "/v1.0/metadata", &[("origin", "http://ui.example")], "")
        .await;
    assert_eq!(
        (r.status, r.header("access-control-allow-origin")),
        (200, Some("http://ui.example"))
    );
    let r = d
        .send("GET", "/v1.0/metadata", &[("origin", "http://evil.example")], "")
        .await;
    assert_eq!((r.status, r.header("access-control-allow-origin")), (200, None));

    // `--wait` returns once this sidecar is ready for outbound calls.
    let out = Command::new(env!("CARGO_BIN_EXE_daprd"))
        .args(["--wait", "--dapr-http-port", &d.http_port.to_string()])
        .output()
        .expect("run daprd --wait");
    assert_eq!(out.status.code(), Some(0));
    let out = Command::new(env!("CARGO_BIN_EXE_daprd"))
        .arg("--build-info")
        .output()
        .expect("run daprd --build-info");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Version: "));
}

#[tokio::test]
async fn without_allowed_origins_there_are_no_cors_headers() {
    let home = temp_dir("no-cors");
    let d = Daprd::start(Spec::new("nocors", &home)).await;
    let r = d
        .send("GET", "/v1.0/metadata", &[("origin", "http://ui.example")], "")
        .await;
    assert_eq!((r.status, r.header("access-control-allow-origin")), (200, None));
}

#[tokio::test]
async fn disable_init_endpoints_subscribe_skips_the_apps_subscriptions() {
    let subs = serde_json::json!([{"pubsubname": "pubsub", "topic": "t", "route": "/t"}]);
    let (_, app) = super::pubsub::subscriber(subs.clone()).await;
    let home = temp_dir("no-init-subscribe");
    let mut spec = Spec::new("noinit", &home);
    spec.app_port = Some(app);
    spec.extra = vec!["--disable-init-endpoints".into(), "subscribe".into()];
    let d = Daprd::start(spec).await;
    // The app is up and healthy, yet it was never asked.
    for _ in 0..100 {
        if d.get("/v1.0/healthz").await.map(|r| r.status) == Ok(204) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let md = d.get("/v1.0/metadata").await.expect("metadata").json();
    assert!(md.get("subscriptions").is_none(), "{md}");
    // Without the flag the same app's subscription starts.
    let (_, app) = super::pubsub::subscriber(subs).await;
    let mut spec = Spec::new("withinit", &home);
    spec.app_port = Some(app);
    let d = Daprd::start(spec).await;
    super::pubsub::subscribed(&d, 1).await;
}
