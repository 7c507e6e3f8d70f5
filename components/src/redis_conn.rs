//! The connection settings every Redis component shares, with Dapr's
//! metadata names: `redisHost`, `redisPassword`, `redisUsername`, `redisDB`,
//! and TLS by `enableTLS` (the server's certificate checked against the
//! system's roots unless `insecureSkipTLSVerify`), with a client
//! certificate from `clientCert` and `clientKey` (PEM).

use ::redis::{ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates};

use crate::{Metadata, meta};

fn flag(metadata: &Metadata, key: &str) -> bool {
    meta(metadata, key).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A client for the server the metadata names, and its `host:port` for messages.
pub fn client(metadata: &Metadata) -> Result<(::redis::Client, String), String> {
    let host = meta(metadata, "redisHost").ok_or("metadata redisHost is required (host:port)")?;
    if meta(metadata, "redisType").is_some_and(|v| v.eq_ignore_ascii_case("cluster")) {
        return Err("redisType cluster is not supported; use node".into());
    }
    // Sentinel addresses in redisHost would otherwise be sent data commands.
    if flag(metadata, "failover") {
        return Err(
            "failover (Redis Sentinel, with sentinelMasterName) is not supported; point redisHost at the master"
                .into(),
        );
    }
    let (h, p) = host.rsplit_once(':').unwrap_or((host, "6379"));
    let port: u16 = p
        .parse()
        .map_err(|_| format!("redisHost {host:?} has an invalid port"))?;
    let db: i64 = match meta(metadata, "redisDB") {
        Some(v) => v.parse().map_err(|_| format!("redisDB {v:?} is not a number"))?,
        None => 0,
    };
    let mut settings = RedisConnectionInfo::default().set_db(db);
    if let Some(pw) = meta(metadata, "redisPassword") {
        settings = settings.set_password(pw);
    }
    if let Some(user) = meta(metadata, "redisUsername") {
        settings = settings.set_username(user);
    }
    let name = h.trim_matches(|c| c == '[' || c == ']').to_string();
    let tls = flag(metadata, "enableTLS");
    let addr = if tls {
        ConnectionAddr::TcpTls {
            host: name,
            port,
            insecure: flag(metadata, "insecureSkipTLSVerify"),
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(name, port)
    };
    let info = addr
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_redis_settings(settings);
    let client_tls = match crate::meta_pair(metadata, "clientCert", "clientKey")? {
        None => None,
        Some((cert, key)) if tls => Some(ClientTlsConfig {
            client_cert: cert.as_bytes().to_vec(),
            client_key: key.as_bytes().to_vec(),
        }),
        Some(_) => return Err("clientCert and clientKey need enableTLS: true".into()),
    };
    let client = if tls {
        ::redis::Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls,
                root_cert: None,
            },
        )
    } else {
        ::redis::Client::open(info)
    }
    .map_err(|e| e.to_string())?;
    Ok((client, host.to_string()))
}

/// Connection settings that fail a first connection within a second (so a
/// component whose server is down says so at once) and, once connected,
/// reconnect a few times with a short pause before a command fails.
pub fn manager_config() -> ::redis::aio::ConnectionManagerConfig {
    ::redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_min_delay(std::time::Duration::from_millis(100))
        .set_max_delay(std::time::Duration::from_secs(1))
}

/// A client and a managed connection to the server the metadata names,
/// made once to prove the server answers.
pub async fn connect(
    metadata: &Metadata,
) -> Result<(::redis::Client, ::redis::aio::ConnectionManager), String> {
    let (client, host) = client(metadata)?;
    let conn = ::redis::aio::ConnectionManager::new_with_config(client.clone(), manager_config())
        .await
        .map_err(|e| format!("cannot connect to {host}: {e}"))?;
    Ok((client, conn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(pairs: &[(&str, &str)]) -> String {
        let md: Metadata = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        client(&md).err().unwrap_or_default()
    }

    #[test]
    fn settings_it_cannot_honour_are_refused_by_name() {
        let host = ("redisHost", "127.0.0.1:6379");
        for (extra, named) in [
            (("failover", "true"), "failover"),
            (("redisType", "cluster"), "cluster"),
            (("clientCert", "PEM"), "clientKey"),
            (("redisDB", "first"), "redisDB"),
        ] {
            let e = refused(&[host, extra]);
            assert!(e.contains(named), "{extra:?}: {e}");
        }
        let e = refused(&[host, ("clientCert", "PEM"), ("clientKey", "PEM")]);
        assert!(e.contains("enableTLS"), "{e}");
        assert!(refused(&[("redisHost", "127.0.0.1:port")]).contains("port"));
    }
}
