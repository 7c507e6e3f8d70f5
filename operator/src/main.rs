//! `daprs-operator serve` runs the operator; `daprs-operator crdgen` prints
//! or writes the CRDs.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use daprs_operator::{
    sentry::SentrySettings,
    serve::{self, ServeSettings},
};

#[derive(Parser)]
#[command(
    name = "daprs-operator",
    about = "Reconciles the Dapr resources on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the operator: certificate authority, controllers, health.
    Serve(Serve),
    /// Print the CustomResourceDefinitions, or write one file each into --out.
    Crdgen {
        /// Folder to write into (e.g. charts/daprs/crds); standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// A duration such as `24h`, `15m`, `10s` or `500ms`.
fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 24h, 15m or 10s"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?} is not a duration like 24h, 15m or 10s")),
    };
    Ok(Duration::from_secs(secs))
}

#[derive(Args)]
struct Serve {
    /// The control plane's namespace (where dapr-trust-bundle lives).
    #[arg(long, env = "NAMESPACE", default_value = "dapr-system")]
    namespace: String,
    /// Trust domain of the control plane.
    #[arg(
        long,
        env = "DAPR_CONTROL_PLANE_TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    trust_domain: String,
    /// Address every port listens on (all IPv4 addresses by default; `::`
    /// for all IPv6 and IPv4 ones).
    #[arg(long, env = "LISTEN_ADDRESS", default_value = "0.0.0.0")]
    listen_address: IpAddr,
    /// Port of the certificate service (gRPC over TLS).
    #[arg(long, env = "SENTRY_PORT", default_value_t = 50001)]
    sentry_port: u16,
    /// Port of the Subscription conversion webhook (HTTPS).
    #[arg(long, env = "WEBHOOK_PORT", default_value_t = 19443)]
    webhook_port: u16,
    /// Port of the operator API for sidecars (gRPC over mutual TLS).
    #[arg(long, env = "API_PORT", default_value_t = 6500)]
    api_port: u16,
    /// Port of /healthz and /readyz.
    #[arg(long, env = "HEALTHZ_PORT", default_value_t = 8080)]
    healthz_port: u16,
    /// Port of the Prometheus metrics (0: not served).
    #[arg(long, env = "METRICS_PORT", default_value_t = 9090)]
    metrics_port: u16,
    /// Least level logged: debug, info, warn or error.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = daprs_api::contract::log_level)]
    log_level: String,
    /// Lifetime of workload certificates.
    #[arg(long, env = "WORKLOAD_CERT_TTL", default_value = "24h", value_parser = duration)]
    workload_cert_ttl: Duration,
    /// How far back workload certificates' NotBefore is set.
    #[arg(long, env = "ALLOWED_CLOCK_SKEW", default_value = "15m", value_parser = duration)]
    allowed_clock_skew: Duration,
    /// How often the CA material is re-read.
    #[arg(long, env = "CA_SYNC_INTERVAL", default_value = "10s", value_parser = duration)]
    ca_sync_interval: Duration,
    /// Serve certificates only; run no controllers.
    #[arg(long, env = "DISABLE_CONTROLLERS")]
    disable_controllers: bool,
    /// Log as JSON.
    #[arg(long, env = "LOG_AS_JSON")]
    log_as_json: bool,
    /// How often the watchdog looks for Dapr-enabled pods without daprd (0: never).
    #[arg(long, env = "WATCHDOG_INTERVAL", default_value = "0", value_parser = duration)]
    watchdog_interval: Duration,
    /// Let the watchdog delete such pods so their controller recreates them
    /// (otherwise it only records an Event).
    #[arg(long, env = "WATCHDOG_DELETE_PODS")]
    watchdog_delete_pods: bool,
    /// Most pods the watchdog deletes per minute (0: no limit).
    #[arg(long, env = "MAX_POD_RESTARTS_PER_MINUTE", default_value_t = 20)]
    max_pod_restarts_per_minute: u32,
    /// The ConfigMap in the namespace that owns the CA material this operator
    /// creates, so that deleting it deletes them (empty: nothing owns them).
    #[arg(long, env = "TRUST_BUNDLE_OWNER", default_value = "")]
    trust_bundle_owner: String,
    /// This replica's identity in the leader election.
    #[arg(long, env = "POD_NAME", default_value = "daprs-operator")]
    identity: String,
}

fn crdgen(out: Option<PathBuf>) -> Result<(), String> {
    let crds = daprs_api::crds::all()?;
    match out {
        None => {
            let docs: Result<Vec<String>, String> =
                crds.iter().map(|(_, c)| daprs_api::crds::to_yaml(c)).collect();
            print!("{}", docs?.join("---\n"));
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for (file, crd) in &crds {
                let path = dir.join(file);
                std::fs::write(&path, daprs_api::crds::to_yaml(crd)?)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    }
    Ok(())
}

async fn serve_cmd(args: Serve) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes credentials (in-cluster or KUBECONFIG): {e}"))?;
    // Fail at once, with the reason, when the CA material cannot be read.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), &args.namespace);
    secrets
        .get_opt(daprs_operator::bootstrap::TRUST_BUNDLE)
        .await
        .map_err(|e| format!("cannot read Secret {}/dapr-trust-bundle: {e}", args.namespace))?;
    serve::run(
        client,
        ServeSettings {
            sentry: SentrySettings {
                control_plane_namespace: args.namespace,
                control_plane_trust_domain: args.trust_domain,
                workload_ttl: args.workload_cert_ttl,
                allowed_skew: args.allowed_clock_skew,
            },
            sentry_addr: SocketAddr::new(args.listen_address, args.sentry_port),
            api_addr: SocketAddr::new(args.listen_address, args.api_port),
            webhook_addr: SocketAddr::new(args.listen_address, args.webhook_port),
            health_addr: SocketAddr::new(args.listen_address, args.healthz_port),
            trust_bundle_owner: Some(args.trust_bundle_owner).filter(|o| !o.is_empty()),
            metrics_addr: (args.metrics_port != 0)
                .then(|| SocketAddr::new(args.listen_address, args.metrics_port)),
            ca_sync_interval: args.ca_sync_interval,
            run_controllers: !args.disable_controllers,
            identity: args.identity,
            watchdog: (!args.watchdog_interval.is_zero()).then_some(daprs_operator::watchdog::Watchdog {
                every: args.watchdog_interval,
                delete: args.watchdog_delete_pods,
                max_per_minute: args.max_pod_restarts_per_minute,
            }),
        },
    )
    .await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crdgen { out } => crdgen(out),
        Command::Serve(args) => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
                .with_target(false);
            if args.log_as_json {
                builder.json().init();
            } else {
                builder.init();
            }
            match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt.block_on(serve_cmd(args)),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daprs-operator: {e}");
            ExitCode::from(1)
        }
    }
}
