//! PostgreSQL connection settings as Dapr's components take them: a
//! `connectionString` in keyword/value form (`host=db user=app
//! database=dapr pool_max_conns=8`) or URL form
//! (`postgres://app:pw@db:5432/dapr?sslmode=disable`), the keywords Dapr's
//! driver knows, and metadata fields (`host`, `port`, `database`, `user`,
//! `password`) that override the string. A keyword nobody knows is an
//! error that names it, rather than a setting silently dropped.

use std::{net::IpAddr, time::Duration};

use deadpool_postgres::{Manager, Pool};
use tokio_postgres::{
    Client, Connection, Socket,
    config::{SslMode, TargetSessionAttrs},
};

use crate::{
    Metadata, meta, parse_duration, percent_decode,
    pg_tls::{self, Check, Tls},
};

/// Everything needed to open connections.
pub struct Settings {
    /// The driver's configuration.
    pub config: tokio_postgres::Config,
    /// Largest number of pooled connections.
    pub max_conns: usize,
    /// Limit on connecting and on each operation.
    pub timeout: Duration,
    /// TLS as `sslmode` asks.
    pub tls: Tls,
}

/// The TLS keywords, gathered before the connector is built.
#[derive(Default)]
struct TlsWanted {
    check: Option<Check>,
    options: pg_tls::Options,
}

impl Settings {
    /// Opens one connection outside the pool (for `LISTEN`).
    pub async fn connect(
        &self,
    ) -> Result<(Client, Connection<Socket, pg_tls::Stream<Socket>>), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// Server parameters a connection string may set for the session (sent as
/// `options=-c name=value`).
const SESSION_PARAMS: &[&str] = &[
    "search_path",
    "timezone",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "client_encoding",
    "datestyle",
];

/// Pool tuning keywords of Dapr's driver that the pool here does not need.
const POOL_ONLY: &[&str] = &[
    "pool_min_conns",
    "pool_max_conn_lifetime",
    "pool_max_conn_lifetime_jitter",
    "pool_max_conn_idle_time",
    "pool_health_check_period",
];

/// Splits `key=value key2='quoted value'` into pairs, with libpq's quoting
/// (single quotes; backslash escapes a quote or backslash).
fn keyword_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!(
                "connectionString: {key:?} has no value (expected {key}=value)"
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!(
                            "connectionString: the quoted value of {key} is not closed"
                        ));
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(if c == '\\' {
                    chars.next();
                    chars.peek().copied().unwrap_or('\\')
                } else {
                    c
                });
                chars.next();
            }
        }
        out.push((key, value));
    }
}

/// The pairs of a `postgres://user:password@host:port,host2/db?k=v` URL.
fn url_pairs(url: &str) -> Result<Vec<(String, String)>, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("connectionString: a URL must start with postgres:// or postgresql://")?;
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, db) = main.split_once('/').unwrap_or((main, ""));
    let mut out = Vec::new();
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, pw) = userinfo
                .split_once(':')
                .map_or((userinfo, None), |(u, p)| (u, Some(p)));
            if !user.is_empty() {
                out.push(("user".into(), percent_decode(user)));
            }
            if let Some(pw) = pw {
                out.push(("password".into(), percent_decode(pw)));
            }
            hosts
        }
        None => authority,
    };
    let (mut names, mut ports) = (Vec::new(), Vec::new());
    for h in hosts.split(',').filter(|h| !h.is_empty()) {
        // `[::1]:5432`, `db:5432`, `db`.
        let (name, port) = match h.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6
                    .split_once(']')
                    .ok_or("connectionString: unclosed [ in the host")?;
                (addr, after.strip_prefix(':'))
            }
            None => h.rsplit_once(':').map_or((h, None), |(n, p)| (n, Some(p))),
        };
        names.push(percent_decode(name));
        ports.extend(port.map(str::to_string));
    }
    if !names.is_empty() {
        out.push(("host".into(), names.join(",")));
    }
    if !ports.is_empty() {
        out.push(("port".into(), ports.join(",")));
    }
    if !db.is_empty() {
        out.push(("dbname".into(), percent_decode(db)));
    }
    for p in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        out.push((percent_decode(k), percent_decode(v)));
    }
    Ok(out)
}

