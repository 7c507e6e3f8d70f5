//! The official Python SDK (`dapr` from PyPI) against real daprd processes:
//! `DaprClient` over HTTP and gRPC, calling an app built with the SDK's gRPC
//! extension. `scripts/test.sh` prepares the virtualenv.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use super::harness::{Daprd, Spec, free_port, temp_dir};

/// The virtualenv's python, or `None` (with one line saying why) when the
/// SDK is not installed and the run does not require it.
pub fn sdk_python() -> Option<PathBuf> {
    installed(
        "DAPRS_SDK_PYTHON",
        "sdk-venv/bin/python",
        "the Python SDK",
        |python| {
            Command::new(python)
                .args(["-c", "import dapr.clients, dapr.ext.grpc"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        },
    )
}

/// Runs an SDK client script against `d` (its ports in the SDK's
/// environment variables); what it printed, once it exited successfully.
pub async fn run_client(python: &std::path::Path, name: &str, args: &[&str], d: &Daprd) -> String {
    let mut cmd = Command::new(python);
    cmd.arg(script(name))
        .args(args)
        .env("DAPR_HTTP_PORT", d.http_port.to_string())
        .env("DAPR_GRPC_PORT", d.grpc_port.to_string())
        .env("DAPR_RUNTIME_HOST", "127.0.0.1")
        .env("DAPR_HEALTH_TIMEOUT", "20");
    let run = tokio::task::spawn_blocking(move || cmd.output().expect("run the SDK client"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "SDK client {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(name)
}

/// A child process killed on drop.
pub struct Proc(pub Child);

/// Starts an SDK app script on a free port (its first argument, then
/// `args`) and waits until it listens; the app and its port.
pub async fn python_app(python: &std::path::Path, name: &str, args: &[&std::ffi::OsStr]) -> (Proc, u16) {
    let port = free_port();
    let app = Proc(
        Command::new(python)
            .arg(script(name))
            .arg(port.to_string())
            .args(args)
            .spawn()
            .expect("start the SDK app"),
    );
    wait_for_port(port).await;
    (app, port)
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "app on port {port} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn python_sdk_invokes_and_keeps_state_over_http_and_grpc() {
    let Some(python) = sdk_python() else { return };
    let home = temp_dir("sdk");
    let (_app, app_port) = python_app(&python, "grpc_app.py", &[]).await;
    let mut server = Spec::new("py-app", &home);
    server.app_port = Some(app_port);
    server.protocol = "grpc";
    let _server = Daprd::start(server).await;
    let client = Daprd::start(Spec::new("py-client", &home)).await;

    for protocol in ["http", "grpc"] {
        let out = tokio::task::spawn_blocking({
            let python = python.clone();
            let (http, grpc) = (client.http_port, client.grpc_port);
            move || {
                Command::new(python)
                    .arg(script("client.py"))
                    .args(["py-app", "statestore", "py-client"])
                    .env("DAPR_HTTP_PORT", http.to_string())
                    .env("DAPR_GRPC_PORT", grpc.to_string())
                    .env("DAPR_RUNTIME_HOST", "127.0.0.1")
                    .env("DAPR_API_METHOD_INVOCATION_PROTOCOL", protocol)
                    .env("DAPR_HEALTH_TIMEOUT", "20")
                    .output()
                    .expect("run the SDK client")
            }
        })
        .await
        .expect("join");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{protocol} run failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for check in [
            "invoke body",
            "invoke caller id",
            "invoke callee id",
            "invoke unknown app fails",
        ] {
            assert!(stdout.contains(&format!("ok {protocol} {check}")), "{stdout}");
        }
        if protocol == "grpc" {
            for check in [
                "state save/get",
                "state stale etag refused",
                "state bulk get",
                "state transaction delete",
                "state unknown store refused",
                "metadata lists store",
            ] {
                assert!(stdout.contains(&format!("ok {check}")), "{stdout}");
            }
        }
    }
}

/// The proxying tests' echo app behind sidecar `app`, and a sidecar
/// `client` with no app to call it through.
async fn echo_behind_sidecars(
    home: &str,
    app: &str,
    client: &str,
) -> (Daprd, Daprd, Arc<super::proxy::Seen>) {
    let (port, seen) = super::proxy::echo_app().await;
    let home = temp_dir(home);
    let server = Daprd::start(Spec {
        app_port: Some(port),
        protocol: "grpc",
        ..Spec::new(app, &home)
    })
    .await;
    let client = Daprd::start(Spec::new(client, &home)).await;
    (server, client, seen)
}

/// What every gRPC library's proxy client checks.
const PROXY_CHECKS: &[&str] = &[
    "unary",
    "metadata",
    "binary metadata",
    "error status",
    "server streaming",
    "client streaming",
    "bidirectional streaming",
    "deadline",
    "unknown app",
];

/// Runs a client that prints `ok <check>` for each check it passes, and
/// asserts it exited successfully having passed each of `checks`.
async fn passes_checks(mut cmd: Command, checks: &[&str]) {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run the client"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in checks {
        assert!(stdout.contains(&format!("ok {check}\n")), "{stdout}");
    }
}

#[tokio::test]
async fn python_grpcio_calls_a_user_service_through_the_proxy() {
    let Some(python) = sdk_python() else { return };
    let (_server, client, _seen) = echo_behind_sidecars("sdk-proxy", "py-echo", "py-proxy-client").await;
    let mut cmd = Command::new(python);
    cmd.arg(script("grpc_proxy_client.py"))
        .args([&client.grpc_port.to_string(), "py-echo"])
        .arg(concat!(env!("OUT_DIR"), "/echo_descriptor.bin"));
    passes_checks(cmd, PROXY_CHECKS).await;
}

/// What the test set-up installed at `$var` (default `target/<default>`)
/// when `ready` says it is usable; otherwise `None`, with one line saying
/// so, unless the run requires the SDKs.
fn installed(
    var: &str,
    default: &str,
    what: &str,
    ready: impl Fn(&std::path::Path) -> bool,
) -> Option<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(default)
    });
    if ready(&path) {
        return Some(path);
    }
    assert!(
        std::env::var_os("DAPRS_REQUIRE_SDK").is_none(),
        "{what} is required but {} does not hold it",
        path.display()
    );
    eprintln!("skipped: {what} not installed (bash scripts/test.sh sets it up)");
    None
}

