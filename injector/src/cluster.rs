//! The one thing the injector asks the API server: its version, to decide
//! whether native sidecars are available (`--native-sidecar auto`). The
//! client comes from the in-cluster service account or, outside a cluster,
//! the current kubeconfig context.

/// The minor version number from `/version` (`"33+"` → 33).
pub fn parse_minor(minor: &str) -> Result<u32, String> {
    minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .map_err(|_| format!("/version minor {minor:?} is not a number"))
}

/// Asks the API server behind `client` for its minor version.
pub async fn minor_version(client: &kube::Client) -> Result<u32, String> {
    let info = client
        .apiserver_version()
        .await
        .map_err(|e| format!("GET /version: {e}"))?;
    parse_minor(&info.minor)
}

/// The same, with a client built from the environment.
pub async fn detect_minor_version() -> Result<u32, String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes credentials (in-cluster or kubeconfig): {e}"))?;
    minor_version(&client).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_versions() {
        assert_eq!(parse_minor("33"), Ok(33));
        assert_eq!(parse_minor("29+"), Ok(29));
        assert!(parse_minor("").is_err());
        assert!(parse_minor("x").is_err());
    }

    /// A client whose "API server" answers every request with `status` and `body`.
    fn fake(status: u16, body: &'static str) -> kube::Client {
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| async move {
            assert_eq!(req.uri().path(), "/version");
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(body.as_bytes().to_vec()))
        });
        kube::Client::new(svc, "default")
    }

    #[tokio::test]
    async fn version_from_the_api_server() {
        let c = fake(
            200,
            r#"{"major":"1","minor":"31+","gitVersion":"v1.31.2-eks-1","gitCommit":"x","gitTreeState":"clean","buildDate":"2024-10-01T00:00:00Z","goVersion":"go1.22","compiler":"gc","platform":"linux/amd64"}"#,
        );
        assert_eq!(minor_version(&c).await, Ok(31));
        let c = fake(
            403,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"forbidden","reason":"Forbidden","code":403}"#,
        );
        let err = minor_version(&c).await.expect_err("forbidden");
        assert!(err.contains("forbidden"), "{err}");
    }
}
