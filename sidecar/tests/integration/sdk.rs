//! The official Python SDK (`dapr` from PyPI) against real daprd processes:
//! `DaprClient` over HTTP and gRPC, calling an app built with the SDK's gRPC
//! extension. `scripts/test.sh` prepares the virtualenv.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::harness::{Daprd, Spec, free_port, temp_dir};

/// The virtualenv's python, or `None` (with one line saying why) when the
/// SDK is not installed and the run does not require it.
fn sdk_python() -> Option<PathBuf> {
    let python = std::env::var_os("DAPRS_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sdk-venv/bin/python"));
    let ready = Command::new(&python)
        .args(["-c", "import dapr.clients, dapr.ext.grpc"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ready {
        return Some(python);
    }
    assert!(
        std::env::var_os("DAPRS_REQUIRE_SDK").is_none(),
        "the Python SDK is required but {} cannot import it",
        python.display()
    );
    eprintln!("skipped: Python SDK not installed (bash scripts/test.sh sets it up)");
    None
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(name)
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for_port(port: u16) {
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
    let app_port = free_port();
    let _app = Proc(
        Command::new(&python)
            .arg(script("grpc_app.py"))
            .arg(app_port.to_string())
            .spawn()
            .expect("start the SDK gRPC app"),
    );
    wait_for_port(app_port).await;
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

#[tokio::test]
async fn python_grpcio_calls_a_user_service_through_the_proxy() {
    let Some(python) = sdk_python() else { return };
    let (port, _seen) = super::proxy::echo_app().await;
    let home = temp_dir("sdk-proxy");
    let _server = Daprd::start(Spec {
        app_port: Some(port),
        protocol: "grpc",
        ..Spec::new("py-echo", &home)
    })
    .await;
    let client = Daprd::start(Spec::new("py-proxy-client", &home)).await;
    let grpc_port = client.grpc_port;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script("grpc_proxy_client.py"))
            .args([&grpc_port.to_string(), "py-echo"])
            .arg(concat!(env!("OUT_DIR"), "/echo_descriptor.bin"))
            .output()
            .expect("run the grpcio client")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcio client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "unary",
        "metadata",
        "binary metadata",
        "error status",
        "server streaming",
        "client streaming",
        "bidirectional streaming",
        "deadline",
        "unknown app",
    ] {
        assert!(stdout.contains(&format!("ok {check}\n")), "{stdout}");
    }
}
