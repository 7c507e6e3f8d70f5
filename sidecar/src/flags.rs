//! `daprd`'s command line, with Dapr's flag names, defaults and spellings.
//!
//! Parsing never binds a port or reads the process environment: the caller
//! passes the arguments and an environment map, so tests need neither.

use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};

/// How the sidecar talks to its app.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AppProtocol {
    /// HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS (the app's certificate is not verified).
    Https,
    /// gRPC (`AppCallback`).
    Grpc,
    /// gRPC over TLS (the app's certificate is not verified).
    Grpcs,
    /// HTTP/2 without TLS.
    H2c,
}

impl AppProtocol {
    /// The protocol's name as Dapr prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Grpc => "grpc",
            Self::Grpcs => "grpcs",
            Self::H2c => "h2c",
        }
    }

    /// True for the gRPC protocols.
    pub fn is_grpc(self) -> bool {
        matches!(self, Self::Grpc | Self::Grpcs)
    }
}

/// Where the sidecar runs, which decides name resolution and where resources come from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// On a developer machine: resources from files, local name registry.
    Standalone,
    /// In a pod: sidecars find each other through cluster DNS.
    Kubernetes,
}

/// Log verbosity.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// Normal operation.
    Info,
    /// Problems only.
    Warn,
    /// Failures only.
    Error,
}

/// The flags of `daprd`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "daprd",
    version,
    about = "Dapr-compatible sidecar runtime",
    disable_help_subcommand = true
)]
pub struct Flags {
    /// Unique id of the application: its name for service discovery and state key prefixes.
    #[arg(long, default_value = "")]
    pub app_id: String,

    /// Port the application listens on; without it there is no app channel.
    #[arg(long)]
    pub app_port: Option<u16>,

    /// Protocol of the application: http, https, grpc, grpcs or h2c.
    #[arg(long, value_enum, ignore_case = true, default_value = "http")]
    pub app_protocol: AppProtocol,

    /// Host the sidecar dials to reach the application.
    #[arg(long, default_value = "127.0.0.1")]
    pub app_channel_address: String,

    /// Port of the Dapr HTTP API.
    #[arg(long, default_value_t = 3500)]
    pub dapr_http_port: u16,

    /// Port of the Dapr gRPC API.
    #[arg(long, default_value_t = 50001)]
    pub dapr_grpc_port: u16,

    /// Port for calls from other sidecars (50002 in Kubernetes; a free port when unset in standalone).
    #[arg(long)]
    pub dapr_internal_grpc_port: Option<u16>,

    /// Optional port serving only the health and metadata routes, for probes.
    #[arg(long)]
    pub dapr_public_port: Option<u16>,

    /// On a termination signal, keep serving for up to this long (e.g. `5s`)
    /// or until the app reports unhealthy, so the app can still call its
    /// sidecar while it shuts down.
    #[arg(long)]
    pub dapr_block_shutdown_duration: Option<String>,

    /// Folder in which the HTTP and gRPC APIs listen on Unix domain sockets
    /// (`dapr-<app-id>-http.socket`, `dapr-<app-id>-grpc.socket`) instead of TCP.
    #[arg(long)]
    pub unix_domain_socket: Option<std::path::PathBuf>,

    /// Port of the Prometheus metrics endpoint.
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,

    /// Serve metrics.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_metrics: bool,

    /// Comma-separated addresses the HTTP and gRPC APIs bind to (all interfaces when empty).
    #[arg(long, default_value = "")]
    pub dapr_listen_addresses: String,

    /// Address the port for other sidecars binds to (default: see `Settings::internal_listen`).
    #[arg(long)]
    pub dapr_internal_grpc_listen_address: Option<String>,

    /// Address the public health port binds to (default: see `Settings::public_listen`).
    #[arg(long)]
    pub dapr_public_listen_address: Option<String>,

    /// Address the metrics port binds to (default: see `Settings::metrics_listen`).
    #[arg(long)]
    pub metrics_listen_address: Option<String>,

    /// Folder of resource files (components, subscriptions, ...); repeatable.
    #[arg(long, value_delimiter = ',', action = ArgAction::Append)]
    pub resources_path: Vec<PathBuf>,

    /// Old name of --resources-path, used only when that flag is absent.
    #[arg(long, value_delimiter = ',', action = ArgAction::Append)]
    pub components_path: Vec<PathBuf>,

