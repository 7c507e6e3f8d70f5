//! `daprs-injector serve` runs the admission webhook; `daprs-injector render`
//! injects manifests read from standard input.

use std::{
    io::Read,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use daprs_injector::{
    admission::{BUILTIN_REQUESTERS, Requesters},
    cluster, render,
    server::{self, ReloadingCert, Webhook},
    sidecar::{InjectorConfig, NativeSidecar},
};

#[derive(Parser)]
#[command(
    name = "daprs-injector",
    about = "Adds the daprd sidecar to Dapr-enabled pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mutating admission webhook over HTTPS.
    Serve(Serve),
    /// Read YAML manifests on stdin and print them with their pods injected.
    Render(Render),
}

#[derive(Clone, Copy, ValueEnum)]
enum Native {
    Auto,
    On,
    Off,
}

/// Settings of the injected sidecar, shared by both commands.
#[derive(Args)]
struct SidecarArgs {
    /// daprd image.
    #[arg(long, env = "SIDECAR_IMAGE", default_value = "ghcr.io/daprs/daprd:latest")]
    sidecar_image: String,
    /// Pull policy of the daprd image.
    #[arg(long, env = "SIDECAR_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    sidecar_image_pull_policy: String,
    /// Namespace of the control plane.
    #[arg(long, env = "NAMESPACE", default_value = "dapr-system")]
    control_plane_namespace: String,
    /// Cluster DNS domain.
    #[arg(long, env = "KUBE_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Trust domain of the control plane.
    #[arg(
        long,
        env = "DAPR_CONTROL_PLANE_TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    control_plane_trust_domain: String,
    /// PEM file with the trust anchors handed to sidecars (optional).
    #[arg(long, env = "DAPR_TRUST_ANCHORS_FILE")]
    trust_anchors_file: Option<PathBuf>,
    /// Mutual TLS between sidecars (`--mtls-enabled=false` turns it off).
    #[arg(long, env = "DAPR_MTLS_ENABLED", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    mtls_enabled: bool,
}

#[derive(Args)]
struct Serve {
    /// Address to listen on (all IPv4 addresses by default; `::` for all
    /// IPv6 and IPv4 ones).
    #[arg(long, env = "LISTEN_ADDRESS", default_value = "0.0.0.0")]
    listen_address: IpAddr,
    /// HTTPS port (the webhook, /healthz and /readyz).
    #[arg(long, env = "INJECTOR_PORT", default_value_t = 4000)]
    port: u16,
    /// Port of the Prometheus metrics (plain HTTP; 0: not served).
    #[arg(long, env = "METRICS_PORT", default_value_t = 9090)]
    metrics_port: u16,
    /// Least level logged: debug, info, warn or error.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = daprs_api::contract::log_level)]
    log_level: String,
    /// Serving certificate (PEM, re-read when it changes).
    #[arg(long, env = "TLS_CERT_FILE")]
    tls_cert_file: PathBuf,
    /// Serving key (PEM, re-read when it changes).
    #[arg(long, env = "TLS_KEY_FILE")]
    tls_key_file: PathBuf,
    /// Extra service accounts allowed to create injected pods, as
    /// `namespace:name` globs, comma-separated (the built-in controllers are always allowed).
    #[arg(long, env = "ALLOWED_SERVICE_ACCOUNTS", value_delimiter = ',')]
    allowed_service_accounts: Vec<String>,
    /// User UIDs allowed to create injected pods, comma-separated.
    #[arg(long, env = "ALLOWED_UIDS", value_delimiter = ',')]
    allowed_uids: Vec<String>,
    /// Inject daprd as a native sidecar: auto asks the API server (≥ 1.29 → on).
    #[arg(long, env = "NATIVE_SIDECAR", value_enum, default_value = "auto")]
    native_sidecar: Native,
    /// Log as JSON.
    #[arg(long, env = "LOG_AS_JSON")]
    log_as_json: bool,
    #[command(flatten)]
    sidecar: SidecarArgs,
}

#[derive(Args)]
struct Render {
    /// Inject daprd as a native sidecar (there is no cluster to ask).
    #[arg(long, value_enum, default_value = "off")]
    native_sidecar: Native,
    #[command(flatten)]
    sidecar: SidecarArgs,
}

fn config(a: &SidecarArgs, native: Native) -> Result<InjectorConfig, String> {
    let trust_anchors = match &a.trust_anchors_file {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    Ok(InjectorConfig {
        image: a.sidecar_image.clone(),
        pull_policy: a.sidecar_image_pull_policy.clone(),
        control_plane_namespace: a.control_plane_namespace.clone(),
        cluster_domain: a.cluster_domain.clone(),
        control_plane_trust_domain: a.control_plane_trust_domain.clone(),
        trust_anchors,
        native_sidecar: match native {
            Native::Auto => NativeSidecar::Auto,
            Native::On => NativeSidecar::On,
            Native::Off => NativeSidecar::Off,
        },
        server_minor_version: None,
        mtls: a.mtls_enabled,
    })
}

fn render_cmd(args: &Render) -> ExitCode {
    let cfg = match config(&args.sidecar, args.native_sidecar) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("daprs-injector: {e}");
            return ExitCode::from(2);
        }
    };
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("daprs-injector: cannot read stdin: {e}");
        return ExitCode::from(1);
    }
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let rendered = render::render_to(&input, &cfg, &mut stdout);
    if let Err(e) = std::io::Write::flush(&mut stdout) {
        eprintln!("daprs-injector: cannot write stdout: {e}");
        return ExitCode::from(1);
    }
    match rendered {
        Err(e) => {
            eprintln!("daprs-injector: {e}");
            ExitCode::from(1)
        }
        Ok(r) => {
            for m in &r.messages {
                eprintln!("{m}");
            }
            if r.refused {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

async fn serve_cmd(args: Serve) -> Result<(), String> {
    let mut cfg = config(&args.sidecar, args.native_sidecar)?;
    if cfg.native_sidecar == NativeSidecar::Auto {
        match cluster::detect_minor_version().await {
            Ok(minor) => {
                tracing::info!(minor, native = minor >= 29, "Kubernetes 1.{minor}");
                cfg.server_minor_version = Some(minor);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot learn the API server version; injecting regular containers (use --native-sidecar on to change)"
            ),
        }
    }
    let mut patterns: Vec<String> = BUILTIN_REQUESTERS.iter().map(|s| s.to_string()).collect();
    patterns.extend(
        args.allowed_service_accounts
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
    );
    let requesters = Requesters {
        patterns,
        uids: args.allowed_uids.clone(),
    };
    let cert = Arc::new(ReloadingCert::new(
        args.tls_cert_file.clone(),
        args.tls_key_file.clone(),
    )?);
    let addr = SocketAddr::new(args.listen_address, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "webhook listening");
    if args.metrics_port != 0 {
        let addr = SocketAddr::new(args.listen_address, args.metrics_port);
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (metrics): {e}"))?;
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(|| async { daprs_injector::metrics::METRICS.render() }),
        );
        tokio::spawn(async move { axum::serve(metrics, router).await });
    }
    let router = server::router(Arc::new(Webhook {
        config: cfg,
        requesters,
        tracer: daprs_telemetry::trace::export::from_env("dapr-sidecar-injector"),
    }));
    server::serve(listener, cert, router, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Render(args) => render_cmd(&args),
        Command::Serve(args) => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
                .with_target(false);
            if args.log_as_json {
                builder.json().init();
            } else {
                builder.init();
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("daprs-injector: {e}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(serve_cmd(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("daprs-injector: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
