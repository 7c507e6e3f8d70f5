//! A `daprd` child process: start, readiness, and its CPU and memory read
//! from `/proc`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The daprd binary: the one given, else the one next to this program.
pub fn binary(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("no parent folder")?
            .join("daprd")),
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct Daprd {
    child: Child,
    pub http_port: u16,
    pub grpc_port: u16,
    /// From spawn to the first 204 from `/v1.0/healthz/outbound`.
    pub ready_in: Duration,
}

impl Drop for Daprd {
    /// Stops daprd as a pod's termination does (SIGTERM, then SIGKILL after
    /// ten seconds), so a profiler it runs under writes its output.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let asked = Command::new("kill").args(["-TERM", &pid]).status();
        if asked.is_ok_and(|s| s.success()) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare `GET` on a fresh connection; the status code, if any answer came.
async fn status(port: u16, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

impl Daprd {
    /// Starts daprd for `app_id` (optionally in front of an app) and waits
    /// until it answers `/v1.0/healthz/outbound` with 204.
    pub async fn start(
        binary: &Path,
        home: &Path,
        app_id: &str,
        app: Option<(u16, &str)>,
    ) -> anyhow::Result<Self> {
        Self::start_with(binary, home, app_id, app, &[], &[]).await
    }

    /// As [`Daprd::start`], with more command-line arguments and environment.
    pub async fn start_with(
        binary: &Path,
        home: &Path,
        app_id: &str,
        app: Option<(u16, &str)>,
        extra: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let http_port = free_port()?;
        let grpc_port = free_port()?;
        let mut cmd = Command::new(binary);
        cmd.args(["--app-id", app_id])
            .args(["--dapr-http-port", &http_port.to_string()])
            .args(["--dapr-grpc-port", &grpc_port.to_string()])
            .args(["--metrics-port", &free_port()?.to_string()])
            .args(["--dapr-listen-addresses", "127.0.0.1"])
            .args(extra)
            .env("DAPRS_HOME", home)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some((port, protocol)) = app {
            cmd.args(["--app-port", &port.to_string(), "--app-protocol", protocol]);
        }
        let t0 = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let mut d = Self {
            child,
            http_port,
            grpc_port,
            ready_in: Duration::ZERO,
        };
        loop {
            if status(http_port, "/v1.0/healthz/outbound").await == Some(204) {
                d.ready_in = t0.elapsed();
                return Ok(d);
            }
            if let Some(code) = d.child.try_wait()? {
                bail!("daprd {app_id} exited with {code}");
            }
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("daprd {app_id} not ready after 20 s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
}

/// CPU time used so far and resident memory now, for one process.
#[derive(Clone, Copy)]
pub struct Usage {
    pub cpu: Duration,
    pub rss_bytes: u64,
    /// Resident pages no other process shares (heap, stacks, written
    /// pages); the rest of RSS is mostly the binary's code, shared by every
    /// daprd started from the same file.
    pub private_bytes: u64,
    pub at: Instant,
}

/// Kernel clock ticks per second, as `/proc/<pid>/stat` counts CPU time.
fn ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

impl Usage {
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let stat = std::fs::read_to_string(proc.join("stat"))?;
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("odd /proc stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
            + fields.get(12).context("stime")?.parse::<u64>()?;
        let smaps = std::fs::read_to_string(proc.join("smaps_rollup"))?;
        let kb = |field: &str| -> anyhow::Result<u64> {
            Ok(smaps
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .with_context(|| format!("{field} in smaps_rollup"))?
                .parse()?)
        };
        let rss_kb = kb("Rss:")?;
        let private_kb = kb("Private_Clean:")? + kb("Private_Dirty:")?;
        Ok(Self {
            cpu: Duration::from_secs_f64(ticks as f64 / ticks_per_second() as f64),
            rss_bytes: rss_kb * 1024,
            private_bytes: private_kb * 1024,
            at: Instant::now(),
        })
    }

    /// Cores used between `earlier` and `self`.
    pub fn cores_since(&self, earlier: &Usage) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        self.cpu.saturating_sub(earlier.cpu).as_secs_f64() / wall
    }
}

/// A process whose CPU and memory the bench reads.
pub trait Probe {
    fn usage(&self) -> anyhow::Result<Usage>;
}

impl Probe for Daprd {
    fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(self.child.id())
    }
}
