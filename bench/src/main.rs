//! `daprs-bench`: what two `daprd` hops add to a request/response on
//! loopback, compared with calling the app directly in the same run; each
//! sidecar's CPU and memory idle and under load; and start-up time.
//!
//! Build `daprd` in release mode first; see BENCHMARKS.md.

mod apps;
mod load;
mod sidecar;
mod stream;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use load::{Pace, Run, Target};
use sidecar::{Daprd, Usage};

#[derive(Parser)]
#[command(
    name = "daprs-bench",
    about = "Measure daprd's added latency, throughput, CPU, memory and start time"
)]
struct Args {
    /// The daprd binary (default: next to this program).
    #[arg(long)]
    daprd: Option<PathBuf>,
    /// Seconds of each fixed-rate and each saturation run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests per second of the fixed-rate runs.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Connections (one caller each).
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Request body size in bytes (echoed back).
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// How many cold starts to time.
    #[arg(long, default_value_t = 20)]
    starts: usize,
}

const MIB: f64 = 1024.0 * 1024.0;

/// CPU and peak memory of the two sidecars over one run.
struct Load {
    cores: [f64; 2],
    peak_rss: [u64; 2],
    peak_private: [u64; 2],
}

/// Runs `target` while sampling the two sidecars' usage.
async fn measured(
    sidecars: [&Daprd; 2],
    target: &Target,
    args: &Args,
    pace: Pace,
    payload: &Bytes,
) -> anyhow::Result<(Run, Load)> {
    let before = [sidecars[0].usage()?, sidecars[1].usage()?];
    let mut peak = [before[0].rss_bytes, before[1].rss_bytes];
    let mut peak_private = [before[0].private_bytes, before[1].private_bytes];
    let run = load::run(
        target,
        args.conns,
        pace,
        Duration::from_secs(args.seconds),
        payload.clone(),
    );
    tokio::pin!(run);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let run = loop {
        tokio::select! {
            r = &mut run => break r?,
            _ = tick.tick() => {
                for (i, d) in sidecars.iter().enumerate() {
                    let u = d.usage()?;
                    peak[i] = peak[i].max(u.rss_bytes);
                    peak_private[i] = peak_private[i].max(u.private_bytes);
                }
            }
        }
    };
    let after = [sidecars[0].usage()?, sidecars[1].usage()?];
    Ok((
        run,
        Load {
            cores: [after[0].cores_since(&before[0]), after[1].cores_since(&before[1])],
            peak_rss: [peak[0].max(after[0].rss_bytes), peak[1].max(after[1].rss_bytes)],
            peak_private: [
                peak_private[0].max(after[0].private_bytes),
                peak_private[1].max(after[1].private_bytes),
            ],
        },
    ))
}

fn latency_row(label: &str, run: &Run) -> String {
    format!(
        "| {label} | {:.3} | {:.3} | {:.3} | {:.0} |",
        run.quantile_ms(0.5),
        run.quantile_ms(0.9),
        run.quantile_ms(0.99),
        run.rps()
    )
}

