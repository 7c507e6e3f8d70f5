//! What the exporters are told: Dapr's `spec.tracing.otel` and the
//! `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*` environment, resolved to a
//! collector's URL, protocol, headers and timeout, and the batching.

use std::time::Duration;

use super::otlp;

/// How OTLP is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl Protocol {
    /// Dapr's `protocol` (`grpc`, `http`) or OpenTelemetry's
    /// (`grpc`, `http/protobuf`, `http/json`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(Self::Grpc),
            "http" | "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Ok(Self::HttpJson),
            other => Err(format!(
                "OTLP protocol {other:?} is not one of grpc, http, http/protobuf, http/json"
            )),
        }
    }
}

/// An OpenTelemetry collector to export to.
#[derive(Clone, Debug, PartialEq)]
pub struct Otlp {
    /// For HTTP the full URL posted to; for gRPC the collector's
    /// `scheme://host:port`.
    pub url: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

/// Reads the environment (a function so tests need not touch the process's).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name).filter(|v| !v.trim().is_empty())
    }
}

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// An `OTEL_EXPORTER_OTLP_TRACES_<name>`, else `OTEL_EXPORTER_OTLP_<name>`.
fn otel_var(env: &impl Env, name: &str) -> Option<(String, bool)> {
    env.var(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
        .map(|v| (v, true))
        .or_else(|| env.var(&format!("OTEL_EXPORTER_OTLP_{name}")).map(|v| (v, false)))
}

fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

/// `%XX` escapes decoded, as OTLP header values are written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hexval = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value,key2=value2`.
fn parse_headers(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k.trim()), percent_decode(v.trim())))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// The URL to use for `address` with `protocol`. `address` may be a bare
/// `host:port` (Dapr's `endpointAddress`), when `secure` picks the scheme;
/// HTTP gets `/v1/traces` unless `exact` or the address has a path.
fn endpoint_url(address: &str, secure: bool, protocol: Protocol, exact: bool) -> String {
    let address = address.trim();
    let with_scheme = if address.contains("://") {
        address.to_string()
    } else {
        format!("{}://{address}", if secure { "https" } else { "http" })
    };
    let after_scheme = with_scheme.split_once("://").map_or("", |(_, r)| r);
    let has_path = after_scheme.trim_end_matches('/').contains('/');
    match protocol {
        Protocol::Grpc => {
            let (scheme, rest) = with_scheme.split_once("://").unwrap_or(("http", ""));
            let authority = rest.split('/').next().unwrap_or_default();
            format!("{scheme}://{authority}")
        }
        _ if exact || has_path => with_scheme,
        _ => format!("{}{}", with_scheme.trim_end_matches('/'), otlp::HTTP_PATH),
    }
}

/// Dapr's `spec.tracing.otel`, as plain values.
#[derive(Clone, Debug, Default)]
pub struct OtelSpec {
    pub endpoint_address: String,
    pub is_secure: Option<bool>,
    pub protocol: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

impl Otlp {
    /// The collector from the Configuration's `otel` section when it names
    /// one, completed by the `OTEL_EXPORTER_OTLP_*` environment; else from
    /// the environment alone; `None` when neither names a collector.
    pub fn resolve(spec: Option<&OtelSpec>, env: &impl Env) -> Result<Option<Self>, String> {
        let spec = spec.filter(|s| !s.endpoint_address.trim().is_empty());
        let protocol = match spec.map(|s| s.protocol.trim()).filter(|p| !p.is_empty()) {
            Some(p) => Protocol::parse(p)?,
            None => match otel_var(env, "PROTOCOL") {
                Some((p, _)) => Protocol::parse(&p)?,
                None => Protocol::HttpProtobuf,
            },
        };
        let insecure = otel_var(env, "INSECURE").is_some_and(|(v, _)| truthy(&v));
        let url = match spec {
            Some(s) => endpoint_url(
                &s.endpoint_address,
                s.is_secure.unwrap_or(!insecure),
                protocol,
                false,
            ),
            None => match otel_var(env, "ENDPOINT") {
                Some((addr, traces_only)) => endpoint_url(&addr, !insecure, protocol, traces_only),
                None => return Ok(None),
            },
        };
        let mut headers = otel_var(env, "HEADERS").map_or_else(Vec::new, |(h, _)| parse_headers(&h));
        if let Some(s) = spec {
            for (k, v) in &s.headers {
                headers.retain(|(old, _)| !old.eq_ignore_ascii_case(k));
                headers.push((k.clone(), v.clone()));
            }
        }
        let env_timeout = otel_var(env, "TIMEOUT")
            .and_then(|(ms, _)| ms.trim().parse().ok())
            .map(Duration::from_millis);
        let timeout = spec
            .and_then(|s| s.timeout)
            .or(env_timeout)
            .unwrap_or(Duration::from_secs(10));
        Ok(Some(Self {
            url,
            protocol,
            headers,
            timeout,
        }))
    }
}

/// Everything the exporting task needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `service.name`: the app-id, or the program's name.
    pub service: String,
    /// Zipkin's span upload URL.
    pub zipkin: Option<String>,
    pub otlp: Option<Otlp>,
    /// Spans also go to the log.
    pub stdout: bool,
    /// How long spans wait to be batched (`OTEL_BSP_SCHEDULE_DELAY`, 5 s).
    pub delay: Duration,
    /// Most spans held (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048).
    pub queue: usize,
    /// Most spans per export (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512).
    pub batch: usize,
}

