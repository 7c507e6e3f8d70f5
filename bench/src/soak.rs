//! A long run at a fixed rate (`--soak SECONDS`): HTTP invocation through
//! both sidecars, each one's memory sampled as it goes, to show whether it
//! stays flat.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{
    MIB,
    load::{self, Pace, Target},
    sidecar::{Daprd, Probe, Usage},
};

/// How often memory is sampled and how often a sample is reported.
const SAMPLE: Duration = Duration::from_secs(1);
const REPORT: Duration = Duration::from_secs(60);

/// Runs the soak and returns its report.
pub async fn section(
    sides: [(&str, &Daprd); 2],
    target: &Target,
    conns: usize,
    rate: u32,
    seconds: u64,
    payload: &Bytes,
) -> anyhow::Result<String> {
    let before = [sides[0].1.usage()?, sides[1].1.usage()?];
    let run = load::run(
        target,
        conns,
        Pace::Rate(rate),
        Duration::from_secs(seconds),
        payload.clone(),
    );
    tokio::pin!(run);
    let start = Instant::now();
    let mut tick = tokio::time::interval(SAMPLE);
    // Per sidecar: every sample's RSS, and the one at each report mark.
    let mut rss: [Vec<u64>; 2] = Default::default();
    let mut rows = Vec::new();
    let mut next_report = REPORT;
    let run = loop {
        tokio::select! {
            r = &mut run => break r?,
            _ = tick.tick() => {
                let now = [sides[0].1.usage()?, sides[1].1.usage()?];
                for (all, u) in rss.iter_mut().zip(&now) {
                    all.push(u.rss_bytes);
                }
                if start.elapsed() >= next_report {
                    rows.push((next_report.as_secs() / 60, now));
                    next_report += REPORT;
                }
            }
        }
    };
    let after = [sides[0].1.usage()?, sides[1].1.usage()?];
    let mib = |b: u64| b as f64 / MIB;
    let mut out = format!(
        "### {} minutes at {rate} rps (HTTP invocation, {} B, {conns} connections)\n\n",
        seconds / 60,
        payload.len()
    );
    out.push_str(&format!(
        "p50 {:.3} ms, p99 {:.3} ms, {:.0} rps over the run.\n\n",
        run.quantile_ms(0.5),
        run.quantile_ms(0.99),
        run.rps()
    ));
    out.push_str(&format!(
        "| minute | {} RSS MiB | {} RSS MiB | {} private MiB | {} private MiB |\n|---|---|---|---|---|\n",
        sides[0].0, sides[1].0, sides[0].0, sides[1].0
    ));
    let row = |label: &str, u: &[Usage; 2]| {
        format!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            mib(u[0].rss_bytes),
            mib(u[1].rss_bytes),
            mib(u[0].private_bytes),
            mib(u[1].private_bytes)
        )
    };
    out.push_str(&row("before", &before));
    for (minute, u) in &rows {
        out.push_str(&row(&minute.to_string(), u));
    }
    out.push('\n');
    for (i, (name, _)) in sides.iter().enumerate() {
        // Flatness is judged after the first minute, once pools and buffers have grown.
        let first_minute = (REPORT.as_millis() / SAMPLE.as_millis()) as usize;
        let settled = rss[i].get(first_minute..).unwrap_or_default();
        let (lo, hi) = settled
            .iter()
            .fold((u64::MAX, 0), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        out.push_str(&format!(
            "{name}: RSS {:.1} MiB before, {:.1} at the end; from minute 1 on between {:.1} and {:.1} (a spread of {:.1} MiB); CPU {:.3} cores.\n",
            mib(before[i].rss_bytes),
            mib(after[i].rss_bytes),
            mib(lo.min(hi)),
            mib(hi),
            mib(hi.saturating_sub(lo.min(hi))),
            after[i].cores_since(&before[i]),
        ));
    }
    out.push('\n');
    Ok(out)
}
