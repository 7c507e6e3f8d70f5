//! Log lines as Dapr's log pipelines expect them: JSON with Dapr's fields,
//! one "API Called" line per call when asked, never a token, and no colour
//! codes in a file.

use super::harness::{Daprd, Spec, temp_dir};

fn lines(d: &Daprd) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&d.log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn called<'a>(lines: &'a [serde_json::Value], msg: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["msg"] == msg).collect()
}

#[tokio::test]
async fn json_lines_carry_dapr_fields_and_api_calls() {
    let home = temp_dir("json-logs");
    let d = Daprd::start(Spec {
        extra: vec!["--log-as-json".into(), "--enable-api-logging".into()],
        env: vec![("DAPR_API_TOKEN", "s3cret-token".into())],
        ..Spec::new("json-logs", &home)
    })
    .await;
    let auth = [("dapr-api-token", "s3cret-token"), ("user-agent", "logs-test/1")];
    let r = d.send("GET", "/v1.0/state/statestore/order-1", &auth, "").await;
    assert_eq!(r.status, 204);
    let mut grpc = d.grpc().await;
    let mut req = tonic::Request::new(daprs_proto::runtime::GetMetadataRequest::default());
    req.metadata_mut()
        .insert("dapr-api-token", "s3cret-token".parse().expect("metadata"));
    grpc.get_metadata(req).await.expect("GetMetadata");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let all = lines(&d);
    assert!(!all.is_empty());
    for l in &all {
        for key in ["time", "level", "msg", "scope", "app_id", "instance", "ver"] {
            assert!(l[key].is_string(), "{key} missing: {l}");
        }
        assert_eq!(l["type"], "log");
        assert_eq!(l["app_id"], "json-logs");
    }
    let http = called(&all, "HTTP API Called");
    let line = http
        .iter()
        .find(|l| l["method"] == "GET /v1.0/state/statestore/order-1")
        .unwrap_or_else(|| panic!("{http:?}"));
    assert_eq!(line["scope"], "dapr.runtime.http-info");
    assert_eq!(line["code"], 204);
    assert_eq!(line["useragent"], "logs-test/1");
    assert!(line["duration"].is_number());
    let grpc = called(&all, "gRPC API Called");
    let line = grpc
        .iter()
        .find(|l| l["method"] == "/dapr.proto.runtime.v1.Dapr/GetMetadata")
        .unwrap_or_else(|| panic!("{grpc:?}"));
    assert_eq!(line["scope"], "dapr.runtime.grpc.api-info");
    assert_eq!(line["code"], 0);
    let text = std::fs::read_to_string(&d.log).expect("log");
    assert!(!text.contains("s3cret-token"), "the token reached the log");
}

#[tokio::test]
async fn the_configuration_turns_api_logging_on_with_routes_instead_of_urls() {
    let home = temp_dir("api-logging");
    let config = home.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: logging\nspec:\n  logging:\n    apiLogging:\n      enabled: true\n      obfuscateURLs: true\n      omitHealthChecks: true\n",
    )
    .expect("config");
    let d = Daprd::start(Spec {
        extra: vec![
            "--log-as-json".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        ..Spec::new("api-logging", &home)
    })
    .await;
    assert_eq!(
        d.get("/v1.0/state/statestore/private-key")
            .await
            .expect("get")
            .status,
        204
    );
    assert_eq!(d.get("/v1.0/healthz").await.expect("health").status, 204);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let all = lines(&d);
    let http = called(&all, "HTTP API Called");
    assert!(
        http.iter().any(|l| l["method"]
            .as_str()
            .is_some_and(|m| m.starts_with("GET /v1.0/state/{"))),
        "{http:?}"
    );
    assert!(
        !http.iter().any(|l| l.to_string().contains("private-key")),
        "{http:?}"
    );
    assert!(
        !http
            .iter()
            .any(|l| l["method"].as_str().is_some_and(|m| m.contains("healthz"))),
        "{http:?}"
    );
}

#[tokio::test]
async fn plain_logs_in_a_file_have_no_colour_codes() {
    let home = temp_dir("plain-logs");
    let d = Daprd::start(Spec::new("plain-logs", &home)).await;
    let _ = d.get("/v1.0/healthz").await;
    let text = std::fs::read_to_string(&d.log).expect("log");
    assert!(text.contains("INFO") || text.contains("DEBUG"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file");
}