impl Settings {
    /// No exporter yet; batching as the environment says.
    pub fn new(service: impl Into<String>, env: &impl Env) -> Self {
        let num = |name: &str, default: u64| {
            env.var(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(default)
        };
        Self {
            service: service.into(),
            zipkin: None,
            otlp: None,
            stdout: false,
            delay: Duration::from_millis(num("OTEL_BSP_SCHEDULE_DELAY", 5000)),
            queue: num("OTEL_BSP_MAX_QUEUE_SIZE", 2048).max(1) as usize,
            batch: num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512).max(1) as usize,
        }
    }

    pub(super) fn exports(&self) -> bool {
        self.zipkin.is_some() || self.otlp.is_some() || self.stdout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Env {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn dapr_endpoint_addresses_become_urls() {
        let spec = OtelSpec {
            endpoint_address: "localhost:4318".into(),
            is_secure: Some(false),
            protocol: "http".into(),
            ..Default::default()
        };
        let o = Otlp::resolve(Some(&spec), &env(&[]))
            .expect("valid in the test")
            .expect("valid in the test");
        assert_eq!(o.url, "http://localhost:4318/v1/traces");
        assert_eq!(o.protocol, Protocol::HttpProtobuf);
        let grpc = OtelSpec {
            endpoint_address: "collector:4317".into(),
            protocol: "grpc".into(),
            ..Default::default()
        };
        let o = Otlp::resolve(Some(&grpc), &env(&[]))
            .expect("valid in the test")
            .expect("valid in the test");
        assert_eq!(o.url, "https://collector:4317");
        assert_eq!(o.protocol, Protocol::Grpc);
        let bad = OtelSpec {
            endpoint_address: "x:1".into(),
            protocol: "udp".into(),
            ..Default::default()
        };
        assert!(
            Otlp::resolve(Some(&bad), &env(&[]))
                .expect_err("refused")
                .contains("udp")
        );
    }

    #[test]
    fn the_environment_names_a_collector_and_fills_gaps() {
        assert_eq!(Otlp::resolve(None, &env(&[])).expect("valid in the test"), None);
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,tenant=t"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ]);
        let o = Otlp::resolve(None, &e)
            .expect("valid in the test")
            .expect("valid in the test");
        assert_eq!(o.url, "http://otel:4318/v1/traces");
        assert_eq!(
            o.headers,
            vec![("api-key".into(), "a b".into()), ("tenant".into(), "t".into())]
        );
        assert_eq!(o.timeout, Duration::from_millis(2500));
        // The traces-only variable is used as it is.
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://otel:4318/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
        ]);
        assert_eq!(
            Otlp::resolve(None, &e)
                .expect("valid in the test")
                .expect("valid in the test")
                .url,
            "http://otel:4318/custom"
        );
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ]);
        let o = Otlp::resolve(None, &e)
            .expect("valid in the test")
            .expect("valid in the test");
        assert_eq!((o.url.as_str(), o.protocol), ("http://otel:4317", Protocol::Grpc));
        // The Configuration's headers win over the environment's.
        let spec = OtelSpec {
            endpoint_address: "c:4318".into(),
            is_secure: Some(false),
            headers: vec![("Tenant".into(), "mine".into())],
            ..Default::default()
        };
        let e = env(&[("OTEL_EXPORTER_OTLP_HEADERS", "tenant=theirs")]);
        let o = Otlp::resolve(Some(&spec), &e)
            .expect("valid in the test")
            .expect("valid in the test");
        assert_eq!(o.headers, vec![("Tenant".into(), "mine".into())]);
    }

    #[test]
    fn batching_follows_the_environment() {
        let s = Settings::new("app", &env(&[("OTEL_BSP_SCHEDULE_DELAY", "100")]));
        assert_eq!(s.delay, Duration::from_millis(100));
        assert_eq!((s.queue, s.batch), (2048, 512));
        assert!(!s.exports());
    }
}
