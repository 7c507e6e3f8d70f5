//! The one thing the injector asks the API server: its version, to decide
//! whether native sidecars are available (`--native-sidecar auto`).

use std::{path::Path, sync::Arc};

use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The minor version from a `/version` answer (`"minor": "33+"` → 33).
pub fn parse_minor(body: &[u8]) -> Result<u32, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("/version is not JSON: {e}"))?;
    let minor = v["minor"].as_str().ok_or("/version has no minor field")?;
    minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .map_err(|_| format!("/version minor {minor:?} is not a number"))
}

/// Asks the API server of the cluster this pod runs in for its minor version.
pub async fn in_cluster_minor_version() -> Result<u32, String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| "not running in a cluster")?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let dir = Path::new(SA_DIR);
    let token =
        std::fs::read_to_string(dir.join("token")).map_err(|e| format!("service account token: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    for cert in CertificateDer::pem_file_iter(dir.join("ca.crt")).map_err(|e| format!("cluster CA: {e}"))? {
        roots
            .add(cert.map_err(|e| format!("cluster CA: {e}"))?)
            .map_err(|e| format!("cluster CA: {e}"))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let req = http::Request::get(format!("https://{host}:{port}/version"))
        .header("authorization", format!("Bearer {}", token.trim()))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "API server did not answer /version within 10 s".to_string())?
        .map_err(|e| format!("GET /version: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("GET /version answered {status}"));
    }
    parse_minor(&body)
}

#[cfg(test)]
mod tests {
    use super::parse_minor;

    #[test]
    fn minor_versions() {
        assert_eq!(parse_minor(br#"{"major":"1","minor":"33"}"#), Ok(33));
        assert_eq!(parse_minor(br#"{"major":"1","minor":"29+"}"#), Ok(29));
        assert!(parse_minor(br#"{"major":"1"}"#).is_err());
        assert!(parse_minor(b"nope").is_err());
    }
}
