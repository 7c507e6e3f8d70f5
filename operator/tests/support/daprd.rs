//! A control plane (the operator over a fake API server) and daprd in
//! Kubernetes mode against it, for the tests that run both.
// Shared by more than one test crate, each using part of it.
#![allow(dead_code)]

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use daprs_operator::serve::{ServeSettings, run};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{fake_api::FakeApi, settings};

pub const NS: &str = "prod";

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("daprs-cp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// One HTTP/1.1 exchange: (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

pub struct ControlPlane {
    pub api: FakeApi,
    pub settings: ServeSettings,
    pub anchors: String,
}

/// The operator on free ports over a fake cluster that `seed` fills first
/// (the fake serves lists but no watches, so the caches see what is there
/// at start), once its CA is up.
pub async fn control_plane(seed: impl FnOnce(&ControlPlane)) -> ControlPlane {
    let mut cp = ControlPlane {
        api: FakeApi::default(),
        settings: settings::serve_settings(),
        anchors: String::new(),
    };
    seed(&cp);
    tokio::spawn(run(cp.api.client(), cp.settings.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    cp.anchors = loop {
        let found = cp
            .api
            .get("/api/v1/namespaces/dapr-system/configmaps/dapr-trust-bundle")
            .and_then(|m| m["data"]["ca.crt"].as_str().map(str::to_string));
        if let Some(a) = found {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "the CA did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cp
}

impl ControlPlane {
    /// A pod of `app_id` whose projected token is `token`.
    pub fn pod(&self, app_id: &str, token: &str, annotations: Value) {
        let name = format!("{app_id}-pod");
        let mut ann = json!({"dapr.io/enabled": "true", "dapr.io/app-id": app_id});
        if let (Some(a), Value::Object(extra)) = (ann.as_object_mut(), annotations) {
            a.extend(extra);
        }
        self.api.put(
            &format!("/api/v1/namespaces/{NS}/pods/{name}"),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{app_id}"), "annotations": ann},
                "spec": {"serviceAccountName": format!("{app_id}-sa"), "containers": [{"name": "app", "image": "x"}]}}),
        );
        self.api.grant_token(token, NS, &format!("{app_id}-sa"), &name);
    }

    pub fn put(&self, plural: &str, name: &str, object: Value) {
        self.api.put(
            &format!("/apis/dapr.io/v1alpha1/namespaces/{NS}/{plural}/{name}"),
            object,
        );
    }

    /// daprd's flags in Kubernetes mode against this operator, then `extra`.
    pub fn daprd_args(&self, extra: &[&str]) -> Vec<String> {
        let api = self.settings.api_addr.to_string();
        ["--mode", "kubernetes", "--control-plane-address", &api]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    }

    /// The environment and flags a pod's daprd gets from the injector.
    pub fn sidecar_env(&self, dir: &std::path::Path, token: &str) -> HashMap<String, String> {
        let token_file = dir.join("token");
        std::fs::write(&token_file, token).expect("token file");
        HashMap::from([
            ("NAMESPACE".to_string(), NS.to_string()),
            ("DAPR_TRUST_ANCHORS".into(), self.anchors.clone()),
            ("DAPR_CONTROLPLANE_NAMESPACE".into(), "dapr-system".into()),
            ("DAPR_CONTROLPLANE_TRUST_DOMAIN".into(), "cluster.local".into()),
            ("DAPR_SENTRY_TOKEN_FILE".into(), token_file.display().to_string()),
            ("DAPRS_HOME".into(), dir.display().to_string()),
        ])
    }
}

pub struct Sidecar {
    pub http: SocketAddr,
    pub grpc: u16,
    pub internal: u16,
    pub metrics: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts daprd in this process; Err with its start-up error if it exits.
pub async fn sidecar(
    cp: &ControlPlane,
    app_id: &str,
    token: &str,
    dir: &std::path::Path,
    extra: &[String],
) -> Result<Sidecar, String> {
    let (http_port, grpc, internal, metrics) = (
        settings::free().port(),
        settings::free().port(),
        settings::free().port(),
        settings::free().port(),
    );
    let mut args: Vec<String> = [
        "daprd",
        "--app-id",
        app_id,
        "--sentry-address",
        &cp.settings.sentry_addr.to_string(),
        "--dapr-http-port",
        &http_port.to_string(),
        "--dapr-grpc-port",
        &grpc.to_string(),
        "--dapr-internal-grpc-port",
        &internal.to_string(),
        "--metrics-port",
        &metrics.to_string(),
        "--dapr-listen-addresses",
        "127.0.0.1",
        "--dapr-graceful-shutdown-seconds",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    let flags =
        <daprs_sidecar::flags::Flags as clap::Parser>::try_parse_from(args).map_err(|e| e.to_string())?;
    let settings = daprs_sidecar::settings::Settings::from_flags(flags, cp.sidecar_env(dir, token))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut done = tokio::spawn(async move {
        daprs_sidecar::run(settings, async {
            let _ = stopped.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::select! {
            exited = &mut done => {
                return Err(exited.map_err(|e| e.to_string())?.err().unwrap_or_else(|| "exited".into()));
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if let Some((204, _)) = http(addr, "GET", "/v1.0/healthz/outbound", "").await {
            return Ok(Sidecar {
                http: addr,
                grpc,
                internal,
                metrics,
                stop: Some(stop),
            });
        }
        assert!(tokio::time::Instant::now() < deadline, "daprd did not start");
    }
}
