//! `daprd` entry point: flags → settings → logging → run until shutdown.

use std::collections::HashMap;

use clap::Parser;
use daprs_sidecar::{
    flags::{Flags, normalise_args},
    settings::Settings,
};

async fn terminate() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `DAPRS_WORKER_THREADS`: how many threads serve requests (default 1).
fn env_threads() -> Result<usize, String> {
    match std::env::var("DAPRS_WORKER_THREADS") {
        Err(_) => Ok(1),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "DAPRS_WORKER_THREADS={v:?} must be a whole number above 0"
            )),
        },
    }
}

/// A sidecar's work is short request hops. On one thread they need no
/// hand-offs between threads, which costs far less CPU per request than a
/// work-stealing pool; more threads are for sidecars that must use more
/// than one core. Blocking store calls run on tokio's blocking pool either way.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// `--wait`: polls the sidecar's outbound readiness for up to a minute;
/// the exit code says whether it became ready.
fn wait_outbound(port: u16) -> i32 {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let ready = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
            s.write_all(
                b"GET /v1.0/healthz/outbound HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head)?;
            Ok(head.ends_with(b"204"))
        });
        if ready.unwrap_or(false) {
            return 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("daprd: the sidecar on port {port} was not ready within 60 s");
    1
}

fn main() {
    let flags = match Flags::try_parse_from(normalise_args(std::env::args())) {
        Ok(f) => f,
        Err(e) => e.exit(),
    };
    if flags.build_info {
        println!(
            "Version: {}\nRuntime: daprs (Dapr-compatible)\nProfile: {}",
            env!("CARGO_PKG_VERSION"),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        return;
    }
    if flags.wait {
        std::process::exit(wait_outbound(flags.dapr_http_port));
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let settings = match Settings::from_flags(flags, env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("daprd: {e}");
            std::process::exit(2);
        }
    };
    let threads = match env_threads() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("daprd: {e}");
            std::process::exit(2);
        }
    };
    daprs_sidecar::logging::init(&settings.flags);
    let runtime = match runtime(threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("daprd: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(daprs_sidecar::run(settings, terminate())) {
        tracing::error!("{e}");
        eprintln!("daprd: {e}");
        std::process::exit(1);
    }
}
