//! `operator-bench`: the operator's pure reconcile work for a large cluster
//! (5,000 Components, 2,000 Dapr-enabled Deployments, from fixtures) and
//! certificate signing on one thread, plus the process's peak memory.
//!
//! With `--live`, the whole operator (`serve`: CA, watch caches, leader
//! election, controllers) runs instead against an in-memory API server
//! holding the same objects, and the bench reports how long the controllers
//! take to write every Service and Component status, and the memory used.

#[path = "../../../operator/tests/support/fake_api.rs"]
mod fake_api;

use std::time::{Duration, Instant};

use clap::Parser;
use daprs_api::v1alpha1::Component;
use daprs_operator::{ca::Ca, scope, service, validate};
use k8s_openapi::api::apps::v1::Deployment;
use time::OffsetDateTime;

#[derive(Parser)]
#[command(name = "operator-bench", about = "Measure reconcile and signing throughput")]
struct Args {
    #[arg(long, default_value_t = 5000)]
    components: usize,
    #[arg(long, default_value_t = 2000)]
    deployments: usize,
    /// Seconds of certificate signing.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Run the real operator against an in-memory API server instead.
    #[arg(long)]
    live: bool,
}

fn component(i: usize) -> Component {
    let kind = [
        "state.redis",
        "pubsub.kafka",
        "bindings.http",
        "state.postgresql",
        "secretstores.local.file",
    ][i % 5];
    let meta = match kind {
        "state.redis" => {
            "  - name: redisHost\n    value: redis:6379\n  - name: redisPassword\n    secretKeyRef:\n      name: redis\n      key: password\n"
        }
        "pubsub.kafka" => "  - name: brokers\n    value: kafka:9092\n",
        "bindings.http" => "  - name: url\n    value: http://example.com\n",
        "state.postgresql" => "  - name: connectionString\n    value: host=pg\n",
        _ => "  - name: secretsFile\n    value: /s.json\n",
    };
    let yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: c{i}\n  namespace: ns{}\nspec:\n  type: {kind}\n  version: v1\n  metadata:\n{meta}scopes:\n- app{}\n",
        i % 50,
        i % 400
    );
    match daprs_api::resource::decode_yaml(&yaml).map(|d| d.resources.into_iter().next()) {
        Ok(Some(daprs_api::Resource::Component(c))) => c,
        _ => panic!("fixture component {i} does not parse"),
    }
}

fn deployment(i: usize) -> Deployment {
    let v = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("app{i}"), "namespace": format!("ns{}", i % 50), "uid": format!("uid-{i}")},
        "spec": {"selector": {"matchLabels": {"app": format!("app{i}")}},
            "template": {"metadata": {"labels": {"app": format!("app{i}")},
                "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": format!("app{i}"), "dapr.io/app-port": "8080"}},
                "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}}}
    });
    serde_json::from_value(v).unwrap_or_else(|e| panic!("fixture deployment {i}: {e}"))
}

/// A `/proc/self/status` memory line (`VmRSS`, `VmHWM`) in MiB.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .map(str::to_string)
        })
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Peak resident memory so far.
fn rss_mib() -> f64 {
    status_mib("VmHWM")
}

/// Resident memory now.
fn rss_now_mib() -> f64 {
    status_mib("VmRSS")
}

