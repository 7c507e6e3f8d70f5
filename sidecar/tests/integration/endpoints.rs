//! Invoking services outside Dapr: full URLs and HTTPEndpoint resources.

use super::{
    apps::{http_app, https_app_with_ca},
    harness::{Daprd, Spec, resources, start_fails, temp_dir},
};

#[tokio::test]
async fn full_urls_reach_a_plain_http_service() {
    let home = temp_dir("ext-url");
    let port = http_app().await;
    let d = Daprd::start(Spec::new("ext-caller", &home)).await;
    for target in [
        format!("http%3A%2F%2F127.0.0.1%3A{port}"),
        format!("http://127.0.0.1:{port}"),
    ] {
        let r = d
            .send(
                "PUT",
                &format!("/v1.0/invoke/{target}/method/orders/7?expand=1"),
                &[("x-custom", "42"), ("content-type", "text/plain")],
                "hello",
            )
            .await;
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        assert_eq!(r.header("x-app"), Some("echo"));
        let v = r.json();
        assert_eq!(v["method"], "PUT");
        assert_eq!(v["path"], "/orders/7");
        assert_eq!(v["query"], "expand=1");
        assert_eq!(v["body"], "hello");
        assert_eq!(v["headers"]["x-custom"], "42");
    }
    // The app's errors come back as they are.
    let r = d
        .send(
            "GET",
            &format!("/v1.0/invoke/http://127.0.0.1:{port}/method/status/418"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, 418);
    // Nobody listening: a Dapr error, not a hang.
    let dead = super::harness::free_port();
    let r = d
        .send(
            "GET",
            &format!("/v1.0/invoke/http://127.0.0.1:{dead}/method/x"),
            &[],
            "",
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_DIRECT_INVOKE"));
}

#[tokio::test]
async fn http_endpoints_add_their_headers_base_path_and_tls() {
    let home = temp_dir("ext-endpoint");
    let port = http_app().await;
    let (tls_port, ca) = https_app_with_ca().await;
    let indented: String = ca.lines().map(|l| format!("        {l}\n")).collect();
    let yaml = format!(
        r#"apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata:
  name: billing
spec:
  baseUrl: http://127.0.0.1:{port}/api/
  headers:
  - name: x-api-key
    value: inline-key
  - name: x-from-env
    envRef: EXT_TEST_HEADER
---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata:
  name: secure
spec:
  baseUrl: https://127.0.0.1:{tls_port}
  clientTLS:
    rootCA:
      value: |
{indented}---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata:
  name: elsewhere
spec:
  baseUrl: http://127.0.0.1:{port}
scopes:
- some-other-app
"#
    );
    let res = resources(&home, &yaml);
    let d = Daprd::start(Spec {
        resources: Some(&res),
        env: vec![("EXT_TEST_HEADER", "from-env".into())],
        ..Spec::new("ext-endpoint-caller", &home)
    })
    .await;
    let r = d
        .send(
            "POST",
            "/v1.0/invoke/billing/method/invoices/new",
            &[("x-api-key", "caller's")],
            "{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["path"], "/api/invoices/new");
    assert_eq!(
        v["headers"]["x-api-key"], "inline-key",
        "the endpoint's header wins"
    );
    assert_eq!(v["headers"]["x-from-env"], "from-env");
    // HTTPS, trusting the endpoint's own CA.
    let r = d.send("GET", "/v1.0/invoke/secure/method/hello", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/hello");
    // Another app's endpoint is not this app's: the name is taken as an app-id.
    let r = d.send("GET", "/v1.0/invoke/elsewhere/method/x", &[], "").await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_DIRECT_INVOKE"));
}

#[test]
fn an_invalid_endpoint_stops_start_up() {
    let home = temp_dir("ext-invalid");
    let dir = resources(
        &home,
        "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: bad\nspec:\n  baseUrl: ftp://example\n",
    );
    let all = start_fails(
        &home,
        &[
            "--app-id",
            "ext-bad",
            "--resources-path",
            &dir.display().to_string(),
        ],
    );
    assert!(
        all.contains("HTTPEndpoint bad") && all.contains("baseUrl"),
        "{all}"
    );
}