/// Applies one keyword to the driver configuration.
fn apply(
    s: &mut Settings,
    tls: &mut TlsWanted,
    options: &mut Vec<String>,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let c = &mut s.config;
    let bad = |what: &str| format!("connectionString: {key}={value:?} is not {what}");
    let seconds = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| bad("a number of seconds"))
    };
    match key {
        "host" => {
            for h in value.split(',') {
                c.host(h.trim());
            }
        }
        "hostaddr" => {
            for h in value.split(',') {
                c.hostaddr(h.trim().parse::<IpAddr>().map_err(|_| bad("an IP address"))?);
            }
        }
        "port" => {
            for p in value.split(',') {
                c.port(p.trim().parse().map_err(|_| bad("a port"))?);
            }
        }
        "user" => {
            c.user(value);
        }
        "password" => {
            c.password(value);
        }
        "dbname" | "database" => {
            c.dbname(value);
        }
        "application_name" => {
            c.application_name(value);
        }
        "options" => options.push(value.to_string()),
        "connect_timeout" => {
            let t = seconds(value)?;
            if !t.is_zero() {
                s.timeout = t;
            }
        }
        "sslmode" => {
            // libpq's `allow` (plain first, TLS if refused) is not in the
            // driver; `prefer` is the nearest and no weaker.
            let (mode, check) = match value {
                "disable" => (SslMode::Disable, None),
                "allow" | "prefer" => (SslMode::Prefer, Some(Check::Nothing)),
                "require" => (SslMode::Require, Some(Check::Require)),
                "verify-ca" => (SslMode::Require, Some(Check::Chain)),
                "verify-full" => (SslMode::Require, Some(Check::Full)),
                _ => {
                    return Err(bad(
                        "one of disable, allow, prefer, require, verify-ca, verify-full",
                    ));
                }
            };
            c.ssl_mode(mode);
            tls.check = check;
        }
        "sslrootcert" => tls.options.root_cert = Some(value.to_string()),
        "sslcert" => tls.options.cert = Some(value.to_string()),
        "sslkey" => tls.options.key = Some(value.to_string()),
        "sslsni" => tls.options.no_sni = value.trim() == "0",
        "sslpassword" => {
            return Err(
                "connectionString: sslpassword (an encrypted sslkey) is not supported; give an unencrypted key"
                    .into(),
            );
        }
        "target_session_attrs" => {
            c.target_session_attrs(match value {
                "any" => TargetSessionAttrs::Any,
                "read-write" => TargetSessionAttrs::ReadWrite,
                _ => return Err(bad("any or read-write")),
            });
        }
        "keepalives" => {
            c.keepalives(value.trim() != "0");
        }
        "keepalives_idle" => {
            c.keepalives_idle(seconds(value)?);
        }
        "tcp_user_timeout" => {
            let ms = value.trim().parse::<u64>().map_err(|_| bad("milliseconds"))?;
            c.tcp_user_timeout(Duration::from_millis(ms));
        }
        "pool_max_conns" => {
            s.max_conns = value
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("a positive number"))?;
        }
        k if POOL_ONLY.contains(&k) => {}
        k if SESSION_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
            options.push(format!("-c {k}={}", value.replace(' ', "\\ ")));
        }
        other => {
            return Err(format!(
                "connectionString: unknown keyword {other:?} (known: host, hostaddr, port, user, password, \
                 dbname/database, sslmode, connect_timeout, application_name, options, target_session_attrs, \
                 pool_max_conns, …)"
            ));
        }
    }
    Ok(())
}

/// Reads the connection settings from component metadata.
pub fn settings(metadata: &Metadata) -> Result<Settings, String> {
    let mut s = Settings {
        config: tokio_postgres::Config::new(),
        max_conns: 16,
        timeout: Duration::from_secs(20),
        tls: Tls::off(),
    };
    // libpq's default is `prefer`.
    let mut tls = TlsWanted {
        check: Some(Check::Nothing),
        ..TlsWanted::default()
    };
    let conn = meta(metadata, "connectionString").unwrap_or("");
    let given_parts = ["host", "hostaddr", "port", "database", "user", "password"]
        .iter()
        .any(|k| meta(metadata, k).is_some());
    if conn.trim().is_empty() && !given_parts {
        return Err("metadata connectionString is required (or host, port, user, database)".into());
    }
    let pairs = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        url_pairs(conn)?
    } else {
        keyword_pairs(conn)?
    };
    let mut options = Vec::new();
    for (k, v) in &pairs {
        apply(&mut s, &mut tls, &mut options, k, v)?;
    }
    // Individual metadata fields win over the string, as Dapr documents.
    for key in ["host", "hostaddr", "port", "database", "user", "password"] {
        if let Some(v) = meta(metadata, key) {
            apply(&mut s, &mut tls, &mut options, key, v)?;
        }
    }
    if !options.is_empty() {
        s.config.options(options.join(" "));
    }
    if let Some(check) = tls.check {
        s.tls = Tls::new(check, &tls.options).map_err(|e| format!("connectionString: {e}"))?;
    }
    if s.config.get_hosts().is_empty() && s.config.get_hostaddrs().is_empty() {
        s.config.host("localhost");
    }
    if let Some(t) = meta(metadata, "timeout").and_then(parse_duration).or_else(|| {
        meta(metadata, "timeoutInSeconds")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
    }) {
        s.timeout = t;
    }
    s.config.connect_timeout(s.timeout);
    if let Some(n) = meta(metadata, "maxConns")
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
    {
        s.max_conns = n;
    }
    Ok(s)
}

