//! `daprs-bench`: what two `daprd` hops add to a request/response on
//! loopback, compared with calling the app directly in the same run; each
//! sidecar's CPU and memory idle and under load; and start-up time.
//!
//! Build `daprd` in release mode first; see BENCHMARKS.md.

mod apps;
mod load;
mod mtls;
mod nginx;
mod observability;
mod sidecar;
mod soak;
mod stream;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use load::{Pace, Run, Target};
use nginx::Nginx;
use sidecar::{Daprd, Probe, Usage};

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
    /// Run only the protocols whose name contains this (http, grpc, proxied).
    #[arg(long)]
    only: Option<String>,
    /// Mutual TLS between the sidecars, each with a certificate from the
    /// operator's CA (run in this process over an in-memory API server).
    #[arg(long)]
    mtls: bool,
    /// Instead of everything else: HTTP invocation at `--rate` for this many
    /// seconds, each sidecar's memory reported minute by minute.
    #[arg(long)]
    soak: Option<u64>,
}

const MIB: f64 = 1024.0 * 1024.0;

/// CPU and peak memory of each measured process over one run.
struct Load {
    cores: Vec<f64>,
    peak_rss: Vec<u64>,
    peak_private: Vec<u64>,
}

/// Runs `target` while sampling the usage of `procs`.
async fn measured(
    procs: &[&dyn Probe],
    target: &Target,
    args: &Args,
    pace: Pace,
    payload: &Bytes,
) -> anyhow::Result<(Run, Load)> {
    let before: Vec<Usage> = procs.iter().map(|p| p.usage()).collect::<Result<_, _>>()?;
    let mut peak: Vec<u64> = before.iter().map(|u| u.rss_bytes).collect();
    let mut peak_private: Vec<u64> = before.iter().map(|u| u.private_bytes).collect();
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
                for (i, p) in procs.iter().enumerate() {
                    let u = p.usage()?;
                    peak[i] = peak[i].max(u.rss_bytes);
                    peak_private[i] = peak_private[i].max(u.private_bytes);
                }
            }
        }
    };
    let mut load = Load {
        cores: Vec::new(),
        peak_rss: peak,
        peak_private,
    };
    for (i, p) in procs.iter().enumerate() {
        let after = p.usage()?;
        load.cores.push(after.cores_since(&before[i]));
        load.peak_rss[i] = load.peak_rss[i].max(after.rss_bytes);
        load.peak_private[i] = load.peak_private[i].max(after.private_bytes);
    }
    Ok((run, load))
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

fn added_row(label: &str, direct: &Run, via: &Run) -> String {
    format!(
        "| {label} | {:+.3} | {:+.3} | {:+.3} | |",
        via.quantile_ms(0.5) - direct.quantile_ms(0.5),
        via.quantile_ms(0.9) - direct.quantile_ms(0.9),
        via.quantile_ms(0.99) - direct.quantile_ms(0.99),
    )
}

