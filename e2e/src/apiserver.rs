//! A real etcd + kube-apiserver pair for tests (the "envtest" tier).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// The folder holding `etcd` and `kube-apiserver`, or why there is none.
pub fn assets() -> Result<PathBuf, String> {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from).ok_or(
        "KUBEBUILDER_ASSETS is not set (a folder with etcd and kube-apiserver, e.g. from setup-envtest)",
    )?;
    for bin in ["etcd", "kube-apiserver"] {
        if !dir.join(bin).is_file() {
            return Err(format!("KUBEBUILDER_ASSETS={} has no {bin}", dir.display()));
        }
    }
    Ok(dir)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Starts a control plane from `KUBEBUILDER_ASSETS`; without them, prints
/// the one line saying the test is skipped and returns None.
pub async fn start_or_skip() -> Option<ControlPlane> {
    match assets() {
        Ok(dir) => Some(
            ControlPlane::start(&dir)
                .await
                .unwrap_or_else(|e| panic!("control plane: {e}")),
        ),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// A running control plane; both processes are killed on drop.
pub struct ControlPlane {
    etcd: Child,
    apiserver: Child,
    pub url: String,
    pub token: String,
    pub dir: PathBuf,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A response from the API server.
#[derive(Debug)]
pub struct ApiReply {
    pub status: u16,
    pub warnings: Vec<String>,
    pub body: serde_json::Value,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver from `assets` and waits for `/readyz`.
    pub async fn start(assets: &Path) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("daprs-envtest-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(dir.join("certs")).map_err(|e| e.to_string())?;
        let log = |name: &str| -> Result<Stdio, String> {
            std::fs::File::create(dir.join(name))
                .map(Stdio::from)
                .map_err(|e| e.to_string())
        };
        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd = Command::new(assets.join("etcd"))
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg("--unsafe-no-fsync")
            .stdout(log("etcd.log")?)
            .stderr(log("etcd.err")?)
            .spawn()
            .map_err(|e| format!("start etcd: {e}"))?;

        // Service-account signing key, and an admin token in system:masters.
        let sa = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        std::fs::write(dir.join("sa.key"), sa.serialize_pem()).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("sa.pub"), sa.public_key_pem()).map_err(|e| e.to_string())?;
        let token = format!("admin-{}", free_port()?);
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{token},admin,admin-uid,\"system:masters\"\n"),
        )
        .map_err(|e| e.to_string())?;

        let apiserver = Command::new(assets.join("kube-apiserver"))
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--secure-port={api_port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg(format!("--token-auth-file={}", dir.join("tokens.csv").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--allow-privileged=true")
            .stdout(log("apiserver.log")?)
            .stderr(log("apiserver.err")?)
            .spawn()
            .map_err(|e| format!("start kube-apiserver: {e}"))?;

        let url = format!("https://127.0.0.1:{api_port}");
        // The API server writes its self-signed certificate into cert-dir.
        let deadline = Instant::now() + Duration::from_secs(60);
        let cert = dir.join("certs").join("apiserver.crt");
        while !cert.exists() {
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-apiserver wrote no certificate; see {}",
                    dir.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let roots = std::fs::read(&cert).map_err(|e| e.to_string())?;
        let tls = crate::pki::client_config(&roots)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        let cp = Self {
            etcd,
            apiserver,
            url,
            token,
            dir,
            client,
        };
        loop {
            if let Ok(r) = cp.request("GET", "/readyz", None).await
                && r.status == 200
            {
                cp.namespace("default").await?;
                return Ok(cp);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-apiserver not ready after 60 s; logs in {}",
                    cp.dir.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Creates namespace `name` (if it is not there) and its `default`
    /// ServiceAccount, as kube-controller-manager does in a real cluster:
    /// the API server runs its whole admission chain, and the ServiceAccount
    /// plugin refuses pods whose service account does not exist.
    pub async fn namespace(&self, name: &str) -> Result<(), String> {
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let r = self.request("POST", "/api/v1/namespaces", Some(&ns)).await?;
        if r.status != 201 && r.status != 409 {
            return Err(format!("creating namespace {name}: {} {}", r.status, r.body));
        }
        let sa = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        let path = format!("/api/v1/namespaces/{name}/serviceaccounts");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // A namespace the API server has just made may not take objects yet.
            let r = self.request("POST", &path, Some(&sa)).await?;
            if r.status == 201 || r.status == 409 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "creating {name}/default ServiceAccount: {} {}",
                    r.status, r.body
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A kube client for this API server, as the admin.
    pub async fn kube_client(&self) -> Result<kube::Client, String> {
        self.kube_client_as(&self.token).await
    }

    /// A kube client that presents `token` (say, a service account's).
    pub async fn kube_client_as(&self, token: &str) -> Result<kube::Client, String> {
        use base64::Engine;
        let ca = std::fs::read(self.dir.join("certs").join("apiserver.crt")).map_err(|e| e.to_string())?;
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: user\n  user:\n    token: {}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: user\ncurrent-context: envtest\n",
            self.url,
            base64::engine::general_purpose::STANDARD.encode(ca),
            token
        );
        let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).map_err(|e| e.to_string())?;
        let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        kube::Client::try_from(config).map_err(|e| e.to_string())
    }

    /// Creates every object of a multi-document manifest, as `kubectl
    /// create -f` would: custom resources wait until their CRD is served.
    pub async fn create_all(&self, objects: &[serde_json::Value]) -> Result<(), String> {
        for v in objects {
            let path = collection(v)?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let r = self.request("POST", &path, Some(v)).await?;
                match r.status {
                    200 | 201 => break,
                    // A CRD created a moment ago is not served yet.
                    404 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
                    s => {
                        return Err(format!(
                            "creating {} {}: {s} {}",
                            v["kind"], v["metadata"]["name"], r.body
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// One authenticated request; the body is JSON.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<ApiReply, String> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let warnings = resp
            .headers()
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let raw = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body = serde_json::from_slice(&raw)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&raw).into_owned()));
        Ok(ApiReply {
            status,
            warnings,
            body,
        })
    }
}

/// The REST collection an object is created in.
pub fn collection(v: &serde_json::Value) -> Result<String, String> {
    let kind = v["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "Namespace" => "namespaces",
        "ServiceAccount" => "serviceaccounts",
        "ConfigMap" => "configmaps",
        "Secret" => "secrets",
        "Service" => "services",
        "Pod" => "pods",
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "PodDisruptionBudget" => "poddisruptionbudgets",
        "MutatingWebhookConfiguration" => "mutatingwebhookconfigurations",
        "CustomResourceDefinition" => "customresourcedefinitions",
        "Component" => "components",
        "Configuration" => "configurations",
        "Subscription" => "subscriptions",
        "Resiliency" => "resiliencies",
        "HTTPEndpoint" => "httpendpoints",
        other => return Err(format!("no collection known for kind {other:?}")),
    };
    let api_version = v["apiVersion"].as_str().unwrap_or_default();
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    Ok(match v["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{base}/namespaces/{ns}/{plural}"),
        None => format!("{base}/{plural}"),
    })
}