    /// Configuration file(s) in standalone mode; the Configuration's name in Kubernetes.
    #[arg(long, value_delimiter = ',', action = ArgAction::Append)]
    pub config: Vec<String>,

    /// standalone or kubernetes.
    #[arg(long, value_enum, ignore_case = true, default_value = "standalone")]
    pub mode: Mode,

    /// debug, info, warn or error.
    #[arg(long, value_enum, ignore_case = true, default_value = "info")]
    pub log_level: LogLevel,

    /// Print logs as JSON lines.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub log_as_json: bool,

    /// Log one line per API call (unset: the Configuration decides).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_api_logging: Option<bool>,

    /// Most concurrent requests sent to the application; -1 means no limit.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub app_max_concurrency: i64,

    /// Largest request body, e.g. 4Mi; overrides --dapr-http-max-request-size.
    #[arg(long)]
    pub max_body_size: Option<String>,

    /// Largest request body in MB (older form of --max-body-size).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    pub dapr_http_max_request_size: i64,

    /// Largest HTTP request head (request line and headers), e.g. 16Ki;
    /// overrides --dapr-http-read-buffer-size. Larger heads get 431. The
    /// HTTP server cannot go below 8Ki, so smaller values count as 8Ki.
    #[arg(long)]
    pub read_buffer_size: Option<String>,

    /// Largest HTTP request head in KB (older form of --read-buffer-size).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    pub dapr_http_read_buffer_size: i64,

    /// Longest time spent draining requests at shutdown, in seconds.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    pub dapr_graceful_shutdown_seconds: i64,

    /// Probe the application's health periodically.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub enable_app_health_check: bool,

    /// HTTP path of the application's health endpoint.
    #[arg(long, default_value = "/healthz")]
    pub app_health_check_path: String,

    /// Seconds between health probes.
    #[arg(long, default_value_t = 5)]
    pub app_health_probe_interval: u64,

    /// Milliseconds a health probe may take.
    #[arg(long, default_value_t = 500)]
    pub app_health_probe_timeout: u64,

    /// Consecutive failed probes before the application counts as unhealthy.
    #[arg(long, default_value_t = 3)]
    pub app_health_threshold: u32,

    /// Address (`host:port`) of the operator API that serves this app's
    /// components and configuration in Kubernetes mode.
    #[arg(long)]
    pub control_plane_address: Option<String>,

    /// Address (`host:port`) of the certificate service that issues this
    /// sidecar's identity.
    #[arg(long)]
    pub sentry_address: Option<String>,

    /// In Kubernetes mode, do not register the built-in `kubernetes` secret store.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub disable_builtin_k8s_secret_store: bool,

    /// Mutual TLS, with a certificate from --sentry-address, on the port
    /// other sidecars call.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub enable_mtls: bool,

    /// Deprecated: turns `http` into `https` and `grpc` into `grpcs`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub app_ssl: bool,

    /// How long the input-binding discovery call to the app may take.
    #[arg(long, default_value = "3s")]
    pub app_binding_options_timeout: String,

    /// Trust domain of the control plane (else `DAPR_CONTROLPLANE_TRUST_DOMAIN`).
    #[arg(long)]
    pub control_plane_trust_domain: Option<String>,

    /// Namespace of the control plane (else `DAPR_CONTROLPLANE_NAMESPACE`).
    #[arg(long)]
    pub control_plane_namespace: Option<String>,

    /// Comma-separated origins browsers may call the HTTP API from (`*` for
    /// any); empty turns CORS off.
    #[arg(long, default_value = "")]
    pub allowed_origins: String,

    /// Start-up calls to the app to skip: `config` (`GET /dapr/config`)
    /// and/or `subscribe` (`GET /dapr/subscribe`, `ListTopicSubscriptions`).
    #[arg(long, value_delimiter = ',', action = ArgAction::Append)]
    pub disable_init_endpoints: Vec<String>,

    /// Wait until the sidecar on --dapr-http-port is ready for outbound
    /// calls, then exit (0 when ready, 1 when it is not within 60 s).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub wait: bool,

    /// Print the build information and exit.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub build_info: bool,

