//! What gets injected: the `daprd` container, its volumes and the env for
//! app containers, built from the injector's settings and one pod's
//! annotations.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
        ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
        SecretKeySelector, SecurityContext, ServiceAccountTokenProjection, TCPSocketAction, Volume,
        VolumeMount, VolumeProjection,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};

use crate::annotations::{Problem, Reader, key, parse_env, parse_mounts, valid_app_id};

pub const CONTAINER_NAME: &str = "daprd";
pub const HTTP_PORT: u16 = 3500;
pub const PUBLIC_PORT: u16 = 3501;
pub const TOKEN_VOLUME: &str = "dapr-identity-token";
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/dapr.io/sentrytoken";
pub const SOCKET_VOLUME: &str = "dapr-unix-domain-socket";
/// Where daprd sees the socket folder; the app mounts it where it likes.
pub const SOCKET_DIR: &str = "/var/run/dapr-sockets";
const PROTOCOLS: &[&str] = &["http", "grpc", "https", "grpcs", "h2c"];
const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error"];
const SECCOMP_TYPES: &[&str] = &["Unconfined", "RuntimeDefault", "Localhost"];

/// Whether daprd goes in as a native sidecar (an init container with
/// `restartPolicy: Always`, Kubernetes ≥ 1.29) or a regular container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeSidecar {
    /// Native when the API server is 1.29 or newer.
    Auto,
    On,
    Off,
}

/// The injector's own settings, shared by every pod.
#[derive(Clone, Debug)]
pub struct InjectorConfig {
    pub image: String,
    pub pull_policy: String,
    /// Namespace of the control plane (operator, injector).
    pub control_plane_namespace: String,
    pub cluster_domain: String,
    /// Trust domain of the control plane, used for the token audience.
    pub control_plane_trust_domain: String,
    /// PEM trust anchors handed to every sidecar, when known.
    pub trust_anchors: Option<String>,
    pub native_sidecar: NativeSidecar,
    /// Minor version of the API server, when known (for [`NativeSidecar::Auto`]).
    pub server_minor_version: Option<u32>,
    /// Mutual TLS between sidecars (Dapr's `daprsystem` `spec.mtls.enabled`).
    pub mtls: bool,
}

impl Default for InjectorConfig {
    fn default() -> Self {
        Self {
            image: "ghcr.io/daprs/daprd:latest".into(),
            pull_policy: "IfNotPresent".into(),
            control_plane_namespace: "dapr-system".into(),
            cluster_domain: "cluster.local".into(),
            control_plane_trust_domain: "cluster.local".into(),
            trust_anchors: None,
            native_sidecar: NativeSidecar::Auto,
            server_minor_version: None,
            mtls: true,
        }
    }
}

impl InjectorConfig {
    /// The operator API, where sidecars read their components.
    pub fn operator_address(&self) -> String {
        format!(
            "dapr-api.{}.svc.{}:443",
            self.control_plane_namespace, self.cluster_domain
        )
    }

    /// The certificate service, where sidecars get their identity.
    pub fn sentry_address(&self) -> String {
        format!(
            "dapr-sentry.{}.svc.{}:443",
            self.control_plane_namespace, self.cluster_domain
        )
    }

    /// Audience of the projected service-account token the operator checks.
    pub fn token_audience(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/dapr-sentry",
            self.control_plane_trust_domain, self.control_plane_namespace
        )
    }
}

/// Everything decided for one pod.
#[derive(Clone, Debug)]
pub struct Sidecar {
    pub app_id: String,
    pub grpc_port: u16,
    pub app_protocol: String,
    pub metrics_enabled: bool,
    pub native: bool,
    pub container: Container,
    pub volumes: Vec<Volume>,
    /// Env for every app container (names they already set are kept).
    pub app_env: Vec<EnvVar>,
    /// Mounts for every app container (skipped where the name or path is taken).
    pub app_mounts: Vec<VolumeMount>,
    /// Problems with annotations, returned to the user as warnings.
    pub warnings: Vec<String>,
}