/// The grpc-go client `scripts/sdk-go.sh` builds, when it is there.
fn go_client() -> Option<PathBuf> {
    installed("DAPRS_SDK_GO", "sdk-go/proxy_client", "the grpc-go client", |p| {
        p.is_file()
    })
}

#[tokio::test]
async fn go_grpc_calls_a_user_service_through_the_proxy() {
    let Some(bin) = go_client() else { return };
    let (_server, client, _seen) = echo_behind_sidecars("sdk-go-proxy", "go-echo", "go-proxy-client").await;
    let mut cmd = Command::new(bin);
    cmd.args([&client.grpc_port.to_string(), "go-echo"]);
    passes_checks(
        cmd,
        &[
            PROXY_CHECKS,
            &[
                "error details",
                "bidirectional streaming a",
                "bidirectional streaming b",
            ],
        ]
        .concat(),
    )
    .await;
}

/// Runs `grpcurl -plaintext <opts> 127.0.0.1:<port> <what>` (grpcurl is
/// installed in the SDK virtualenv); its success, standard output and error.
async fn grpcurl(python: &std::path::Path, port: u16, opts: &[&str], what: &str) -> (bool, String, String) {
    let mut cmd = Command::new(python.with_file_name("grpcurl"));
    cmd.arg("-plaintext")
        .args(opts)
        .arg(format!("127.0.0.1:{port}"))
        .arg(what);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run grpcurl"))
        .await
        .expect("join");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_through_the_proxy() {
    let Some(python) = sdk_python() else { return };
    let (_server, client, _seen) = echo_behind_sidecars("sdk-grpcurl", "curl-echo", "curl-client").await;
    let p = client.grpc_port;
    // The sidecar's own services, through reflection (grpcurl 1.8 asks v1alpha).
    let (ok, out, err) = grpcurl(&python, p, &[], "list").await;
    assert!(ok, "{err}");
    let own: Vec<&str> = out.lines().collect();
    assert_eq!(
        own,
        [
            "dapr.proto.runtime.v1.Dapr",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ],
        "{out}"
    );
    let (ok, out, err) = grpcurl(&python, p, &[], "dapr.proto.runtime.v1.Dapr/GetMetadata").await;
    assert!(ok && out.contains("\"id\": \"curl-client\""), "{out}{err}");
    // With dapr-app-id, the app's own services: listed, then called by name.
    let to_app = ["-H", "dapr-app-id: curl-echo"];
    let (ok, out, err) = grpcurl(&python, p, &to_app, "list").await;
    assert!(ok && out.lines().any(|l| l == "daprs.test.v1.Echo"), "{out}{err}");
    let unary = [
        &to_app[..],
        &["-H", "x-echo: curl", "-v", "-d", r#"{"text": "hi"}"#],
    ]
    .concat();
    let (ok, out, err) = grpcurl(&python, p, &unary, "daprs.test.v1.Echo/Unary").await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("\"text\": \"hi|caller=curl-client"), "{out}");
    assert!(out.contains("x-echo: curl"), "response headers: {out}");
    let stream = [&to_app[..], &["-d", r#"{"count": 3}"#]].concat();
    let (ok, out, err) = grpcurl(&python, p, &stream, "daprs.test.v1.Echo/ServerStream").await;
    assert!(ok && out.matches("\"text\"").count() == 3, "{out}{err}");
    let fail = [&to_app[..], &["-d", r#"{"text": "fail"}"#]].concat();
    let (ok, out, err) = grpcurl(&python, p, &fail, "daprs.test.v1.Echo/Unary").await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("Code: FailedPrecondition") && err.contains("Message: the app refused"),
        "{err}"
    );
}

#[tokio::test]
async fn python_sdk_publishes_subscribes_and_streams() {
    let Some(python) = sdk_python() else { return };
    let home = temp_dir("sdk-pubsub");
    let out = home.join("deliveries.jsonl");
    let (_app, app_port) = python_app(&python, "pubsub_app.py", &[out.as_os_str()]).await;
    let mut server = Spec::new("py-sub", &home);
    server.app_port = Some(app_port);
    server.protocol = "grpc";
    let server = Daprd::start(server).await;
    // Subscriptions start once the app answers ListTopicSubscriptions.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get("/v1.0/metadata").await.expect("metadata").json()["subscriptions"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the SDK app's subscriptions did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The embedded in-memory broker lives in the subscriber's sidecar, so the SDK publishes there.
    let stdout = run_client(&python, "pubsub_client.py", &[], &server).await;
    for check in [
        "publish_event",
        "publish_events",
        "publish_event text",
        "unknown pubsub refused",
        "streaming subscription",
    ] {
        assert!(stdout.contains(&format!("ok {check}")), "{stdout}");
    }
    // Deliveries to the SDK app: three orders, and the flaky event twice.
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= 5 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let orders: Vec<&serde_json::Value> = lines.iter().filter(|l| l["route"] == "orders").collect();
    let mut numbers: Vec<i64> = orders
        .iter()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l["data"].as_str()?).ok()?["order"].as_i64()
        })
        .collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3], "{lines:?}");
    assert!(
        orders
            .iter()
            .all(|l| l["source"] == "py-sub" && l["type"] == "com.dapr.event.sent" && l["topic"] == "orders")
    );
    let flaky: Vec<&serde_json::Value> = lines.iter().filter(|l| l["route"] == "flaky").collect();
    assert_eq!(flaky.len(), 2, "RETRY from the SDK app redelivers: {lines:?}");
    assert_eq!(flaky[0]["id"], flaky[1]["id"]);
    assert_eq!(flaky[0]["data"], "again");
}

