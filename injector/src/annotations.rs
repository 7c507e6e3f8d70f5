//! Reading the `dapr.io/*` pod annotations into what the sidecar needs,
//! collecting a problem for every value that cannot be used.

use std::collections::BTreeMap;

/// Annotation keys, as Dapr documents them.
pub mod key {
    pub const ENABLED: &str = "dapr.io/enabled";
    pub const APP_ID: &str = "dapr.io/app-id";
    pub const APP_PORT: &str = "dapr.io/app-port";
    pub const APP_PROTOCOL: &str = "dapr.io/app-protocol";
    pub const APP_SSL: &str = "dapr.io/app-ssl";
    pub const APP_CHANNEL_ADDRESS: &str = "dapr.io/app-channel-address";
    pub const APP_MAX_CONCURRENCY: &str = "dapr.io/app-max-concurrency";
    pub const CONFIG: &str = "dapr.io/config";
    pub const LOG_LEVEL: &str = "dapr.io/log-level";
    pub const LOG_AS_JSON: &str = "dapr.io/log-as-json";
    pub const ENABLE_API_LOGGING: &str = "dapr.io/enable-api-logging";
    pub const ENABLE_METRICS: &str = "dapr.io/enable-metrics";
    pub const METRICS_PORT: &str = "dapr.io/metrics-port";
    pub const GRPC_PORT: &str = "dapr.io/grpc-port";
    pub const INTERNAL_GRPC_PORT: &str = "dapr.io/internal-grpc-port";
    pub const LISTEN_ADDRESSES: &str = "dapr.io/sidecar-listen-addresses";
    pub const API_TOKEN_SECRET: &str = "dapr.io/api-token-secret";
    pub const APP_TOKEN_SECRET: &str = "dapr.io/app-token-secret";
    pub const ENV: &str = "dapr.io/env";
    pub const ENV_FROM_SECRET: &str = "dapr.io/env-from-secret";
    pub const CPU_REQUEST: &str = "dapr.io/sidecar-cpu-request";
    pub const CPU_LIMIT: &str = "dapr.io/sidecar-cpu-limit";
    pub const MEMORY_REQUEST: &str = "dapr.io/sidecar-memory-request";
    pub const MEMORY_LIMIT: &str = "dapr.io/sidecar-memory-limit";
    pub const IMAGE: &str = "dapr.io/sidecar-image";
    pub const SECCOMP: &str = "dapr.io/sidecar-seccomp-profile-type";
    pub const LIVENESS_DELAY: &str = "dapr.io/sidecar-liveness-probe-delay-seconds";
    pub const LIVENESS_TIMEOUT: &str = "dapr.io/sidecar-liveness-probe-timeout-seconds";
    pub const LIVENESS_PERIOD: &str = "dapr.io/sidecar-liveness-probe-period-seconds";
    pub const LIVENESS_THRESHOLD: &str = "dapr.io/sidecar-liveness-probe-threshold";
    pub const READINESS_DELAY: &str = "dapr.io/sidecar-readiness-probe-delay-seconds";
    pub const READINESS_TIMEOUT: &str = "dapr.io/sidecar-readiness-probe-timeout-seconds";
    pub const READINESS_PERIOD: &str = "dapr.io/sidecar-readiness-probe-period-seconds";
    pub const READINESS_THRESHOLD: &str = "dapr.io/sidecar-readiness-probe-threshold";
    pub const HTTP_MAX_REQUEST_SIZE: &str = "dapr.io/http-max-request-size";
    pub const MAX_BODY_SIZE: &str = "dapr.io/max-body-size";
    pub const DISABLE_BUILTIN_K8S_SECRET_STORE: &str = "dapr.io/disable-builtin-k8s-secret-store";
    pub const HTTP_READ_BUFFER_SIZE: &str = "dapr.io/http-read-buffer-size";
    pub const READ_BUFFER_SIZE: &str = "dapr.io/read-buffer-size";
    pub const GRACEFUL_SHUTDOWN_SECONDS: &str = "dapr.io/graceful-shutdown-seconds";
    pub const VOLUME_MOUNTS: &str = "dapr.io/volume-mounts";
    pub const VOLUME_MOUNTS_RW: &str = "dapr.io/volume-mounts-rw";
    pub const ENABLE_APP_HEALTH_CHECK: &str = "dapr.io/enable-app-health-check";
    pub const APP_HEALTH_CHECK_PATH: &str = "dapr.io/app-health-check-path";
    pub const APP_HEALTH_PROBE_INTERVAL: &str = "dapr.io/app-health-probe-interval";
    pub const APP_HEALTH_PROBE_TIMEOUT: &str = "dapr.io/app-health-probe-timeout";
    pub const APP_HEALTH_THRESHOLD: &str = "dapr.io/app-health-threshold";
    pub const ENABLE_NATIVE_SIDECAR: &str = "dapr.io/enable-native-sidecar";
    pub const UNIX_DOMAIN_SOCKET_PATH: &str = "dapr.io/unix-domain-socket-path";
    pub const BLOCK_SHUTDOWN_DURATION: &str = "dapr.io/block-shutdown-duration";
    /// Annotations Dapr documents whose feature this daprd does not have yet;
    /// they are reported rather than silently dropped.
    pub const NOT_SUPPORTED: &[&str] = &[
        "dapr.io/enable-profiling",
        "dapr.io/enable-debug",
        "dapr.io/debug-port",
        "dapr.io/app-binding-options-timeout",
        "dapr.io/placement-host-address",
        "dapr.io/actors-disseminate-timeout",
        "dapr.io/scheduler-host-address",
        "dapr.io/pluggable-components",
        "dapr.io/pluggable-components-sockets-folder",
        "dapr.io/inject-pluggable-components",
        "dapr.io/sentry-request-jwt-audiences",
        "dapr.io/disable-init-endpoints",
    ];
}