/// One protocol: the direct path, the path through two sidecars and, for
/// HTTP, the same through two nginx hops.
struct Case<'a> {
    name: &'static str,
    target_side: &'a Daprd,
    direct: Target,
    via: Target,
    reference: Option<(Target, [&'a Nginx; 2])>,
}

/// The four (or six) runs of one case and the report rows they make.
async fn run_case(
    case: &Case<'_>,
    caller: &Daprd,
    args: &Args,
    payload: &Bytes,
    usage_rows: &mut Vec<String>,
) -> anyhow::Result<String> {
    let sides: [&dyn Probe; 2] = [caller, case.target_side];
    let name = case.name;
    let fixed = Pace::Rate(args.rate);
    let (fixed_direct, _) = measured(&sides, &case.direct, args, fixed, payload).await?;
    let (fixed_via, fixed_load) = measured(&sides, &case.via, args, fixed, payload).await?;
    let (max_direct, _) = measured(&sides, &case.direct, args, Pace::Saturate, payload).await?;
    let (max_via, max_load) = measured(&sides, &case.via, args, Pace::Saturate, payload).await?;
    let mut reference = None;
    if let Some((target, hops)) = &case.reference {
        let hops: [&dyn Probe; 2] = [hops[0], hops[1]];
        let f = measured(&hops, target, args, fixed, payload).await?;
        let m = measured(&hops, target, args, Pace::Saturate, payload).await?;
        reference = Some((f, m));
    }
    let mut out = format!(
        "### {name}, fixed {} rps\n\n| path | p50 ms | p90 ms | p99 ms | rps |\n|---|---|---|---|---|\n",
        args.rate
    );
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(latency_row("app → app (direct)", &fixed_direct));
    line(latency_row("app → daprd → daprd → app", &fixed_via));
    if let Some(((f, _), _)) = &reference {
        line(latency_row("app → nginx → nginx → app", f));
    }
    line(added_row("added by the two sidecars", &fixed_direct, &fixed_via));
    if let Some(((f, _), _)) = &reference {
        line(added_row("added by the two nginx hops", &fixed_direct, f));
    }
    line(format!(
        "\n### {name}, maximum throughput\n\n| path | p50 ms | p90 ms | p99 ms | rps |\n|---|---|---|---|---|"
    ));
    line(latency_row("app → app (direct)", &max_direct));
    line(latency_row("app → daprd → daprd → app", &max_via));
    if let Some((_, (m, _))) = &reference {
        line(latency_row("app → nginx → nginx → app", m));
    }
    line(format!(
        "\nThroughput through the sidecars: {:.0}% of direct.",
        100.0 * max_via.rps() / max_direct.rps()
    ));
    if let Some(((fixed_ref, fixed_hops), (max_ref, max_hops))) = &reference {
        let hop = fixed_hops.cores.iter().sum::<f64>() / 2.0;
        let per_k = |cores: f64, run: &Run| cores * 1000.0 / run.rps();
        line(format!(
            "Through two nginx hops: {:.0}% of direct; the sidecars reach {:.2}× the nginx hops' throughput.\n\n\
             Against one nginx hop at {} rps: each sidecar's CPU per request is {:.2}× (caller) and {:.2}× (target) \
             an nginx hop's ({:.3} cores per 1,000 rps against {:.3} and {:.3}); p50 added {:+.3} ms against nginx's {:+.3} ms.",
            100.0 * max_ref.rps() / max_direct.rps(),
            max_via.rps() / max_ref.rps(),
            args.rate,
            per_k(fixed_load.cores[0], &fixed_via) / per_k(hop, fixed_ref),
            per_k(fixed_load.cores[1], &fixed_via) / per_k(hop, fixed_ref),
            per_k(hop, fixed_ref),
            per_k(fixed_load.cores[0], &fixed_via),
            per_k(fixed_load.cores[1], &fixed_via),
            fixed_via.quantile_ms(0.5) - fixed_direct.quantile_ms(0.5),
            fixed_ref.quantile_ms(0.5) - fixed_direct.quantile_ms(0.5),
        ));
        for (load, label) in [
            (fixed_hops, format!("{} rps", args.rate)),
            (max_hops, "saturated".into()),
        ] {
            for (i, role) in ["nginx hop 1", "nginx hop 2"].iter().enumerate() {
                usage_rows.push(usage_row(name, &label, role, load, i));
            }
        }
    }
    out.push('\n');
    for (load, label) in [
        (&fixed_load, format!("{} rps", args.rate)),
        (&max_load, "saturated".into()),
    ] {
        for (i, role) in ["caller", "target"].iter().enumerate() {
            usage_rows.push(usage_row(name, &label, role, load, i));
        }
    }
    Ok(out)
}

fn usage_row(name: &str, label: &str, role: &str, load: &Load, i: usize) -> String {
    format!(
        "| {name} | {label} | {role} | {:.3} | {:.1} | {:.1} |",
        load.cores[i],
        load.peak_rss[i] as f64 / MIB,
        load.peak_private[i] as f64 / MIB
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = sidecar::binary(args.daprd.as_ref())?;
    let home = std::env::temp_dir().join(format!("daprs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&home)?;
    let payload = Bytes::from(vec![b'x'; args.payload]);

    let control_plane = match args.mtls {
        true => Some(mtls::ControlPlane::start(&home).await?),
        false => None,
    };
    // Every sidecar of the run, with a certificate of its own under --mtls.
    let start = async |app_id: &str, app: Option<(u16, &str)>| -> anyhow::Result<Daprd> {
        match &control_plane {
            None => Daprd::start(&binary, &home, app_id, app).await,
            Some(cp) => {
                let (flags, env) = cp.identity(app_id)?;
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                Daprd::start_with(&binary, &home, app_id, app, &flags, &env).await
            }
        }
    };

    // (c) Start-up: spawn to the first 204 from /v1.0/healthz/outbound.
    let mut starts = Vec::with_capacity(args.starts);
    for i in 0..args.starts {
        let d = start(&format!("start-{i}"), None).await?;
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

    let caller = start("bench-caller", None).await?;
    let http_side = start("bench-http", Some((http_port, "http"))).await?;
    let grpc_side = start("bench-grpc", Some((grpc_port, "grpc"))).await?;
    let stream_side = start("bench-stream", Some((echo_port, "grpc"))).await?;

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

    if let Some(seconds) = args.soak {
        let target = Target::Http {
            port: caller.http_port,
            path: "/v1.0/invoke/bench-http/method/echo".into(),
        };
        let sides = [("caller", &caller), ("target", &http_side)];
        print!(
            "{}",
            soak::section(sides, &target, args.conns, args.rate, seconds, &payload).await?
        );
        drop((caller, http_side, grpc_side, stream_side));
        let _ = std::fs::remove_dir_all(&home);
        return Ok(());
    }

    let nginx = match nginx::binary() {
        Some(bin) => {
            let second = Nginx::start(&bin, &home, "nginx-2", http_port).await?;
            let first = Nginx::start(&bin, &home, "nginx-1", second.port).await?;
            Some([first, second])
        }
        None => {
            eprintln!("nginx not found: the reference hops are skipped");
            None
        }
    };
    let cases = [
        Case {
            name: "HTTP",
            target_side: &http_side,
            direct: Target::Http {
                port: http_port,
                path: "/echo".into(),
            },
            via: Target::Http {
                port: caller.http_port,
                path: "/v1.0/invoke/bench-http/method/echo".into(),
            },
            reference: nginx.as_ref().map(|[a, b]| {
                (
                    Target::Http {
                        port: a.port,
                        path: "/echo".into(),
                    },
                    [a, b],
                )
            }),
        },
        Case {
            name: "gRPC",
            target_side: &grpc_side,
            direct: Target::AppGrpc { port: grpc_port },
            via: Target::DaprGrpc {
                port: caller.grpc_port,
                app_id: "bench-grpc".into(),
            },
            reference: None,
        },
        Case {
            name: "proxied gRPC (dapr-app-id)",
            target_side: &grpc_side,
            direct: Target::AppGrpc { port: grpc_port },
            via: Target::Proxied {
                port: caller.grpc_port,
                app_id: "bench-grpc".into(),
            },
            reference: None,
        },
    ];

    let started = Instant::now();
    let mut out = format!(
        "Payload {} B, {} connections, {} s per run, fixed rate {} rps.\n\n",
        args.payload, args.conns, args.seconds, args.rate
    );
    let push = |out: &mut String, line: String| {
        out.push_str(&line);
        out.push('\n');
    };
    let mut usage_rows = Vec::new();
    let chosen = |name: &str| {
        args.only
            .as_deref()
            .is_none_or(|o| name.to_ascii_lowercase().contains(&o.to_ascii_lowercase()))
    };
    for case in cases.iter().filter(|c| chosen(c.name)) {
        out.push_str(&run_case(case, &caller, &args, &payload, &mut usage_rows).await?);
    }
    if chosen("metrics") {
        out.push_str(&observability::section(&binary, &home, (http_port, grpc_port), &args, &payload).await?);
    }
    if chosen("proxied gRPC streams") {
        out.push_str(&stream::section(&caller, &stream_side, echo_port).await?);
    }

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
