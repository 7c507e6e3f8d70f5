//! Starting `daprd` processes and talking HTTP to them.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// A free loopback port (bound once and released).
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` distinct free loopback ports: the listeners are held until all are
/// found, so the system cannot hand out one port twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("port").port())
}

/// A fresh folder for one test's data and registry.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("daprs-it-{name}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A running daprd, killed on drop.
pub struct Daprd {
    child: Child,
    pub http_port: u16,
    pub grpc_port: u16,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Drop for Daprd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What to start.
pub struct Spec<'a> {
    pub app_id: &'a str,
    pub home: &'a Path,
    pub app_port: Option<u16>,
    pub protocol: &'a str,
    pub resources: Option<&'a Path>,
    pub extra: Vec<String>,
    pub env: Vec<(&'a str, String)>,
}

impl<'a> Spec<'a> {
    pub fn new(app_id: &'a str, home: &'a Path) -> Self {
        Self {
            app_id,
            home,
            app_port: None,
            protocol: "http",
            resources: None,
            extra: vec![],
            env: vec![],
        }
    }
}

impl Daprd {
    /// Starts daprd and waits for `/v1.0/healthz/outbound`. Tests run in
    /// parallel, so a port found free can be taken before daprd binds it:
    /// then daprd starts again on other ports.
    pub async fn start(spec: Spec<'_>) -> Self {
        for _ in 0..3 {
            match Self::try_start(&spec).await {
                Ok(d) => return d,
                // A port a test chose itself may equal one picked here.
                Err(log) if log.contains("cannot listen on") || log.contains("are both") => continue,
                Err(log) => panic!("{log}"),
            }
        }
        panic!("daprd found no free ports in three attempts")
    }

    async fn try_start(spec: &Spec<'_>) -> Result<Self, String> {
        let [http_port, grpc_port, metrics_port] = free_ports();
        let log = spec.home.join(format!("{}-{http_port}.log", spec.app_id));
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_daprd"));
        cmd.args(["--app-id", spec.app_id])
            .args(["--dapr-http-port", &http_port.to_string()])
            .args(["--dapr-grpc-port", &grpc_port.to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--app-protocol", spec.protocol])
            .args(["--log-level", "debug"])
            .args(&spec.extra)
            .env("DAPRS_HOME", spec.home)
            .env_remove("DAPR_API_TOKEN")
            .env_remove("APP_API_TOKEN")
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        if !spec.extra.iter().any(|a| a == "--dapr-listen-addresses") {
            cmd.args(["--dapr-listen-addresses", "127.0.0.1"]);
        }
        if let Some(p) = spec.app_port {
            cmd.args(["--app-port", &p.to_string()]);
        }
        if let Some(r) = spec.resources {
            cmd.arg("--resources-path").arg(r);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn daprd");
        let mut d = Self {
            child,
            http_port,
            grpc_port,
            metrics_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = d.get("/v1.0/healthz/outbound").await
                && r.status == 204
            {
                return Ok(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(format!(
                    "daprd exited with {status}: {}",
                    std::fs::read_to_string(&d.log).unwrap_or_default()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "daprd did not start: {}",
                std::fs::read_to_string(&d.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub async fn get(&self, path: &str) -> Result<Reply, String> {
        send("GET", &self.url(path), &[], Bytes::new()).await
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        send(method, &self.url(path), headers, body.into())
            .await
            .expect("request")
    }

    pub async fn grpc(&self) -> daprs_proto::runtime::dapr_client::DaprClient<tonic::transport::Channel> {
        daprs_proto::runtime::dapr_client::DaprClient::connect(format!("http://127.0.0.1:{}", self.grpc_port))
            .await
            .expect("grpc connect")
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Stops the process with SIGTERM-like kill and waits.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as Kubernetes and Ctrl-C-like tooling do.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// A received HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn error_code(&self) -> String {
        self.json()["errorCode"].as_str().unwrap_or_default().to_string()
    }
}

pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Result<Reply, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    reply_of(client.request(req).await.map_err(|e| e.to_string())?).await
}

/// Reads a whole response.
async fn reply_of(res: http::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Runs daprd with `args`, expecting it to refuse to start (exit 1) within
/// 5 s; returns what it printed.
pub fn start_fails(home: &Path, args: &[&str]) -> String {
    start_fails_with(home, args, &[])
}

/// [`start_fails`] with more environment.
pub fn start_fails_with(home: &Path, args: &[&str], env: &[(&str, String)]) -> String {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_daprd"))
        .args(args)
        .env("DAPRS_HOME", home)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run daprd");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    all
}

/// Writes a component file into a fresh resources folder.
pub fn resources(home: &Path, yaml: &str) -> PathBuf {
    let dir = home.join(format!("resources-{}", free_port()));
    std::fs::create_dir_all(&dir).expect("resources dir");
    std::fs::write(dir.join("components.yaml"), yaml).expect("write component");
    dir
}

/// A request body that never arrives.
struct Never;

impl http_body::Body for Never {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// Sends a POST over HTTP/2 (prior knowledge) whose body never comes, and
/// returns the answer the server gives without it.
pub async fn send_h2(url: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
    let client: Client<_, Never> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut req = http::Request::builder().method("POST").uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Never).map_err(|e| e.to_string())?;
    let res = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    reply_of(res).await
}

/// Sends one framed gRPC message of raw bytes to `path` over bare HTTP/2
/// (a client with no timers or checks of its own); returns grpc-status and
/// grpc-message.
pub async fn raw_grpc(port: u16, path: &str, headers: &[(&str, &str)], payload: &[u8]) -> (i32, String) {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(payload.len()).expect("size").to_be_bytes());
    framed.extend_from_slice(payload);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut req = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(framed.into())).expect("request");
    let res = client.request(req).await.expect("h2 call");
    let read = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(|c| {
                let m = h
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                (c, m.replace("%20", " "))
            })
    };
    if let Some(found) = read(res.headers()) {
        return found;
    }
    let body = res.into_body().collect().await.expect("body");
    body.trailers().and_then(read).expect("grpc-status")
}