/// A pool for the server `s` names, and its first connection, made to
/// prove the server answers (and for the caller's set-up statements).
pub async fn pool(s: &Settings) -> Result<(Pool, deadpool_postgres::Client), String> {
    let pool = Pool::builder(Manager::new(s.config.clone(), s.tls.clone()))
        .max_size(s.max_conns)
        .build()
        .map_err(|e| e.to_string())?;
    let first = tokio::time::timeout(s.timeout, pool.get())
        .await
        .map_err(|_| format!("timed out connecting to PostgreSQL after {:?}", s.timeout))?
        .map_err(|e| format!("cannot connect to PostgreSQL: {}", causes(&e)))?;
    Ok((pool, first))
}

/// An error and its causes, so a TLS failure says why the handshake failed.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> Metadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn conn(s: &str) -> Result<Settings, String> {
        settings(&md(&[("connectionString", s)]))
    }

    #[test]
    fn keyword_value_strings_as_dapr_documents_them() {
        let s = conn(
            "host=localhost user=postgres password=example port=5432 connect_timeout=10 database=config",
        )
        .expect("valid");
        let c = &s.config;
        assert_eq!(c.get_user(), Some("postgres"));
        assert_eq!(c.get_password(), Some(&b"example"[..]));
        assert_eq!(c.get_dbname(), Some("config"));
        assert_eq!(c.get_ports(), [5432]);
        assert_eq!(s.timeout, Duration::from_secs(10));
        let s = conn("host = db dbname='my db' password='it\\'s' pool_max_conns=8 sslmode=disable")
            .expect("valid");
        assert_eq!(s.config.get_dbname(), Some("my db"));
        assert_eq!(s.config.get_password(), Some(&b"it's"[..]));
        assert_eq!(s.max_conns, 8);
    }

    #[test]
    fn url_strings() {
        let s = conn(
            "postgres://app:p%40ss@db.example:6432/orders?sslmode=prefer&pool_max_conns=4&application_name=x",
        )
        .expect("valid");
        let c = &s.config;
        assert_eq!(
            (c.get_user(), c.get_password()),
            (Some("app"), Some(&b"p@ss"[..]))
        );
        assert_eq!((c.get_dbname(), c.get_ports()), (Some("orders"), &[6432][..]));
        assert_eq!(s.max_conns, 4);
        assert!(conn("postgresql://[::1]:5432/db").is_ok());
    }

    #[test]
    fn unknown_keywords_and_bad_values_are_named() {
        let e = conn("host=db colour=blue").err().unwrap_or_default();
        assert!(e.contains("\"colour\""), "{e}");
        let e = conn("host=db port=high").err().unwrap_or_default();
        assert!(e.contains("port"), "{e}");
        let e = conn("host=db sslmode=verify-full sslrootcert=/nonexistent/root.crt")
            .err()
            .unwrap_or_default();
        assert!(e.contains("sslrootcert /nonexistent/root.crt"), "{e}");
        let e = conn("host=db sslmode=require sslcert=/a.crt")
            .err()
            .unwrap_or_default();
        assert!(e.contains("sslkey"), "{e}");
        let e = conn("host=db sslmode=verify").err().unwrap_or_default();
        assert!(e.contains("verify-full"), "{e}");
        assert!(conn("host=db password='open").is_err());
        assert!(settings(&md(&[])).is_err());
    }

    #[test]
    fn metadata_fields_override_the_string() {
        let s = settings(&md(&[
            ("connectionString", "host=a user=u database=d"),
            ("database", "other"),
            ("timeoutInSeconds", "3"),
            ("maxConns", "2"),
        ]))
        .expect("valid");
        assert_eq!(s.config.get_dbname(), Some("other"));
        assert_eq!((s.timeout, s.max_conns), (Duration::from_secs(3), 2));
        assert!(conn("search_path=app host=db").is_ok());
    }
}
