//! `daprd`'s command line, with Dapr's flag names, defaults and spellings.
//!
//! Parsing never binds a port or reads the process environment: the caller
//! passes the arguments and an environment map, so tests need neither.

use std::{collections::HashMap, net::IpAddr, path::PathBuf, time::Duration};

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
}

/// Where the sidecar gets its identity and, in Kubernetes, its resources.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// `--sentry-address`.
    pub sentry_address: String,
    /// `--control-plane-address` (Kubernetes mode only).
    pub operator_address: Option<String>,
    /// `DAPR_CONTROLPLANE_NAMESPACE` (default `dapr-system`).
    pub namespace: String,
    /// `DAPR_CONTROLPLANE_TRUST_DOMAIN` (default `cluster.local`).
    pub trust_domain: String,
    /// `DAPR_TRUST_ANCHORS`: PEM roots of the control plane's CA.
    pub trust_anchors: String,
    /// The projected service-account token sent to the certificate service
    /// (`DAPR_SENTRY_TOKEN_FILE` overrides the mounted path).
    pub token_file: PathBuf,
    /// Whether sidecar-to-sidecar traffic uses mutual TLS.
    pub mtls: bool,
}

/// The smallest request-head limit the HTTP server accepts.
pub const MIN_READ_BUFFER: usize = daprs_mtls::http::MIN_HEAD;

/// Where the injector mounts the identity token.
pub const SENTRY_TOKEN_FILE: &str = "/var/run/secrets/dapr.io/sentrytoken/token";

/// Validated settings derived from the flags and the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The flags as given.
    pub flags: Flags,
    /// Resource folders (from --resources-path, else --components-path).
    pub resources_paths: Vec<PathBuf>,
    /// Largest request body in bytes.
    pub max_body_size: usize,
    /// Largest HTTP request head in bytes (at least [`MIN_READ_BUFFER`]).
    pub read_buffer_size: usize,
    /// Addresses the API servers bind to.
    pub listen_addresses: Vec<IpAddr>,
    /// Addresses the internal port binds to: the flag's, else in standalone
    /// mode the API's, else all (other pods must reach it).
    pub internal_listen: Vec<IpAddr>,
    /// Addresses the public port binds to, chosen as for the internal port
    /// (the kubelet probes it).
    pub public_listen: Vec<IpAddr>,
    /// Addresses the metrics port binds to, chosen as for the internal port
    /// (Prometheus scrapes it).
    pub metrics_listen: Vec<IpAddr>,
    /// Head, body and idle limits of the HTTP servers (`DAPRS_HTTP_*_TIMEOUT`).
    pub http_timeouts: daprs_mtls::http::Timeouts,
    /// Grace period at shutdown.
    pub graceful_shutdown: Duration,
    /// `--dapr-block-shutdown-duration`.
    pub block_shutdown: Option<Duration>,
    /// Semaphore size for calls into the app; None = unlimited.
    pub app_max_concurrency: Option<usize>,
    /// `DAPR_API_TOKEN`: required on API calls when set.
    pub api_token: Option<String>,
    /// `APP_API_TOKEN`: sent to the app when set.
    pub app_token: Option<String>,
    /// `NAMESPACE`.
    pub namespace: Option<String>,
    /// Identity and resources from the control plane, when configured.
    pub control_plane: Option<ControlPlane>,
    /// The environment, for component templates and `envRef`.
    pub env: HashMap<String, String>,
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

