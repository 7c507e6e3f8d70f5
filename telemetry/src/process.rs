//! The process metrics Prometheus's process collector exports, which Dapr
//! serves beside its own (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes` ...): dashboards chart a sidecar's CPU and
//! memory from them. Read from `/proc/self` when scraped; on a system
//! without it they are left out.

use std::{fmt::Write, sync::OnceLock};

/// Clock ticks per second and page size, as Linux reports `/proc` figures
/// in them; the values every Linux build this runs on uses.
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_SIZE: f64 = 4096.0;

/// The process's figures, as read from `stat`'s text (after the command
/// name, which may hold spaces): user and system ticks, start time in ticks
/// since boot, virtual bytes, resident pages.
fn parse_stat(stat: &str) -> Option<(f64, f64, f64, f64, f64)> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields from the state (third in the file) on: utime is the 14th of
    // the file, stime 15th, starttime 22nd, vsize 23rd, rss 24th.
    let at = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    Some((at(14)?, at(15)?, at(22)?, at(23)?, at(24)?))
}

/// Seconds since the epoch at boot, from `/proc/stat`'s `btime`.
fn boot_time() -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

/// Appends the process metrics as Prometheus text.
pub fn render(out: &mut String) {
    let Some((utime, stime, start, vsize, rss)) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(parse_stat)
    else {
        return;
    };
    family(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        (utime + stime) / TICKS_PER_SECOND,
    );
    family(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        rss * PAGE_SIZE,
    );
    family(
        out,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        vsize,
    );
    if let Some(boot) = boot_time() {
        family(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + start / TICKS_PER_SECOND,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        family(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Some(max) = max_fds() {
        family(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_a_command_name_with_spaces() {
        let stat = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 3000 0 0 0 250 50 0 0 20 0 4 0 \
                    12345 104857600 2560 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some((250.0, 50.0, 12345.0, 104_857_600.0, 2560.0))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_described() {
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
        ] {
            assert!(out.contains(&format!("# TYPE {name} ")), "{name}: {out}");
        }
    }
}
