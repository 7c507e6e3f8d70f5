//! `operator-bench`: the operator's pure reconcile work for a large cluster
//! (5,000 Components, 2,000 Dapr-enabled Deployments, from fixtures) and
//! certificate signing on one thread, plus the process's peak memory.

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

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