/// The operator end to end: every Service and every Component status
/// written through the API, timed from start.
fn live(args: &Args) -> anyhow::Result<()> {
    use daprs_operator::serve::{ServeSettings, run};
    let empty = rss_now_mib();
    let api = fake_api::FakeApi::default();
    for (i, c) in (0..args.components).map(component).enumerate() {
        let mut v = serde_json::to_value(&c)?;
        v["metadata"]["uid"] = format!("c-{i}").into();
        v["metadata"]["resourceVersion"] = "1".into();
        let ns = format!("ns{}", i % 50);
        api.put(
            &format!("/apis/dapr.io/v1alpha1/namespaces/{ns}/components/c{i}"),
            v,
        );
    }
    for (i, d) in (0..args.deployments).map(deployment).enumerate() {
        let mut v = serde_json::to_value(&d)?;
        v["metadata"]["resourceVersion"] = "1".into();
        let ns = format!("ns{}", i % 50);
        api.put(&format!("/apis/apps/v1/namespaces/{ns}/deployments/app{i}"), v);
    }
    let seeded = rss_now_mib();
    let mut settings = ServeSettings::loopback("bench")?;
    settings.ca_sync_interval = Duration::from_secs(10);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let t0 = Instant::now();
    let (services, statuses, took) = rt.block_on(async {
        tokio::spawn(run(api.client(), settings));
        loop {
            let (services, statuses) = match api.objects.lock() {
                Ok(o) => (
                    o.keys()
                        .filter(|k| k.contains("/services/") && k.ends_with("-dapr"))
                        .count(),
                    o.iter()
                        .filter(|(k, v)| k.contains("/components/") && v["status"]["conditions"].is_array())
                        .count(),
                ),
                Err(_) => (0, 0),
            };
            if (services >= args.deployments && statuses >= args.components)
                || t0.elapsed() > Duration::from_secs(120)
            {
                return (services, statuses, t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    anyhow::ensure!(
        services == args.deployments && statuses == args.components,
        "after {took:?}: {services} Services, {statuses} Component statuses"
    );
    // Let the caches settle, then read the memory.
    std::thread::sleep(Duration::from_secs(2));
    let now = rss_now_mib();
    let peak = rss_mib();
    // The API server's own copy has grown (Services, statuses): a clone of
    // it costs what it holds, which leaves the operator's part.
    let copy = api.objects.lock().map(|o| o.clone()).ok();
    let api_server = rss_now_mib() - now;
    drop(copy);
    println!(
        "Live reconcile through the API of {} Components and {} Deployments (leader election, watches, {services} Services applied, {statuses} statuses written): {:.2} s",
        args.components,
        args.deployments,
        took.as_secs_f64()
    );
    println!(
        "RSS: {empty:.1} MiB empty, {seeded:.1} MiB with the in-memory API server loaded, {now:.1} MiB with the operator running (peak {peak:.1} MiB). The API server holds {api_server:.1} MiB by then, which leaves {:.1} MiB for the operator",
        now - empty - api_server
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.live {
        return live(&args);
    }
    let components: Vec<Component> = (0..args.components).map(component).collect();
    let deployments: Vec<Deployment> = (0..args.deployments).map(deployment).collect();

    // Full reconcile: validate every Component, compute every Service, and
    // the scoped view of every app-id.
    let t0 = Instant::now();
    let now = "2026-11-20T00:00:00Z";
    let statuses: usize = components
        .iter()
        .filter(|c| validate::status(c, now).conditions[0].status == "True")
        .count();
    let services: usize = deployments
        .iter()
        .filter_map(service::for_deployment)
        .filter(|s| s.is_ok())
        .count();
    let mut scoped = 0usize;
    for i in 0..args.deployments {
        scoped += scope::components(&components, &format!("ns{}", i % 50), &format!("app{i}")).len();
    }
    let reconcile = t0.elapsed();
    anyhow::ensure!(
        statuses == args.components,
        "{statuses} valid of {}",
        args.components
    );
    anyhow::ensure!(services == args.deployments, "{services} services");

    // Signing on this thread.
    let (ca, _) = Ca::generate("cluster.local", "dapr-system", OffsetDateTime::now_utc())
        .map_err(anyhow::Error::msg)?;
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    let t1 = Instant::now();
    let mut signed = 0u64;
    let day = Duration::from_secs(24 * 3600);
    let skew = Duration::from_secs(900);
    while t1.elapsed() < Duration::from_secs(args.seconds) {
        ca.sign(
            csr.as_bytes(),
            "spiffe://public/ns/prod/orders",
            &[],
            day,
            skew,
            OffsetDateTime::now_utc(),
        )
        .map_err(anyhow::Error::msg)?;
        signed += 1;
    }
    let per_sec = signed as f64 / t1.elapsed().as_secs_f64();

    println!(
        "Reconcile of {} Components and {} Deployments (validate, desired Services, scoped views: {scoped} entries): {:.0} ms",
        args.components,
        args.deployments,
        reconcile.as_secs_f64() * 1000.0
    );
    println!("Certificate signing, one thread: {per_sec:.0} signatures/s");
    println!(
        "Peak RSS of this process with all objects loaded: {:.1} MiB",
        rss_mib()
    );
    Ok(())
}
