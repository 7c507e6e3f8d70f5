//! Observability's cost: the same invocations at a fixed rate through
//! sidecars with everything off (`--enable-metrics=false`, no tracing),
//! with Dapr's metrics, and with metrics and tracing at sampling rate 1
//! exporting every span over OTLP/HTTP to a collector on loopback (the echo
//! app, which reads each export and answers 200). The setups alternate so
//! drift on a shared machine falls on all alike.

use std::path::Path;

use bytes::Bytes;

use super::{Args, measured};
use crate::{
    load::{Pace, Target},
    sidecar::{Daprd, Probe},
};

struct Pair {
    tag: &'static str,
    caller: Daprd,
    http: Daprd,
    grpc: Daprd,
}

async fn pair(
    binary: &Path,
    home: &Path,
    tag: &'static str,
    extra: &[&str],
    ports: (u16, u16),
) -> anyhow::Result<Pair> {
    Ok(Pair {
        tag,
        caller: Daprd::start_with(binary, home, &format!("obs-caller-{tag}"), None, extra, &[]).await?,
        http: Daprd::start_with(
            binary,
            home,
            &format!("obs-http-{tag}"),
            Some((ports.0, "http")),
            extra,
            &[],
        )
        .await?,
        grpc: Daprd::start_with(
            binary,
            home,
            &format!("obs-grpc-{tag}"),
            Some((ports.1, "grpc")),
            extra,
            &[],
        )
        .await?,
    })
}

/// The setups compared, in the order of the table.
const SETUPS: [(&str, &str); 3] = [
    ("off", "off"),
    ("metrics", "metrics"),
    ("traced", "metrics + tracing 1.0"),
];

/// The report section; `ports` are the HTTP and gRPC apps'.
pub async fn section(
    binary: &Path,
    home: &Path,
    ports: (u16, u16),
    args: &Args,
    payload: &Bytes,
) -> anyhow::Result<String> {
    let config = home.join("traced.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: traced\nspec:\n  \
             tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: 127.0.0.1:{}\n      \
             isSecure: false\n      protocol: http\n",
            ports.0
        ),
    )?;
    let config = config.display().to_string();
    let pairs = [
        pair(binary, home, "off", &["--enable-metrics=false"], ports).await?,
        pair(binary, home, "metrics", &[], ports).await?,
        pair(binary, home, "traced", &["--config", &config], ports).await?,
    ];
    let mut out = format!(
        "### Metrics and tracing against neither, fixed {} rps\n\n\
         | call | observability | CPU of both sidecars per 1,000 rps (cores) | p50 ms |\n|---|---|---|---|\n",
        args.rate
    );
    let mut summary = String::new();
    for name in ["HTTP", "gRPC"] {
        let target = |p: &Pair| match name {
            "HTTP" => Target::Http {
                port: p.caller.http_port,
                path: format!("/v1.0/invoke/obs-http-{}/method/echo", p.tag),
            },
            _ => Target::DaprGrpc {
                port: p.caller.grpc_port,
                app_id: format!("obs-grpc-{}", p.tag),
            },
        };
        // Per setup: summed cores per 1,000 rps and p50, over two rounds each.
        let mut cores = [0.0f64; 3];
        let mut p50 = [0.0f64; 3];
        for _ in 0..2 {
            for (i, p) in pairs.iter().enumerate() {
                let side = if name == "HTTP" { &p.http } else { &p.grpc };
                let procs: [&dyn Probe; 2] = [&p.caller, side];
                let (run, load) = measured(&procs, &target(p), args, Pace::Rate(args.rate), payload).await?;
                cores[i] += load.cores.iter().sum::<f64>() * 1000.0 / run.rps() / 2.0;
                p50[i] += run.quantile_ms(0.5) / 2.0;
            }
        }
        for (i, (_, label)) in SETUPS.iter().enumerate() {
            out.push_str(&format!(
                "| {name} | {label} | {:.3} | {:.3} |\n",
                cores[i], p50[i]
            ));
        }
        for i in 1..SETUPS.len() {
            summary.push_str(&format!(
                "{name}: {} costs {:+.1}% CPU per request and {:+.3} ms p50.\n",
                SETUPS[i].1,
                100.0 * (cores[i] / cores[0] - 1.0),
                p50[i] - p50[0]
            ));
        }
    }
    out.push('\n');
    out.push_str(&summary);
    out.push('\n');
    Ok(out)
}