fn added_row(direct: &Run, via: &Run) -> String {
    format!(
        "| added by the two sidecars | {:+.3} | {:+.3} | {:+.3} | |",
        via.quantile_ms(0.5) - direct.quantile_ms(0.5),
        via.quantile_ms(0.9) - direct.quantile_ms(0.9),
        via.quantile_ms(0.99) - direct.quantile_ms(0.99),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = sidecar::binary(args.daprd.as_ref())?;
    let home = std::env::temp_dir().join(format!("daprs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&home)?;
    let payload = Bytes::from(vec![b'x'; args.payload]);

    // (c) Start-up: spawn to the first 204 from /v1.0/healthz/outbound.
    let mut starts = Vec::with_capacity(args.starts);
    for i in 0..args.starts {
        let d = Daprd::start(&binary, &home, &format!("start-{i}"), None).await?;
        starts.push(d.ready_in);
    }
    starts.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;

    let http_app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_port = http_app.local_addr()?.port();
    apps::http(http_app);
    let grpc_app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc_port = grpc_app.local_addr()?.port();
    apps::grpc(grpc_app);

    let echo_app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_port = echo_app.local_addr()?.port();
    stream::serve(echo_app);

    let caller = Daprd::start(&binary, &home, "bench-caller", None).await?;
    let http_side = Daprd::start(&binary, &home, "bench-http", Some((http_port, "http"))).await?;
    let grpc_side = Daprd::start(&binary, &home, "bench-grpc", Some((grpc_port, "grpc"))).await?;
    let stream_side = Daprd::start(&binary, &home, "bench-stream", Some((echo_port, "grpc"))).await?;

    // (b) Idle usage, after the start-up work has settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle0: Vec<Usage> = [&caller, &http_side]
        .iter()
        .map(|d| d.usage())
        .collect::<Result<_, _>>()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle1: Vec<Usage> = [&caller, &http_side]
        .iter()
        .map(|d| d.usage())
        .collect::<Result<_, _>>()?;

    let cases = [
        (
            "HTTP",
            &http_side,
            Target::Http {
                port: http_port,
                path: "/echo".into(),
            },
            Target::Http {
                port: caller.http_port,
                path: "/v1.0/invoke/bench-http/method/echo".into(),
            },
        ),
        (
            "gRPC",
            &grpc_side,
            Target::AppGrpc { port: grpc_port },
            Target::DaprGrpc {
                port: caller.grpc_port,
                app_id: "bench-grpc".into(),
            },
        ),
        (
            "proxied gRPC (dapr-app-id)",
            &grpc_side,
            Target::AppGrpc { port: grpc_port },
            Target::Proxied {
                port: caller.grpc_port,
                app_id: "bench-grpc".into(),
            },
        ),
    ];

    let started = Instant::now();
    let mut out = String::new();
    let push = |out: &mut String, line: String| {
        out.push_str(&line);
        out.push('\n');
    };
    push(
        &mut out,
        format!(
            "Payload {} B, {} connections, {} s per run, fixed rate {} rps.\n",
            args.payload, args.conns, args.seconds, args.rate
        ),
    );
    let mut usage_rows = Vec::new();
    for (name, target_side, direct, via) in &cases {
        let sides = [&caller, *target_side];
        let (fixed_direct, _) = measured(sides, direct, &args, Pace::Rate(args.rate), &payload).await?;
        let (fixed_via, fixed_load) = measured(sides, via, &args, Pace::Rate(args.rate), &payload).await?;
        let (max_direct, _) = measured(sides, direct, &args, Pace::Saturate, &payload).await?;
        let (max_via, max_load) = measured(sides, via, &args, Pace::Saturate, &payload).await?;
        push(&mut out, format!("### {name}, fixed {} rps\n", args.rate));
        push(&mut out, "| path | p50 ms | p90 ms | p99 ms | rps |".into());
        push(&mut out, "|---|---|---|---|---|".into());
        push(&mut out, latency_row("app → app (direct)", &fixed_direct));
        push(&mut out, latency_row("app → daprd → daprd → app", &fixed_via));
        push(&mut out, added_row(&fixed_direct, &fixed_via));
        push(&mut out, format!("\n### {name}, maximum throughput\n"));
        push(&mut out, "| path | p50 ms | p90 ms | p99 ms | rps |".into());
        push(&mut out, "|---|---|---|---|---|".into());
        push(&mut out, latency_row("app → app (direct)", &max_direct));
        push(&mut out, latency_row("app → daprd → daprd → app", &max_via));
        push(
            &mut out,
            format!(
                "\nThroughput through the sidecars: {:.0}% of direct.\n",
                100.0 * max_via.rps() / max_direct.rps()
            ),
        );
        for (load, label) in [
            (&fixed_load, format!("{} rps", args.rate)),
            (&max_load, "saturated".into()),
        ] {
            for (i, role) in ["caller", "target"].iter().enumerate() {
                usage_rows.push(format!(
                    "| {name} | {label} | {role} | {:.3} | {:.1} | {:.1} |",
                    load.cores[i],
                    load.peak_rss[i] as f64 / MIB,
                    load.peak_private[i] as f64 / MIB
                ));
            }
        }
    }
    push(
        &mut out,
        "### Proxied gRPC streams (one bidirectional stream, each message echoed)\n".into(),
    );
    push(
        &mut out,
        "| messages | path | messages/s | MiB/s each way | through sidecars / direct |".into(),
    );
    push(&mut out, "|---|---|---|---|---|".into());
    for (count, size) in [(100_000u32, 64usize), (10_000, 16 << 10)] {
        let direct = stream::bidi(echo_port, None, count, size).await?;
        let via = stream::bidi(caller.grpc_port, Some("bench-stream"), count, size).await?;
        let label = format!("{count} × {size} B");
        push(
            &mut out,
            format!(
                "| {label} | direct | {:.0} | {:.1} | |",
                direct.messages_per_s, direct.mib_per_s
            ),
        );
        push(
            &mut out,
            format!(
                "| {label} | app → daprd → daprd → app | {:.0} | {:.1} | {:.0}% |",
                via.messages_per_s,
                via.mib_per_s,
                100.0 * via.messages_per_s / direct.messages_per_s
            ),
        );
    }
    let rss = stream::rss_during([&caller, &stream_side], caller.grpc_port, "bench-stream", 100).await?;
    push(
        &mut out,
        format!(
            "\nRSS while a 100 MiB client stream (1 MiB messages) passes: caller sidecar {:.1} → {:.1} MiB (+{:.1}), target sidecar {:.1} → {:.1} MiB (+{:.1}).\n",
            rss[0].0 as f64 / MIB,
            rss[0].1 as f64 / MIB,
            rss[0].1.saturating_sub(rss[0].0) as f64 / MIB,
            rss[1].0 as f64 / MIB,
            rss[1].1 as f64 / MIB,
            rss[1].1.saturating_sub(rss[1].0) as f64 / MIB,
        ),
    );

    push(&mut out, "### Each daprd's CPU and memory\n".into());
    push(
        &mut out,
        "| protocol | load | sidecar | CPU cores | peak RSS MiB | of which private MiB |".into(),
    );
    push(&mut out, "|---|---|---|---|---|---|".into());
    for (i, role) in ["caller", "target"].iter().enumerate() {
        push(
            &mut out,
            format!(
                "| - | idle | {role} | {:.4} | {:.1} | {:.1} |",
                idle1[i].cores_since(&idle0[i]),
                idle1[i].rss_bytes as f64 / MIB,
                idle1[i].private_bytes as f64 / MIB
            ),
        );
    }
    for row in usage_rows {
        push(&mut out, row);
    }
    push(
        &mut out,
        format!(
            "\n### Start-up (spawn → /v1.0/healthz/outbound 204), {} starts\n\nmin {:.1} ms, median {:.1} ms, max {:.1} ms\n",
            starts.len(),
            starts.first().copied().map_or(f64::NAN, ms),
            starts.get(starts.len() / 2).copied().map_or(f64::NAN, ms),
            starts.last().copied().map_or(f64::NAN, ms),
        ),
    );
    print!("{out}");
    eprintln!("load phases took {:.0} s", started.elapsed().as_secs_f64());
    drop((caller, http_side, grpc_side, stream_side));
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}