/// One unusable annotation value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub annotation: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.annotation, self.message)
    }
}

/// Reads typed values out of a pod's annotations, noting problems as it goes.
pub struct Reader<'a> {
    map: &'a BTreeMap<String, String>,
    pub problems: Vec<Problem>,
}

pub use daprs_api::contract::{truthy, valid_app_id};

fn falsy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "0" | "f" | "false" | "n" | "no" | "off"
    )
}

impl<'a> Reader<'a> {
    pub fn new(map: &'a BTreeMap<String, String>) -> Self {
        Self {
            map,
            problems: Vec::new(),
        }
    }

    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.map.get(key).map(String::as_str)
    }

    fn problem(&mut self, annotation: &'static str, message: String) {
        self.problems.push(Problem { annotation, message });
    }

    /// A string value, trimmed; `None` when absent or empty.
    pub fn string(&self, key: &str) -> Option<String> {
        self.raw(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// A boolean; anything that is neither truthy nor falsy is a problem and
    /// the default stands.
    pub fn bool(&mut self, key: &'static str, default: bool) -> bool {
        match self.raw(key) {
            None => default,
            Some(v) if truthy(v) => true,
            Some(v) if falsy(v) => false,
            Some(v) => {
                self.problem(
                    key,
                    format!("{v:?} is not a boolean (use \"true\" or \"false\"); using {default}"),
                );
                default
            }
        }
    }

    /// An integer in `range`; otherwise a problem and `None`.
    pub fn int(&mut self, key: &'static str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        let v = self.raw(key)?.trim();
        match v.parse::<i64>() {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.problem(
                    key,
                    format!(
                        "{v:?} is not a whole number from {} to {}; the annotation is ignored",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A port number (1–65535).
    pub fn port(&mut self, key: &'static str) -> Option<u16> {
        self.int(key, 1..=65535).and_then(|n| u16::try_from(n).ok())
    }

    /// One of `allowed` (case-insensitive, returned in lower case).
    pub fn choice(&mut self, key: &'static str, allowed: &[&str]) -> Option<String> {
        let v = self.string(key)?;
        let lower = v.to_ascii_lowercase();
        if allowed.contains(&lower.as_str()) {
            Some(lower)
        } else {
            self.problem(
                key,
                format!(
                    "{v:?} is not one of {}; the annotation is ignored",
                    allowed.join(", ")
                ),
            );
            None
        }
    }

    /// The value when `valid` accepts it; otherwise a problem saying it is
    /// not `what`, and `None`.
    fn checked(&mut self, key: &'static str, valid: impl Fn(&str) -> bool, what: &str) -> Option<String> {
        let v = self.string(key)?;
        if valid(&v) {
            return Some(v);
        }
        self.problem(key, format!("{v:?} is not {what}"));
        None
    }

    /// A Kubernetes quantity such as `100m`, `1.5`, `250Mi`.
    pub fn quantity(&mut self, key: &'static str) -> Option<String> {
        self.checked(
            key,
            valid_quantity,
            "a Kubernetes quantity (for example 100m, 0.5, 256Mi, 1Gi)",
        )
    }

    /// A byte size such as `16Ki` or `4Mi`, as daprd reads it.
    pub fn byte_size(&mut self, key: &'static str) -> Option<String> {
        self.checked(
            key,
            |v| daprs_api::contract::parse_byte_size(v).is_some(),
            "a byte size (for example 16Ki, 4Mi, 1.5Gi or 1048576)",
        )
    }

    /// A duration such as `10s`, `500ms` or `1m30s`.
    pub fn go_duration(&mut self, key: &'static str) -> Option<String> {
        self.checked(
            key,
            valid_go_duration,
            "a duration (for example 10s, 500ms, 1m30s); the annotation is ignored",
        )
    }

    /// Notes every annotation whose feature this daprd lacks.
    pub fn note_unsupported(&mut self) {
        for key in key::NOT_SUPPORTED {
            if self.map.contains_key(*key) {
                self.problem(
                    key,
                    "this daprd does not support it yet; the annotation is ignored".into(),
                );
            }
        }
    }
}

/// Whether `s` is a Kubernetes resource quantity: a decimal number followed
/// by an optional binary (Ki…Ei), decimal (n, u, m, k, M…E) or exponent suffix.
pub fn valid_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return false;
    }
    match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P"
        | "E" => true,
        exp => exp
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())),
    }
}