/// Why a pod cannot be injected at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied(pub String);

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

fn port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// What `pod` declares that the sidecar may need: its name, container ports,
/// container env and volume names.
pub struct PodFacts<'a> {
    pub name: Option<&'a str>,
    pub annotations: &'a BTreeMap<String, String>,
    pub app_containers: &'a [Container],
    pub volume_names: Vec<&'a str>,
}

/// Where `dapr.io/app-port` is missing: the one port the app declares, or a
/// `PORT` env var (as Knative sets), when exactly one candidate exists.
fn infer_app_port(containers: &[Container]) -> Option<(u16, String)> {
    let declared: Vec<i32> = containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .map(|p| p.container_port)
        .collect();
    if let [only] = declared.as_slice() {
        return u16::try_from(*only)
            .ok()
            .map(|p| (p, format!("its only container port is {p}")));
    }
    if !declared.is_empty() {
        return None;
    }
    let from_env: Vec<u16> = containers
        .iter()
        .flat_map(|c| c.env.iter().flatten())
        .filter(|e| e.name == "PORT")
        .filter_map(|e| e.value.as_deref()?.trim().parse().ok())
        .collect();
    match from_env.as_slice() {
        [only] => Some((*only, format!("its PORT env var is {only}"))),
        _ => None,
    }
}