impl Settings {
    /// Checks the flags against each other and reads the environment map.
    pub fn from_flags(flags: Flags, env: HashMap<String, String>) -> Result<Self, String> {
        if flags.app_id.is_empty() && flags.mode == Mode::Standalone {
            return Err("--app-id is required".into());
        }
        if flags.app_id.contains('.') {
            return Err(format!("--app-id {:?} must not contain dots", flags.app_id));
        }
        if let Some(port) = flags.app_port {
            for (name, p) in [
                ("--dapr-http-port", flags.dapr_http_port),
                ("--dapr-grpc-port", flags.dapr_grpc_port),
            ] {
                if port == p {
                    return Err(format!("--app-port {port} is the same as {name}"));
                }
            }
        }
        if flags.dapr_http_port == flags.dapr_grpc_port {
            return Err(format!(
                "--dapr-http-port and --dapr-grpc-port are both {}",
                flags.dapr_http_port
            ));
        }
        let max_body_size = match &flags.max_body_size {
            Some(q) => daprs_api::contract::parse_byte_size(q)
                .ok_or_else(|| format!("--max-body-size {q:?} is not a size such as 4Mi or 1048576"))?,
            None if flags.dapr_http_max_request_size <= 0 => 4 << 20,
            None => (flags.dapr_http_max_request_size as u64) << 20,
        };
        let max_body_size =
            usize::try_from(max_body_size).map_err(|_| "--max-body-size is too large".to_string())?;
        let read_buffer_size = match &flags.read_buffer_size {
            Some(q) => daprs_api::contract::parse_byte_size(q)
                .ok_or_else(|| format!("--read-buffer-size {q:?} is not a size such as 4Ki or 16384"))?,
            None if flags.dapr_http_read_buffer_size <= 0 => 4 << 10,
            None => (flags.dapr_http_read_buffer_size as u64).saturating_mul(1 << 10),
        };
        let read_buffer_size = usize::try_from(read_buffer_size)
            .map_err(|_| "--read-buffer-size is too large".to_string())?
            .clamp(MIN_READ_BUFFER, 64 << 20);
        let listen_addresses = ip_list("--dapr-listen-addresses", &flags.dapr_listen_addresses)?;
        let all = vec![IpAddr::from([0, 0, 0, 0])];
        let listen_or = |flag: &str, given: &Option<String>| -> Result<Vec<IpAddr>, String> {
            Ok(match given.as_deref().map(|v| ip_list(flag, v)).transpose()? {
                Some(ips) if !ips.is_empty() => ips,
                _ if flags.mode == Mode::Standalone && !listen_addresses.is_empty() => {
                    listen_addresses.clone()
                }
                _ => all.clone(),
            })
        };
        let internal_listen = listen_or(
            "--dapr-internal-grpc-listen-address",
            &flags.dapr_internal_grpc_listen_address,
        )?;
        let public_listen = listen_or("--dapr-public-listen-address", &flags.dapr_public_listen_address)?;
        let metrics_listen = listen_or("--metrics-listen-address", &flags.metrics_listen_address)?;
        let listen_addresses = if listen_addresses.is_empty() {
            all
        } else {
            listen_addresses
        };
        let http_timeouts = http_timeouts(&env)?;
        if !flags.app_health_check_path.starts_with('/') {
            return Err(format!(
                "--app-health-check-path {:?} must start with /",
                flags.app_health_check_path
            ));
        }
        if flags.app_health_probe_interval == 0 || flags.app_health_threshold == 0 {
            return Err("--app-health-probe-interval and --app-health-threshold must be at least 1".into());
        }
        let graceful = if flags.dapr_graceful_shutdown_seconds < 0 {
            5
        } else {
            flags.dapr_graceful_shutdown_seconds
        };
        let block_shutdown = match &flags.dapr_block_shutdown_duration {
            None => None,
            Some(d) => Some(daprs_components::parse_duration(d).ok_or_else(|| {
                format!("--dapr-block-shutdown-duration {d:?} is not a duration such as 10s or 1m")
            })?),
        };
        let resources_paths = if flags.resources_path.is_empty() {
            flags.components_path.clone()
        } else {
            flags.resources_path.clone()
        };
        let non_empty = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let control_plane = control_plane(&flags, &non_empty)?;
        Ok(Self {
            resources_paths,
            max_body_size,
            read_buffer_size,
            listen_addresses,
            internal_listen,
            public_listen,
            metrics_listen,
            http_timeouts,
            graceful_shutdown: Duration::from_secs(graceful as u64),
            block_shutdown,
            app_max_concurrency: usize::try_from(flags.app_max_concurrency).ok().filter(|n| *n > 0),
            api_token: non_empty("DAPR_API_TOKEN"),
            app_token: non_empty("APP_API_TOKEN"),
            namespace: non_empty("NAMESPACE"),
            control_plane,
            env,
            flags,
        })
    }
}

