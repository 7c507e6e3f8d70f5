//! `daprd` entry point: flags → settings → logging → run until shutdown.

use std::collections::HashMap;

use clap::Parser;
use daprs_sidecar::flags::{Flags, LogLevel, Settings, normalise_args};

fn init_logging(flags: &Flags) {
    let level = match flags.log_level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    // Our crates log at the chosen level; libraries only warn.
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "warn,daprd={level},daprs_sidecar={level},daprs_components={level}"
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if flags.log_as_json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

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

fn main() {
    let flags = match Flags::try_parse_from(normalise_args(std::env::args())) {
        Ok(f) => f,
        Err(e) => e.exit(),
    };
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
    init_logging(&settings.flags);
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