fn probe(r: &mut Reader<'_>, keys: [&'static str; 4], defaults: [i32; 4], readiness: bool) -> Probe {
    let mut v = defaults;
    for (slot, k) in v.iter_mut().zip(keys) {
        if let Some(n) = r.int(k, 0..=86_400) {
            *slot = i32::try_from(n).unwrap_or(*slot);
        }
    }
    let target = IntOrString::Int(i32::from(PUBLIC_PORT));
    Probe {
        http_get: readiness.then(|| HTTPGetAction {
            path: Some("/v1.0/healthz".into()),
            port: target.clone(),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        tcp_socket: (!readiness).then_some(TCPSocketAction {
            port: target,
            host: None,
        }),
        initial_delay_seconds: Some(v[0]),
        timeout_seconds: Some(v[1]),
        period_seconds: Some(v[2]),
        failure_threshold: Some(v[3]),
        ..Default::default()
    }
}

/// Builds the sidecar for a pod in `namespace`.
pub fn build(cfg: &InjectorConfig, namespace: &str, pod: &PodFacts<'_>) -> Result<Sidecar, Denied> {
    let mut r = Reader::new(pod.annotations);
    let mut notes: Vec<String> = Vec::new();

    let app_id = r
        .string(key::APP_ID)
        .or_else(|| pod.name.filter(|n| !n.is_empty()).map(str::to_string))
        .ok_or_else(|| {
            Denied(format!(
                "{} is required: the pod has no name to fall back on (pods of Deployments and other controllers must set it)",
                key::APP_ID
            ))
        })?;
    if !valid_app_id(&app_id) {
        // A value of any length is quoted at most 64 characters long.
        let shown: String = app_id.chars().take(64).collect();
        let more = if shown.len() < app_id.len() { "…" } else { "" };
        return Err(Denied(format!(
            "{} {shown:?}{more} is not valid: use at most 58 lowercase letters, digits and '-', starting and ending with a letter or digit",
            key::APP_ID
        )));
    }

    let app_port = match (r.raw(key::APP_PORT), r.port(key::APP_PORT)) {
        (_, Some(p)) => Some(p),
        (Some(_), None) => None,
        (None, None) => infer_app_port(pod.app_containers).map(|(p, why)| {
            notes.push(format!(
                "{} is not set; using {p} because {why}. Set the annotation to make this explicit.",
                key::APP_PORT
            ));
            p
        }),
    };
    let mut app_protocol = r
        .choice(key::APP_PROTOCOL, PROTOCOLS)
        .unwrap_or_else(|| "http".into());
    if r.bool(key::APP_SSL, false) {
        // The deprecated switch upgrades the plain protocols to TLS.
        app_protocol = match app_protocol.as_str() {
            "http" => "https".into(),
            "grpc" => "grpcs".into(),
            other => other.into(),
        };
        notes.push(format!(
            "{} is deprecated; use {}: {app_protocol}",
            key::APP_SSL,
            key::APP_PROTOCOL
        ));
    }
    let grpc_port = r.port(key::GRPC_PORT).unwrap_or(50001);
    let internal_port = r.port(key::INTERNAL_GRPC_PORT).unwrap_or(50002);
    let metrics_enabled = r.bool(key::ENABLE_METRICS, true);
    let metrics_port = r.port(key::METRICS_PORT).unwrap_or(9090);
    let log_level = r
        .choice(key::LOG_LEVEL, LOG_LEVELS)
        .unwrap_or_else(|| "info".into());
    let listen = r
        .string(key::LISTEN_ADDRESSES)
        .unwrap_or_else(|| "[::1],127.0.0.1".into());

    let mut args: Vec<String> = vec!["/daprd".into()];
    let mut flag = |name: &str, value: String| {
        args.push(format!("--{name}"));
        args.push(value);
    };
    flag("dapr-http-port", HTTP_PORT.to_string());
    flag("dapr-grpc-port", grpc_port.to_string());
    flag("dapr-internal-grpc-port", internal_port.to_string());
    flag("dapr-listen-addresses", listen);
    flag("dapr-public-port", PUBLIC_PORT.to_string());
    flag("app-id", app_id.clone());
    flag("app-protocol", app_protocol.clone());
    flag("log-level", log_level);
    flag("mode", "kubernetes".into());
    flag("control-plane-address", cfg.operator_address());
    flag("sentry-address", cfg.sentry_address());
    if let Some(p) = app_port {
        flag("app-port", p.to_string());
    }
    flag("enable-metrics", metrics_enabled.to_string());
    flag("metrics-port", metrics_port.to_string());
    if let Some(c) = r.string(key::CONFIG) {
        flag("config", c);
    }
    if let Some(a) = r.string(key::APP_CHANNEL_ADDRESS) {
        flag("app-channel-address", a);
    }
    if let Some(n) = r.int(key::APP_MAX_CONCURRENCY, -1..=i64::from(i32::MAX)) {
        flag("app-max-concurrency", n.to_string());
    }
    if let Some(n) = r.int(key::HTTP_MAX_REQUEST_SIZE, 1..=4096) {
        flag("dapr-http-max-request-size", n.to_string());
    }
    if let Some(q) = r.byte_size(key::MAX_BODY_SIZE) {
        flag("max-body-size", q);
    }
    if let Some(n) = r.int(key::HTTP_READ_BUFFER_SIZE, 1..=65_536) {
        flag("dapr-http-read-buffer-size", n.to_string());
    }
    if let Some(q) = r.byte_size(key::READ_BUFFER_SIZE) {
        flag("read-buffer-size", q);
    }
    if let Some(n) = r.int(key::GRACEFUL_SHUTDOWN_SECONDS, -1..=86_400) {
        flag("dapr-graceful-shutdown-seconds", n.to_string());
    }
    if let Some(d) = r.go_duration(key::BLOCK_SHUTDOWN_DURATION) {
        flag("dapr-block-shutdown-duration", d);
    }
    if r.raw(key::LOG_AS_JSON).is_some() {
        let v = r.bool(key::LOG_AS_JSON, false);
        flag("log-as-json", v.to_string());
    }
    if r.raw(key::ENABLE_API_LOGGING).is_some() {
        let v = r.bool(key::ENABLE_API_LOGGING, false);
        flag("enable-api-logging", v.to_string());
    }
    let socket_path = r.string(key::UNIX_DOMAIN_SOCKET_PATH);
    if socket_path.is_some() {
        flag("unix-domain-socket", SOCKET_DIR.into());
    }
    if r.bool(key::ENABLE_APP_HEALTH_CHECK, false) {
        flag("enable-app-health-check", "true".into());
        flag(
            "app-health-check-path",
            r.string(key::APP_HEALTH_CHECK_PATH)
                .unwrap_or_else(|| "/healthz".into()),
        );
        let interval = r.int(key::APP_HEALTH_PROBE_INTERVAL, 1..=3600).unwrap_or(5);
        flag("app-health-probe-interval", interval.to_string());
        let timeout = r.int(key::APP_HEALTH_PROBE_TIMEOUT, 1..=3_600_000).unwrap_or(500);
        flag("app-health-probe-timeout", timeout.to_string());
        let threshold = r.int(key::APP_HEALTH_THRESHOLD, 1..=1000).unwrap_or(3);
        flag("app-health-threshold", threshold.to_string());
    }
    if r.bool(key::DISABLE_BUILTIN_K8S_SECRET_STORE, false) {
        args.push("--disable-builtin-k8s-secret-store".into());
    }
    if cfg.mtls {
        args.push("--enable-mtls".into());
    }

    // Environment of daprd.
    let mut daprd_env = vec![
        env("NAMESPACE", namespace),
        EnvVar {
            name: "POD_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
        },
        env("DAPR_CONTROLPLANE_NAMESPACE", cfg.control_plane_namespace.clone()),
        env(
            "DAPR_CONTROLPLANE_TRUST_DOMAIN",
            cfg.control_plane_trust_domain.clone(),
        ),
        env("DAPR_CLUSTER_DOMAIN", cfg.cluster_domain.clone()),
    ];
    if let Some(anchors) = &cfg.trust_anchors {
        daprd_env.push(env("DAPR_TRUST_ANCHORS", anchors.clone()));
    }
    let mut user_keys = Vec::new();
    if let Some(raw) = r.string(key::ENV) {
        for (k, v) in parse_env(&raw) {
            user_keys.push(k.clone());
            daprd_env.push(env(&k, v));
        }
    }
    if let Some(raw) = r.string(key::ENV_FROM_SECRET) {
        for (k, v) in parse_env(&raw) {
            let (secret, secret_key) = v.split_once(':').unwrap_or((v.as_str(), v.as_str()));
            user_keys.push(k.clone());
            daprd_env.push(secret_env(&k, secret, secret_key));
        }
    }
    if !user_keys.is_empty() {
        daprd_env.push(env("DAPR_ENV_KEYS", user_keys.join(" ")));
    }
    if let Some(s) = r.string(key::API_TOKEN_SECRET) {
        daprd_env.push(secret_env("DAPR_API_TOKEN", &s, "token"));
    }
    if let Some(s) = r.string(key::APP_TOKEN_SECRET) {
        daprd_env.push(secret_env("APP_API_TOKEN", &s, "token"));
    }

    // Resources: one bad quantity drops that one value, not the rest.
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for (k, is_limit, resource) in [
        (key::CPU_REQUEST, false, "cpu"),
        (key::MEMORY_REQUEST, false, "memory"),
        (key::CPU_LIMIT, true, "cpu"),
        (key::MEMORY_LIMIT, true, "memory"),
    ] {
        if let Some(q) = r.quantity(k) {
            let target = if is_limit { &mut limits } else { &mut requests };
            target.insert(resource.to_string(), Quantity(q));
        }
    }
    let resources = (!requests.is_empty() || !limits.is_empty()).then(|| ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    });

    // Mounts: the identity token, then the user's, when the volume exists.
    let mut mounts = vec![VolumeMount {
        name: TOKEN_VOLUME.into(),
        mount_path: TOKEN_MOUNT_PATH.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    if socket_path.is_some() {
        mounts.push(VolumeMount {
            name: SOCKET_VOLUME.into(),
            mount_path: SOCKET_DIR.into(),
            ..Default::default()
        });
    }
    for (k, read_only) in [(key::VOLUME_MOUNTS, true), (key::VOLUME_MOUNTS_RW, false)] {
        let Some(raw) = r.string(k) else { continue };
        for (name, path) in parse_mounts(&raw) {
            if pod.volume_names.contains(&name.as_str()) {
                mounts.push(VolumeMount {
                    name,
                    mount_path: path,
                    read_only: Some(read_only),
                    ..Default::default()
                });
            } else {
                notes.push(format!(
                    "{k}: the pod has no volume named {name:?}; that mount is skipped"
                ));
            }
        }
    }

    let seccomp = match r.raw(key::SECCOMP) {
        None => "RuntimeDefault".to_string(),
        Some(v) => match SECCOMP_TYPES.iter().find(|t| t.eq_ignore_ascii_case(v.trim())) {
            Some(t) => (*t).to_string(),
            None => {
                notes.push(format!(
                    "{}: {v:?} is not one of {}; using RuntimeDefault",
                    key::SECCOMP,
                    SECCOMP_TYPES.join(", ")
                ));
                "RuntimeDefault".into()
            }
        },
    };

    let readiness = probe(
        &mut r,
        [
            key::READINESS_DELAY,
            key::READINESS_TIMEOUT,
            key::READINESS_PERIOD,
            key::READINESS_THRESHOLD,
        ],
        [1, 1, 1, 5],
        true,
    );
    let liveness = probe(
        &mut r,
        [
            key::LIVENESS_DELAY,
            key::LIVENESS_TIMEOUT,
            key::LIVENESS_PERIOD,
            key::LIVENESS_THRESHOLD,
        ],
        [180, 3, 10, 5],
        false,
    );

    let native = match r.raw(key::ENABLE_NATIVE_SIDECAR) {
        Some(_) => r.bool(key::ENABLE_NATIVE_SIDECAR, false),
        None => match cfg.native_sidecar {
            NativeSidecar::On => true,
            NativeSidecar::Off => false,
            NativeSidecar::Auto => cfg.server_minor_version.is_some_and(|m| m >= 29),
        },
    };
    let image = r.string(key::IMAGE).unwrap_or_else(|| cfg.image.clone());
    r.note_unsupported();

    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(image),
        image_pull_policy: Some(cfg.pull_policy.clone()),
        args: Some(args),
        env: Some(daprd_env),
        ports: Some(vec![
            port("dapr-http", HTTP_PORT),
            port("dapr-grpc", grpc_port),
            port("dapr-internal", internal_port),
            port("dapr-metrics", metrics_port),
        ]),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        resources,
        volume_mounts: Some(mounts),
        restart_policy: native.then(|| "Always".into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: seccomp,
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let token_volume = Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(cfg.token_audience()),
                    expiration_seconds: Some(7200),
                    path: "token".into(),
                }),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    };

    let mut volumes = vec![token_volume];
    let mut app_mounts = Vec::new();
    if let Some(path) = socket_path {
        volumes.push(Volume {
            name: SOCKET_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: None,
            }),
            ..Default::default()
        });
        app_mounts.push(VolumeMount {
            name: SOCKET_VOLUME.into(),
            mount_path: path,
            ..Default::default()
        });
    }

    let mut app_env = vec![
        env("DAPR_HTTP_PORT", HTTP_PORT.to_string()),
        env("DAPR_GRPC_PORT", grpc_port.to_string()),
    ];
    app_env.push(env("APP_PROTOCOL", app_protocol.clone()));

    let mut warnings: Vec<String> = r.problems.iter().map(Problem::to_string).collect();
    warnings.extend(notes);
    Ok(Sidecar {
        app_id,
        grpc_port,
        app_protocol,
        metrics_enabled,
        native,
        container,
        volumes,
        app_env,
        app_mounts,
        warnings,
    })
}