/// The folder holding the JavaScript SDK, or `None` (with one line saying
/// why) when it is not installed and the run does not require it.
pub fn sdk_node() -> Option<PathBuf> {
    installed("DAPRS_SDK_NODE", "sdk-node", "the JavaScript SDK", |dir| {
        dir.join("node_modules/@dapr/dapr/package.json").is_file()
    })
}

#[tokio::test]
async fn js_sdk_proxy_helper_calls_a_user_service_through_two_sidecars() {
    let Some(dir) = sdk_node() else { return };
    let (_server, client, seen) = echo_behind_sidecars("sdk-js-proxy", "js-echo", "js-proxy-client").await;
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/proto/echo.proto");
    let args = vec![proto.display().to_string(), client.grpc_port.to_string()];
    // The helper addresses every call to the app in APP_ID.
    let stdout = run_js(&dir, "proxy.mjs", args, vec![("APP_ID", "js-echo".into())]).await;
    for check in ["unary", "server stream", "status"] {
        assert!(stdout.contains(&format!("ok {check}\n")), "{stdout}");
    }
    assert!(seen.calls.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn js_sdk_publishes_over_http_and_grpc_to_a_dapr_server_subscriber() {
    let Some(dir) = sdk_node() else { return };
    let home = temp_dir("sdk-js");
    let app_port = free_port();
    let mut spec = Spec::new("js-sub", &home);
    spec.app_port = Some(app_port);
    let d = Daprd::start(spec).await;
    let args = [app_port, d.http_port, d.grpc_port]
        .map(|p| p.to_string())
        .to_vec();
    let stdout = run_js(&dir, "pubsub.mjs", args, vec![]).await;
    for check in [
        "http publish",
        "grpc publish",
        "unknown pubsub refused",
        "subscriber received",
    ] {
        assert!(stdout.contains(&format!("ok js {check}")), "{stdout}");
    }
}

pub fn script_js(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk/js")
        .join(name)
}

/// Runs the JavaScript SDK script `name` with `args` and `env`, copied into
/// the SDK's folder `dir` (ES modules resolve packages from the script's
/// folder); its standard output, once it has succeeded.
pub async fn run_js(
    dir: &std::path::Path,
    name: &str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
) -> String {
    let script = dir.join(format!("{}-{name}", free_port()));
    std::fs::copy(script_js(name), &script).expect("copy the script");
    let run = tokio::task::spawn_blocking({
        let script = script.clone();
        move || {
            Command::new("node")
                .arg(&script)
                .args(args)
                .envs(env)
                .output()
                .expect("run node")
        }
    })
    .await
    .expect("join");
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}
