//! `injector-bench`: how fast the injector builds patches (pure, one core)
//! and answers AdmissionReviews over HTTPS at a fixed rate and flat out.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use daprs_injector::{
    admission::Requesters,
    patch::{self, Decision},
    server::{self, ReloadingCert, Webhook},
    sidecar::{InjectorConfig, NativeSidecar},
};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

#[derive(Parser)]
#[command(name = "injector-bench", about = "Measure patch building and webhook latency")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// AdmissionReviews per second in the fixed-rate run.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// HTTPS connections.
    #[arg(long, default_value_t = 8)]
    conns: usize,
}

/// A pod as the ReplicaSet controller submits it for Dapr's quickstart app.
fn pod() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "nodeapp-6d8f7c-", "namespace": "default",
            "labels": {"app": "node", "pod-template-hash": "6d8f7c"},
            "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "nodeapp",
                "dapr.io/app-port": "3000", "dapr.io/enable-api-logging": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "nodeapp-6d8f7c",
                "uid": "0b1c2d3e-0000-0000-0000-000000000001", "controller": true}]},
        "spec": {"containers": [{"name": "node", "image": "ghcr.io/dapr/samples/hello-k8s-node:latest",
                "env": [{"name": "APP_PORT", "value": "3000"}], "ports": [{"containerPort": 3000}],
                "volumeMounts": [{"name": "kube-api-access-abcde", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]}],
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}],
            "serviceAccountName": "default", "restartPolicy": "Always"}
    })
}

fn review_body() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "11111111-2222-3333-4444-555555555555",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default", "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system"]},
                "object": pod(), "dryRun": false}
        })
        .to_string(),
    )
}

fn config() -> InjectorConfig {
    InjectorConfig {
        native_sidecar: NativeSidecar::Off,
        trust_anchors: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        ..InjectorConfig::default()
    }
}

fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

type HttpsClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

fn client(ca_pem: &str) -> anyhow::Result<HttpsClient> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    // One connection per caller, kept alive, as the API server does.
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(https))
}

async fn admit(client: &HttpsClient, url: &str, body: &Bytes) -> anyhow::Result<()> {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status.is_success(), "status {status}");
    anyhow::ensure!(
        bytes.windows(9).any(|w| w == b"JSONPatch"),
        "no patch in the answer"
    );
    Ok(())
}

async fn run(
    clients: &[HttpsClient],
    url: &str,
    rate: Option<u32>,
    seconds: u64,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let body = review_body();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let n = clients.len();
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().cloned().enumerate() {
        let (url, body) = (url.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            let gap = rate.map(|r| Duration::from_secs_f64(n as f64 / f64::from(r)));
            let mut next = start + gap.map_or(Duration::ZERO, |g| g * i as u32 / n as u32);
            let mut lat = Vec::new();
            while next < end {
                if gap.is_some() {
                    tokio::time::sleep_until(next.into()).await;
                }
                let t0 = Instant::now();
                admit(&c, &url, &body).await?;
                lat.push(t0.elapsed());
                next = gap.map_or_else(Instant::now, |g| next + g);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_unstable();
    Ok((all, start.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();

    // Pure patch building on this thread.
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod())?;
    let cfg = config();
    let t0 = Instant::now();
    let mut built = 0u64;
    while t0.elapsed() < Duration::from_secs(args.seconds.min(5)) {
        for _ in 0..100 {
            match patch::decide(&typed, "default", &cfg) {
                Decision::Inject { patch, .. } => built += u64::from(!patch.is_empty()),
                other => anyhow::bail!("unexpected decision {other:?}"),
            }
        }
    }
    let per_sec = built as f64 / t0.elapsed().as_secs_f64();
    // The whole review (parse, decide, encode) without the network.
    let body = review_body();
    let requesters = Requesters::default();
    let t1 = Instant::now();
    let mut reviewed = 0u64;
    while t1.elapsed() < Duration::from_secs(args.seconds.min(5)) {
        for _ in 0..100 {
            daprs_injector::admission::review(&body, &cfg, &requesters)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            reviewed += 1;
        }
    }
    let reviews_per_sec = reviewed as f64 / t1.elapsed().as_secs_f64();

    // Over HTTPS.
    let dir = std::env::temp_dir().join(format!("injector-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])?.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("tls.crt"), leaf.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    let cert =
        Arc::new(ReloadingCert::new(dir.join("tls.crt"), dir.join("tls.key")).map_err(anyhow::Error::msg)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://127.0.0.1:{}/mutate", listener.local_addr()?.port());
    let hook = Arc::new(Webhook {
        config: cfg.clone(),
        requesters,
        tracer: daprs_telemetry::trace::Tracer::off(),
    });
    tokio::spawn(server::serve(
        listener,
        cert,
        server::router(hook),
        std::future::pending(),
    ));
    let clients: Vec<HttpsClient> = (0..args.conns)
        .map(|_| client(&ca_cert.pem()))
        .collect::<Result<_, _>>()?;
    for c in &clients {
        admit(c, &url, &review_body()).await?;
    }
    let (fixed, _) = run(&clients, &url, Some(args.rate), args.seconds).await?;
    let (max, took) = run(&clients, &url, None, args.seconds).await?;
    let _ = std::fs::remove_dir_all(&dir);

    println!("Pure patch builder, one thread: {per_sec:.0} patches/s");
    println!(
        "Whole review without the network (parse, decide, encode), one thread: {reviews_per_sec:.0} reviews/s\n"
    );
    println!(
        "| over HTTPS ({} connections) | p50 ms | p90 ms | p99 ms | reviews/s |",
        args.conns
    );
    println!("|---|---|---|---|---|");
    println!(
        "| fixed {} /s | {:.3} | {:.3} | {:.3} | {:.0} |",
        args.rate,
        quantile_ms(&fixed, 0.5),
        quantile_ms(&fixed, 0.9),
        quantile_ms(&fixed, 0.99),
        fixed.len() as f64 / args.seconds as f64
    );
    println!(
        "| saturated | {:.3} | {:.3} | {:.3} | {:.0} |",
        quantile_ms(&max, 0.5),
        quantile_ms(&max, 0.9),
        quantile_ms(&max, 0.99),
        max.len() as f64 / took.as_secs_f64()
    );
    Ok(())
}
