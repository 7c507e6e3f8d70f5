//! Validated settings: the flags checked against each other, with what
//! the environment adds (tokens, namespace, the control plane's identity).

use std::{collections::HashMap, net::IpAddr, path::PathBuf, time::Duration};

use crate::flags::{AppProtocol, Flags, Mode};

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
    /// `--allowed-origins`: None when CORS is off, `["*"]` for any origin.
    pub allowed_origins: Option<Vec<String>>,
    /// `--disable-init-endpoints subscribe`: no start-up subscription call to the app.
    pub skip_app_subscribe: bool,
    /// `--app-binding-options-timeout`.
    pub binding_options_timeout: Duration,
}

impl Settings {
    /// Checks the flags against each other and reads the environment map.
    pub fn from_flags(mut flags: Flags, env: HashMap<String, String>) -> Result<Self, String> {
        if flags.app_ssl {
            flags.app_protocol = match flags.app_protocol {
                AppProtocol::Http => AppProtocol::Https,
                AppProtocol::Grpc => AppProtocol::Grpcs,
                p => p,
            };
        }
        let mut skip_app_subscribe = false;
        for e in &flags.disable_init_endpoints {
            match e.trim() {
                "subscribe" => skip_app_subscribe = true,
                // daprd has no actors, so it never asks the app for their configuration.
                "config" | "" => {}
                other => {
                    return Err(format!(
                        "--disable-init-endpoints {other:?}: expected config or subscribe"
                    ));
                }
            }
        }
        let binding_options_timeout = daprs_components::parse_duration(&flags.app_binding_options_timeout)
            .ok_or_else(|| {
                format!(
                    "--app-binding-options-timeout {:?} is not a duration such as 3s",
                    flags.app_binding_options_timeout
                )
            })?;
        let allowed_origins = Some(
            flags
                .allowed_origins
                .split(',')
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect::<Vec<_>>(),
        )
        .filter(|o| !o.is_empty());
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
            allowed_origins,
            skip_app_subscribe,
            binding_options_timeout,
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
        namespace: flags
            .control_plane_namespace
            .clone()
            .or_else(|| env("DAPR_CONTROLPLANE_NAMESPACE"))
            .unwrap_or_else(|| "dapr-system".into()),
        trust_domain: flags
            .control_plane_trust_domain
            .clone()
            .or_else(|| env("DAPR_CONTROLPLANE_TRUST_DOMAIN"))
            .unwrap_or_else(|| "cluster.local".into()),
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
    use crate::flags::tests::parse;

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

    #[test]
    fn accepts_every_dapr_flag() {
        let f = parse(&[
            "--app-id",
            "a",
            "--app-ssl",
            "--app-protocol",
            "grpc",
            "--placement-host-address",
            "localhost:50005",
            "--scheduler-host-address",
            "localhost:50006,localhost:50007",
            "--enable-profiling",
            "--profile-port",
            "7777",
            "--control-plane-trust-domain",
            "example.org",
            "--control-plane-namespace",
            "cp",
            "--allowed-origins",
            "http://a.example, http://b.example",
            "--disable-init-endpoints",
            "config,subscribe",
            "--app-binding-options-timeout",
            "5s",
            "--dapr-http-max-request-size",
            "-1",
            "--max-body-size",
            "8Mi",
            "--read-buffer-size",
            "16Ki",
            "--components-path",
            "./c",
            "--scheduler-job-streams",
            "3",
            "--actors-disseminate-timeout",
            "30s",
            "--sentry-request-jwt-audiences",
            "x",
            "--hot-reload-reconcile-interval",
            "1m",
        ])
        .expect("parse");
        assert_eq!(
            f.inert.given(),
            [
                "--placement-host-address",
                "--scheduler-host-address",
                "--scheduler-job-streams",
                "--actors-disseminate-timeout",
                "--enable-profiling",
                "--profile-port",
                "--sentry-request-jwt-audiences",
                "--hot-reload-reconcile-interval",
            ]
        );
        let s = Settings::from_flags(f, HashMap::new()).expect("valid");
        assert_eq!(s.flags.app_protocol, AppProtocol::Grpcs, "--app-ssl");
        assert!(s.skip_app_subscribe);
        assert_eq!(s.binding_options_timeout, Duration::from_secs(5));
        assert_eq!(s.max_body_size, 8 << 20);
        assert_eq!(
            s.allowed_origins.as_deref(),
            Some(&["http://a.example".to_string(), "http://b.example".to_string()][..])
        );
        let bad = parse(&["--app-id", "a", "--disable-init-endpoints", "actors"]).expect("parse");
        assert!(
            Settings::from_flags(bad, HashMap::new())
                .expect_err("bad")
                .contains("config or subscribe")
        );
        let bad = parse(&["--app-id", "a", "--app-binding-options-timeout", "soon"]).expect("parse");
        assert!(Settings::from_flags(bad, HashMap::new()).is_err());
    }
}
