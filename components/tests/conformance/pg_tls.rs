//! TLS to PostgreSQL as `sslmode` asks, against this machine's server
//! (which serves TLS with its own certificate, as Debian sets it up).

use std::sync::Arc;

use daprs_components::{
    registry::Built,
    state::{Concurrency, SetRequest, StateStore},
};

use crate::{try_build, unique};

/// A plain connection, for asking the server about its sessions.
async fn admin() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=test", tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    client
}

/// The server's certificate file: it is its own root.
async fn server_certificate(admin: &tokio_postgres::Client) -> String {
    let row = admin
        .query_one(
            "SELECT current_setting('ssl'), current_setting('ssl_cert_file')",
            &[],
        )
        .await
        .expect("settings");
    let (ssl, file): (String, String) = (row.get(0), row.get(1));
    assert_eq!(ssl, "on", "the PostgreSQL server here must serve TLS");
    // Relative paths are in the data directory.
    if file.starts_with('/') {
        return file;
    }
    let dir: String = admin
        .query_one("SELECT current_setting('data_directory')", &[])
        .await
        .expect("data directory")
        .get(0);
    format!("{dir}/{file}")
}

/// Opens a state store named by `app` (its `application_name`) with
/// `extra` keywords, and writes one key so a connection is open; the store
/// is returned to keep it open.
async fn state_store(app: &str, extra: &str) -> Result<Arc<dyn StateStore>, String> {
    let conn = format!("host=127.0.0.1 user=postgres dbname=test application_name={app} {extra}");
    match try_build(
        "state.postgresql",
        &[("connectionString", &conn), ("tableName", "daprs_conf_state_tls")],
        &Default::default(),
    )
    .await?
    {
        Built::State(s) => {
            let req = SetRequest {
                key: unique("tls"),
                value: bytes::Bytes::from_static(b"1"),
                etag: None,
                concurrency: Concurrency::LastWrite,
                ttl: None,
            };
            s.set(req).await.map_err(|e| e.to_string())?;
            Ok(s)
        }
        _ => Err("not a state store".into()),
    }
}

/// The error opening a store that must not open.
async fn refused(app: &str, extra: &str) -> String {
    match state_store(app, extra).await {
        Ok(_) => panic!("{extra}: the store opened"),
        Err(e) => e,
    }
}

/// Whether the sessions of `app` are encrypted, as the server sees them.
async fn encrypted(admin: &tokio_postgres::Client, app: &str) -> Vec<bool> {
    admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .expect("pg_stat_ssl")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn sslmode_decides_encryption_and_what_is_checked() {
    let admin = admin().await;
    let root = server_certificate(&admin).await;

    // libpq's default is prefer: encrypted when the server offers it.
    for (extra, want) in [
        ("", true),
        ("sslmode=prefer", true),
        ("sslmode=require", true),
        (&*format!("sslmode=verify-ca sslrootcert={root}"), true),
        ("sslmode=disable", false),
    ] {
        let app = unique("tls").replace('-', "_");
        let _open = state_store(&app, extra)
            .await
            .unwrap_or_else(|e| panic!("{extra}: {e}"));
        let seen = encrypted(&admin, &app).await;
        assert!(!seen.is_empty(), "{extra}: no session of {app}");
        assert!(seen.iter().all(|&s| s == want), "{extra}: encrypted {seen:?}");
    }

    // The certificate names a host, not 127.0.0.1: verify-full refuses.
    let e = refused("tls_full", &format!("sslmode=verify-full sslrootcert={root}")).await;
    assert!(
        e.contains("cannot connect") && e.to_lowercase().contains("certificate"),
        "{e}"
    );

    // A root that did not sign the server's certificate (a public CA's)
    // is refused by verify-ca, and by require (a root turns on the chain
    // check).
    let bundle = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").expect("system CA bundle");
    let end = "-----END CERTIFICATE-----";
    let first = &bundle[..bundle.find(end).expect("a certificate") + end.len()];
    let other = std::env::temp_dir().join(format!("{}.pem", unique("other-root")));
    std::fs::write(&other, first).expect("write root");
    for mode in ["verify-ca", "require"] {
        let e = refused(
            "tls_other",
            &format!("sslmode={mode} sslrootcert={}", other.display()),
        )
        .await;
        assert!(e.contains("UnknownIssuer"), "{mode}: {e}");
    }
    let _ = std::fs::remove_file(other);

    // Checking without a root is a configuration error, said at start.
    let e = refused("tls_none", "sslmode=verify-full").await;
    assert!(e.contains("sslrootcert"), "{e}");
}
