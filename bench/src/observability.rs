//! Metrics on against off: the same invocations at a fixed rate through a
//! pair of sidecars recording Dapr's metrics and a pair started with
//! `--enable-metrics=false`, alternated so drift on a shared machine falls
//! on both alike.

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
        caller: Daprd::start_with(binary, home, &format!("obs-caller-{tag}"), None, extra).await?,
        http: Daprd::start_with(
            binary,
            home,
            &format!("obs-http-{tag}"),
            Some((ports.0, "http")),
            extra,
        )
        .await?,
        grpc: Daprd::start_with(
            binary,
            home,
            &format!("obs-grpc-{tag}"),
            Some((ports.1, "grpc")),
            extra,
        )
        .await?,
    })
}

/// The report section; `ports` are the HTTP and gRPC apps'.
pub async fn section(
    binary: &Path,
    home: &Path,
    ports: (u16, u16),
    args: &Args,
    payload: &Bytes,
) -> anyhow::Result<String> {
    let on = pair(binary, home, "on", &[], ports).await?;
    let off = pair(binary, home, "off", &["--enable-metrics=false"], ports).await?;
    let mut out = format!(
        "### Metrics on against off, fixed {} rps\n\n\
         | call | metrics | CPU of both sidecars per 1,000 rps (cores) | p50 ms |\n|---|---|---|---|\n",
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
        // [off, on]: summed cores per 1,000 rps and p50, over two rounds each.
        let mut cores = [0.0f64; 2];
        let mut p50 = [0.0f64; 2];
        for _ in 0..2 {
            for (i, p) in [&off, &on].into_iter().enumerate() {
                let side = if name == "HTTP" { &p.http } else { &p.grpc };
                let procs: [&dyn Probe; 2] = [&p.caller, side];
                let (run, load) = measured(&procs, &target(p), args, Pace::Rate(args.rate), payload).await?;
                cores[i] += load.cores.iter().sum::<f64>() * 1000.0 / run.rps() / 2.0;
                p50[i] += run.quantile_ms(0.5) / 2.0;
            }
        }
        for (i, label) in ["off", "on"].iter().enumerate() {
            out.push_str(&format!(
                "| {name} | {label} | {:.3} | {:.3} |\n",
                cores[i], p50[i]
            ));
        }
        summary.push_str(&format!(
            "{name}: metrics cost {:+.1}% CPU per request and {:+.3} ms p50.\n",
            100.0 * (cores[1] / cores[0] - 1.0),
            p50[1] - p50[0]
        ));
    }
    out.push('\n');
    out.push_str(&summary);
    out.push('\n');
    Ok(out)
}