/// A comma-separated list of IP addresses (`[::1]` or `::1`).
fn ip_list(flag: &str, value: &str) -> Result<Vec<IpAddr>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| format!("{flag}: {a:?} is not an IP address"))
        })
        .collect()
}

/// The HTTP servers' time limits; the environment may shorten or lengthen them.
fn http_timeouts(env: &HashMap<String, String>) -> Result<daprs_mtls::http::Timeouts, String> {
    let mut t = daprs_mtls::http::Timeouts::default();
    let read = |name: &str| -> Result<Option<Duration>, String> {
        env.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                daprs_components::parse_duration(v)
                    .filter(|d| !d.is_zero() && *d < Duration::from_secs(1 << 32))
                    .ok_or_else(|| format!("{name}={v:?} is not a duration such as 10s"))
            })
            .transpose()
    };
    if let Some(d) = read("DAPRS_HTTP_READ_HEADER_TIMEOUT")? {
        t.read_header = d;
    }
    if let Some(d) = read("DAPRS_HTTP_BODY_TIMEOUT")? {
        t.body = Some(d);
    }
    if let Some(d) = read("DAPRS_HTTP_IDLE_TIMEOUT")? {
        t.idle = d;
    }
    Ok(t)
}

/// The control-plane settings: needed for mutual TLS, and in Kubernetes
/// mode whenever an operator address is given (the operator only answers
/// callers that prove who they are).
fn control_plane(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ControlPlane>, String> {
    let operator_address = flags
        .control_plane_address
        .clone()
        .filter(|a| !a.is_empty() && flags.mode == Mode::Kubernetes);
    if !flags.enable_mtls && operator_address.is_none() {
        return Ok(None);
    }
    let why = if flags.enable_mtls {
        "--enable-mtls"
    } else {
        "--control-plane-address"
    };
    let sentry_address = flags
        .sentry_address
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("{why} needs --sentry-address to obtain a certificate"))?;
    let trust_anchors = env("DAPR_TRUST_ANCHORS")
        .ok_or_else(|| format!("{why} needs the DAPR_TRUST_ANCHORS environment variable (PEM)"))?;
    if env("NAMESPACE").is_none() {
        return Err(format!(
            "{why} needs the NAMESPACE environment variable (the pod's namespace)"
        ));
    }
    if flags.app_id.is_empty() {
        return Err(format!("{why} needs --app-id"));
    }
    Ok(Some(ControlPlane {
        sentry_address,
        operator_address,
        namespace: env("DAPR_CONTROLPLANE_NAMESPACE").unwrap_or_else(|| "dapr-system".into()),
        trust_domain: env("DAPR_CONTROLPLANE_TRUST_DOMAIN").unwrap_or_else(|| "cluster.local".into()),
        trust_anchors,
        token_file: env("DAPR_SENTRY_TOKEN_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SENTRY_TOKEN_FILE)),
        mtls: flags.enable_mtls,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        let mut all = vec!["daprd".to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        Flags::try_parse_from(normalise_args(all))
    }

    #[test]
    fn defaults_match_dapr() {
        let f = parse(&["--app-id", "a"]).expect("parse");
        assert_eq!(
            (f.dapr_http_port, f.dapr_grpc_port, f.metrics_port),
            (3500, 50001, 9090)
        );
        assert_eq!(f.app_protocol, AppProtocol::Http);
        assert_eq!(f.app_channel_address, "127.0.0.1");
        assert_eq!(f.app_health_check_path, "/healthz");
        assert!(f.enable_metrics && !f.log_as_json && f.enable_api_logging.is_none());
        let s = Settings::from_flags(f, HashMap::new()).expect("valid");
        assert_eq!(s.max_body_size, 4 << 20);
        assert_eq!(s.graceful_shutdown, Duration::from_secs(5));
        assert_eq!(s.app_max_concurrency, None);
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

    #[test]
    fn validates_combinations() {
        let check = |args: &[&str]| Settings::from_flags(parse(args).expect("parse"), HashMap::new());
        assert!(check(&[]).expect_err("no id").contains("--app-id"));
        assert!(check(&["--app-id", "a.b"]).expect_err("dot").contains("dots"));
        assert!(
            check(&["--app-id", "a", "--app-port", "3500"])
                .expect_err("clash")
                .contains("--dapr-http-port")
        );
        assert!(
            check(&["--app-id", "a", "--max-body-size", "4Q"])
                .expect_err("size")
                .contains("--max-body-size")
        );
        assert!(check(&["--app-id", "a", "--dapr-listen-addresses", "nope"]).is_err());
        let s = check(&[
            "--app-id",
            "a",
            "--max-body-size",
            "16Mi",
            "--dapr-listen-addresses",
            "[::1],127.0.0.1",
        ])
        .expect("valid");
        assert_eq!(s.max_body_size, 16 << 20);
        assert_eq!(s.listen_addresses.len(), 2);
        assert!(
            check(&["--app-id", "a", "--read-buffer-size", "lots"])
                .expect_err("size")
                .contains("--read-buffer-size")
        );
        let size = |args: &[&str]| check(args).expect("valid").read_buffer_size;
        assert_eq!(size(&["--app-id", "a"]), MIN_READ_BUFFER);
        assert_eq!(
            size(&["--app-id", "a", "--dapr-http-read-buffer-size", "32"]),
            32 << 10
        );
        assert_eq!(
            size(&[
                "--app-id",
                "a",
                "--dapr-http-read-buffer-size",
                "32",
                "--read-buffer-size",
                "64Ki"
            ]),
            64 << 10
        );
    }

    #[test]
    fn control_plane_needs_its_address_anchors_and_namespace() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let check = |args: &[&str], e: HashMap<String, String>| {
            let mut all = vec!["--app-id", "a"];
            all.extend(args);
            Settings::from_flags(parse(&all).expect("parse"), e)
        };
        let full = env(&[("DAPR_TRUST_ANCHORS", "pem"), ("NAMESPACE", "prod")]);
        assert!(check(&[], HashMap::new()).expect("plain").control_plane.is_none());
        // An operator address only counts in Kubernetes mode.
        let s = check(&["--control-plane-address", "op:443"], HashMap::new()).expect("standalone");
        assert!(s.control_plane.is_none());
        let k8s = ["--mode", "kubernetes", "--control-plane-address", "op:443"];
        assert!(
            check(&k8s, full.clone())
                .expect_err("no sentry")
                .contains("--sentry-address")
        );
        let with_sentry = [&k8s[..], &["--sentry-address", "sentry:443"]].concat();
        assert!(
            check(&with_sentry, env(&[("NAMESPACE", "prod")]))
                .expect_err("no anchors")
                .contains("DAPR_TRUST_ANCHORS")
        );
        assert!(
            check(&with_sentry, env(&[("DAPR_TRUST_ANCHORS", "pem")]))
                .expect_err("no namespace")
                .contains("NAMESPACE")
        );
        let cp = check(&with_sentry, full.clone())
            .expect("valid")
            .control_plane
            .expect("control plane");
        assert_eq!(cp.operator_address.as_deref(), Some("op:443"));
        assert_eq!(
            (cp.namespace.as_str(), cp.trust_domain.as_str()),
            ("dapr-system", "cluster.local")
        );
        assert_eq!(cp.token_file, PathBuf::from(SENTRY_TOKEN_FILE));
        assert!(!cp.mtls);
        let mtls = check(&["--enable-mtls", "--sentry-address", "s:1"], full).expect("mtls");
        assert!(
            mtls.control_plane
                .is_some_and(|c| c.mtls && c.operator_address.is_none())
        );
    }
}
