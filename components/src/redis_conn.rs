//! The connection settings every Redis component shares, with Dapr's
//! metadata names: `redisHost`, `redisPassword`, `redisUsername`, `redisDB`.

use ::redis::{IntoConnectionInfo, RedisConnectionInfo};

use crate::{Metadata, meta};

/// A client for the server the metadata names, and its `host:port` for messages.
pub fn client(metadata: &Metadata) -> Result<(::redis::Client, String), String> {
    let host = meta(metadata, "redisHost").ok_or("metadata redisHost is required (host:port)")?;
    if meta(metadata, "enableTLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err("enableTLS is not supported by this build's Redis client".into());
    }
    if meta(metadata, "redisType").is_some_and(|v| v.eq_ignore_ascii_case("cluster")) {
        return Err("redisType cluster is not supported; use node".into());
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
    let info = (h.trim_matches(|c| c == '[' || c == ']').to_string(), port)
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_redis_settings(settings);
    let client = ::redis::Client::open(info).map_err(|e| e.to_string())?;
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