/// Whether `s` is a non-empty Go-style duration daprd accepts.
pub fn valid_go_duration(s: &str) -> bool {
    !s.trim().is_empty() && daprs_api::contract::parse_duration(s).is_some()
}

/// `K=v,K2=v2`; a value may hold commas, since a new pair only starts at
/// `,<spaces>NAME=`.
pub fn parse_env(s: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for piece in s.split(',') {
        let starts_pair = piece.split_once('=').is_some_and(|(k, _)| {
            let k = k.trim();
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        match (starts_pair, out.last_mut()) {
            (true, _) | (false, None) => {
                if let Some((k, v)) = piece.split_once('=') {
                    out.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            (false, Some(last)) => {
                last.1.push(',');
                last.1.push_str(piece);
            }
        }
    }
    out
}

/// `name:/path,name2:/path2`.
pub fn parse_mounts(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|m| m.split_once(':'))
        .map(|(n, p)| (n.trim().to_string(), p.trim().to_string()))
        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["100m", "0.5", "1", "256Mi", "1Gi", "2e3", "1.5G", "+1k"] {
            assert!(valid_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "1.2.3", "100mb", "1 Gi", "lots", "1e", "Gi"] {
            assert!(!valid_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn durations() {
        for ok in ["10s", "500ms", "1m30s", "1h", "30", "1.5s"] {
            assert!(valid_go_duration(ok), "{ok}");
        }
        for bad in ["", "s", "ten seconds", "10 s", "5d", "1.2.3s"] {
            assert!(!valid_go_duration(bad), "{bad}");
        }
    }

    #[test]
    fn env_values_may_hold_commas() {
        assert_eq!(
            parse_env("A=1, B=x,y,z,C_2=3"),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x,y,z".into()),
                ("C_2".into(), "3".into())
            ]
        );
        assert_eq!(parse_env(""), vec![]);
    }

    #[test]
    fn readers_note_problems() {
        let map: BTreeMap<String, String> = [
            ("dapr.io/app-port", "eighty"),
            ("dapr.io/log-level", "LOUD"),
            ("dapr.io/log-as-json", "maybe"),
            ("dapr.io/enable-profiling", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut r = Reader::new(&map);
        assert_eq!(r.port(key::APP_PORT), None);
        assert_eq!(r.choice(key::LOG_LEVEL, &["debug", "info"]), None);
        assert!(!r.bool(key::LOG_AS_JSON, false));
        r.note_unsupported();
        let named: Vec<_> = r.problems.iter().map(|p| p.annotation).collect();
        assert_eq!(
            named,
            vec![
                key::APP_PORT,
                key::LOG_LEVEL,
                key::LOG_AS_JSON,
                "dapr.io/enable-profiling"
            ]
        );
        assert!(r.problems[1].message.contains("debug, info"));
    }
}
