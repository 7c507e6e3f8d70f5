//! Mutual TLS between the sidecars (`--mtls`): the operator's certificate
//! authority runs in this process over an in-memory API server that knows
//! each sidecar's pod and service-account token, as a cluster would, and
//! every sidecar gets its SPIFFE certificate from it at start.

#[path = "../../operator/tests/support/fake_api.rs"]
mod fake_api;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::bail;
use daprs_operator::serve::{ServeSettings, run};
use serde_json::json;

const NS: &str = "default";

/// A sidecar's extra flags and environment.
pub type Identity = (Vec<String>, Vec<(String, String)>);

pub struct ControlPlane {
    api: fake_api::FakeApi,
    sentry: SocketAddr,
    anchors: String,
    dir: PathBuf,
}

impl ControlPlane {
    /// Starts the CA and waits until it publishes its trust anchors.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let api = fake_api::FakeApi::default();
        let settings = ServeSettings::loopback("bench")?;
        let sentry = settings.sentry_addr;
        tokio::spawn(run(api.client(), settings));
        let started = Instant::now();
        let anchors = loop {
            let published = api
                .get("/api/v1/namespaces/dapr-system/configmaps/dapr-trust-bundle")
                .and_then(|m| m["data"]["ca.crt"].as_str().map(str::to_string));
            if let Some(a) = published {
                break a;
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("the certificate authority did not start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Self {
            api,
            sentry,
            anchors,
            dir: dir.to_path_buf(),
        })
    }

    /// The flags and environment that let `app_id` prove who it is: a pod
    /// of its own with a token the API server vouches for.
    pub fn identity(&self, app_id: &str) -> anyhow::Result<Identity> {
        let (pod, sa, token) = (
            format!("{app_id}-pod"),
            format!("{app_id}-sa"),
            format!("{app_id}-token"),
        );
        self.api.put(
            &format!("/api/v1/namespaces/{NS}/pods/{pod}"),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": NS, "uid": format!("uid-{app_id}"),
                    "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": app_id}},
                "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "bench"}]}}),
        );
        self.api.grant_token(&token, NS, &sa, &pod);
        let token_file = self.dir.join(format!("{app_id}.token"));
        std::fs::write(&token_file, token)?;
        let args = vec![
            "--enable-mtls".to_string(),
            "--sentry-address".to_string(),
            self.sentry.to_string(),
        ];
        let env = [
            ("NAMESPACE", NS.to_string()),
            ("DAPR_TRUST_ANCHORS", self.anchors.clone()),
            ("DAPR_CONTROLPLANE_NAMESPACE", "dapr-system".to_string()),
            ("DAPR_CONTROLPLANE_TRUST_DOMAIN", "cluster.local".to_string()),
            ("DAPR_SENTRY_TOKEN_FILE", token_file.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok((args, env))
    }
}