    /// Flags of Dapr's daprd for building blocks and tools this sidecar does
    /// not have. They are accepted, so `dapr run` and existing manifests
    /// start it unchanged, and each given one is logged as having no effect.
    #[command(flatten)]
    pub inert: InertFlags,
}

/// See [`Flags::inert`].
#[derive(clap::Args, Debug, Clone, Default)]
pub struct InertFlags {
    /// Actor placement servers (no effect: no actors).
    #[arg(long)]
    pub placement_host_address: Option<String>,
    /// Scheduler servers (no effect: no jobs or reminders).
    #[arg(long, value_delimiter = ',', action = ArgAction::Append)]
    pub scheduler_host_address: Vec<String>,
    /// Streams per scheduler (no effect).
    #[arg(long)]
    pub scheduler_job_streams: Option<String>,
    /// Actor table dissemination timeout (no effect).
    #[arg(long)]
    pub actors_disseminate_timeout: Option<String>,
    /// Deprecated actors service (no effect).
    #[arg(long, hide = true)]
    pub actors_service: Option<String>,
    /// Deprecated reminders service (no effect).
    #[arg(long, hide = true)]
    pub reminders_service: Option<String>,
    /// Serve profiles on --profile-port (no effect: no profiler).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_profiling: Option<bool>,
    /// Port of the profiler (no effect).
    #[arg(long)]
    pub profile_port: Option<String>,
    /// Extra JWT audiences for the certificate request (no effect).
    #[arg(long, value_delimiter = ',', action = ArgAction::Append)]
    pub sentry_request_jwt_audiences: Vec<String>,
    /// Interval of the resource reconciler (no effect: changes are streamed).
    #[arg(long)]
    pub hot_reload_reconcile_interval: Option<String>,
    /// Old separate health port of the app (no effect).
    #[arg(long, hide = true)]
    pub app_health_port: Option<String>,
}

impl InertFlags {
    /// The inert flags given on the command line.
    pub fn given(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut note = |given: bool, name: &'static str| {
            if given {
                out.push(name);
            }
        };
        note(self.placement_host_address.is_some(), "--placement-host-address");
        note(
            !self.scheduler_host_address.is_empty(),
            "--scheduler-host-address",
        );
        note(self.scheduler_job_streams.is_some(), "--scheduler-job-streams");
        note(
            self.actors_disseminate_timeout.is_some(),
            "--actors-disseminate-timeout",
        );
        note(self.actors_service.is_some(), "--actors-service");
        note(self.reminders_service.is_some(), "--reminders-service");
        note(self.enable_profiling.is_some(), "--enable-profiling");
        note(self.profile_port.is_some(), "--profile-port");
        note(
            !self.sentry_request_jwt_audiences.is_empty(),
            "--sentry-request-jwt-audiences",
        );
        note(
            self.hot_reload_reconcile_interval.is_some(),
            "--hot-reload-reconcile-interval",
        );
        note(self.app_health_port.is_some(), "--app-health-port");
        out
    }
}

/// Dapr accepts `-app-id` as well as `--app-id`; rewrite single-dash long flags.
pub fn normalise_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let single_dash_long = i > 0 && a.starts_with('-') && !a.starts_with("--") && a.len() > 2;
            if single_dash_long && a[1..].starts_with(|c: char| c.is_ascii_alphabetic()) {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        let mut all = vec!["daprd".to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        Flags::try_parse_from(normalise_args(all))
    }

    #[test]
    fn accepts_single_dash_repeated_and_comma_separated_flags() {
        let f = parse(&[
            "-app-id",
            "a",
            "-app-protocol",
            "GRPC",
            "--resources-path",
            "x,y",
            "--resources-path=z",
            "--enable-metrics=false",
            "--log-as-json",
            "--app-max-concurrency",
            "-1",
        ])
        .expect("parse");
        assert_eq!(f.app_protocol, AppProtocol::Grpc);
        assert_eq!(f.resources_path, ["x", "y", "z"].map(PathBuf::from));
        assert!(!f.enable_metrics && f.log_as_json);
    }

    #[test]
    fn rejects_unknown_and_invalid_flags_with_usage_errors() {
        for bad in [
            &["--nope"][..],
            &["--app-protocol", "tcp"],
            &["--log-level", "loud"],
            &["--app-port", "x"],
        ] {
            let e = parse(bad).expect_err("invalid");
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
