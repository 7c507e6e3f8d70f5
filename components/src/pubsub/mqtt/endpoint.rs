//! The broker's address, credentials and TLS client, from `url` and the
//! certificate metadata.

use std::sync::Arc;

use crate::{Metadata, meta};

/// Where the broker is, as `url` says.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub credentials: Option<(String, String)>,
}

pub(super) fn parse_url(url: &str) -> std::result::Result<Endpoint, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("url {url:?} needs a scheme: tcp://host:1883 or ssl://host:8883"))?;
    let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "tcp" | "mqtt" => (false, "1883"),
        "ssl" | "tls" | "tcps" | "mqtts" => (true, "8883"),
        other => {
            return Err(format!(
                "url {url:?}: scheme {other}:// is not supported; use tcp:// or ssl://"
            ));
        }
    };
    let rest = rest.trim_end_matches('/');
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                Some((crate::percent_decode(user), crate::percent_decode(password))),
                hostport,
            )
        }
        None => (None, rest),
    };
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("url {url:?}: unclosed ["))?;
            (addr, after.strip_prefix(':').unwrap_or(default_port))
        }
        None => rest.rsplit_once(':').unwrap_or((rest, default_port)),
    };
    let port = port
        .parse()
        .map_err(|_| format!("url {url:?} has an invalid port"))?;
    Ok(Endpoint {
        host: host.to_string(),
        port,
        tls,
        credentials,
    })
}

/// The TLS client of an `ssl://` url.
pub(super) fn tls_config(metadata: &Metadata) -> std::result::Result<Arc<rustls::ClientConfig>, String> {
    let roots = match meta(metadata, "caCert") {
        Some(pem) => crate::https::roots(pem.as_bytes())?,
        None => crate::https::native_roots(),
    };
    let client = crate::meta_pair(metadata, "clientCert", "clientKey")?
        .map(|(c, k)| (c.as_bytes().to_vec(), k.as_bytes().to_vec()));
    Ok(Arc::new(crate::https::config(roots, client)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str, port: u16, tls: bool, credentials: Option<(&str, &str)>) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            tls,
            credentials: credentials.map(|(u, p)| (u.into(), p.into())),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("tcp://localhost:1883"),
            Ok(endpoint("localhost", 1883, false, None))
        );
        assert_eq!(
            parse_url("tcp://user:p%40ss@10.0.0.1"),
            Ok(endpoint("10.0.0.1", 1883, false, Some(("user", "p@ss"))))
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1884/"),
            Ok(endpoint("::1", 1884, false, None))
        );
        assert_eq!(
            parse_url("ssl://broker.example"),
            Ok(endpoint("broker.example", 8883, true, None))
        );
        assert_eq!(
            parse_url("tls://u@[::1]:9883"),
            Ok(endpoint("::1", 9883, true, Some(("u", ""))))
        );
        for bad in ["tcp://h:port", "ws://h:80", "broker:1883", "ssl://[::1:8883"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
