//! Log lines as Dapr writes them. `--log-as-json` gives one JSON object per
//! line with Dapr's fields (`time`, `level`, `msg`, `scope`, `type`,
//! `app_id`, `instance`, `ver`, then the event's own), so pipelines built
//! for Dapr's logs parse these; plain text has no colour codes unless it
//! goes to a terminal.

use std::{fmt, io::IsTerminal};

use serde_json::{Map, Value};
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

use crate::flags::{Flags, LogLevel};

/// Installs the process's logger.
pub fn init(flags: &Flags) {
    let level = match flags.log_level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    // Our crates log at the chosen level, API call lines at info (as Dapr's
    // API loggers do); libraries only warn.
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "warn,daprd={level},daprs_sidecar={level},daprs_components={level},{}=info",
        crate::observe::API_LOG
    ));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if flags.log_as_json {
        builder
            .event_format(DaprJson {
                app_id: flags.app_id.clone(),
                instance: instance(),
            })
            .init();
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .init();
    }
}

/// The host name, as Dapr's `instance` field carries it.
fn instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Formats events as Dapr's JSON log lines.
pub struct DaprJson {
    pub app_id: String,
    pub instance: String,
}

/// Collects an event's fields; `message` becomes `msg`.
struct Fields(Map<String, Value>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }
}

impl Fields {
    fn insert(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            "message" => "msg",
            n => n,
        };
        self.0.insert(name.to_string(), value);
    }
}

impl<S, N> FormatEvent<S, N> for DaprJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            _ => "debug",
        };
        let mut line = Map::new();
        line.insert("time".into(), Value::String(rfc3339_now()));
        line.insert("level".into(), Value::String(level.into()));
        line.insert(
            "msg".into(),
            fields
                .0
                .remove("msg")
                .unwrap_or_else(|| Value::String(String::new())),
        );
        let scope = fields
            .0
            .remove("scope")
            .unwrap_or_else(|| Value::String(scope_of(meta.target()).into()));
        line.insert("scope".into(), scope);
        line.insert("type".into(), Value::String("log".into()));
        line.insert("app_id".into(), Value::String(self.app_id.clone()));
        line.insert("instance".into(), Value::String(self.instance.clone()));
        line.insert("ver".into(), Value::String(env!("CARGO_PKG_VERSION").into()));
        for (k, v) in fields.0 {
            line.entry(k).or_insert(v);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Dapr's logger scope for a module path.
fn scope_of(target: &str) -> &'static str {
    if target.starts_with("daprs_components") {
        "dapr.contrib"
    } else {
        "dapr.runtime"
    }
}

/// Now as RFC 3339 with nanoseconds, in UTC.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs(), now.subsec_nanos())
}

fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(
            rfc3339(1_796_090_400, 123_000_000),
            "2026-12-01T02:00:00.123000000Z"
        );
    }
}
