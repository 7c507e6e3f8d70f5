//! `serve` end to end on loopback: the CA comes up in an empty (fake)
//! cluster, health turns ready, and the certificate service, the operator
//! API and the conversion webhook answer over TLS with a certificate that
//! chains to the published anchors.

#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/settings.rs"]
mod settings;

use std::{sync::Arc, time::Duration};

use daprs_operator::serve::{ServeSettings, run};
use daprs_proto::sentry::{SignCertificateRequest, ca_client::CaClient};
use fake_api::FakeApi;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::Value;

const ANCHORS: &str = "/api/v1/namespaces/dapr-system/configmaps/dapr-trust-bundle";

/// Starts `serve` on free loopback ports against an empty fake cluster.
fn start() -> (FakeApi, ServeSettings) {
    let api = FakeApi::default();
    let settings = settings::serve_settings();
    tokio::spawn(run(api.client(), settings.clone()));
    (api, settings)
}

/// Waits up to 10 s for `pick` to find something at `path` in the fake cluster.
async fn wait_for<T>(api: &FakeApi, path: &str, pick: impl Fn(&Value) -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = api.get(path).as_ref().and_then(&pick) {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "no CA");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn published_anchors(api: &FakeApi) -> String {
    wait_for(api, ANCHORS, |m| m["data"]["ca.crt"].as_str().map(str::to_string)).await
}

/// Waits up to 10 s for a server to listen on `addr` (it starts once its
/// certificate is issued, which a loaded machine can take a while to do).
async fn listening(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => return tcp,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{addr}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client trusting only `anchors`, presenting `client` (PEM chain and key) when given.
fn client_tls(anchors: &str, client: Option<(String, String)>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(anchors.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
    let mut tls = match client {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("chain"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
    };
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tls
}

/// A gRPC channel to `addr` over TLS, checking the server is `name`.
async fn channel(
    addr: std::net::SocketAddr,
    name: &'static str,
    anchors: &str,
    client: Option<(String, String)>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(anchors, client, &[b"h2"])));
    tonic::transport::Endpoint::from_static("http://operator")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = ServerName::try_from(name).map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(connector.connect(name, tcp).await?))
            }
        }))
        .await
}

#[tokio::test]
async fn the_certificate_service_comes_up_over_tls() {
    let (api, s) = start();

    // Ready once the CA exists.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ok = async {
            let mut stream = tokio::net::TcpStream::connect(s.health_addr).await.ok()?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut buf = String::new();
            stream.read_to_string(&mut buf).await.ok()?;
            Some(buf.starts_with("HTTP/1.1 200"))
        }
        .await
        .unwrap_or(false);
        if ok {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let anchors = api
        .get(ANCHORS)
        .and_then(|m| m["data"]["ca.crt"].as_str().map(str::to_string))
        .expect("anchors published");

    // A client that trusts only the published anchors and checks the name.
    let channel = channel(s.sentry_addr, "dapr-sentry.dapr-system.svc", &anchors, None)
        .await
        .expect("TLS connection verified against the anchors");
    let err = CaClient::new(channel)
        .sign_certificate(SignCertificateRequest::default())
        .await
        .expect_err("an empty request is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("app-id"), "{}", err.message());
}

#[tokio::test]
async fn the_operator_api_requires_a_workload_certificate() {
    use base64::Engine;
    use daprs_proto::operator::{ListComponentsRequest, operator_client::OperatorClient};
    let (api, s) = start();
    // Wait for the CA, then sign client certificates with the same material.
    let secret = wait_for(
        &api,
        "/api/v1/namespaces/dapr-system/secrets/dapr-trust-bundle",
        |s| Some(s.clone()),
    )
    .await;
    let field = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(secret["data"][k].as_str().expect("field"))
                .expect("b64"),
        )
        .expect("utf8")
    };
    let bundle = daprs_operator::ca::Bundle {
        ca_crt: field("ca.crt"),
        issuer_crt: field("issuer.crt"),
        issuer_key: field("issuer.key"),
    };
    let ca = daprs_operator::ca::Ca::load(&bundle, Some(&bundle.ca_crt), time::OffsetDateTime::now_utc())
        .expect("ca");
    let workload = |id: &str| {
        let (signed, key) = ca
            .issue_own(
                id,
                &[],
                Duration::from_secs(3600),
                Duration::from_secs(60),
                time::OffsetDateTime::now_utc(),
            )
            .expect("sign");
        (signed.chain_pem, key.serialize_pem())
    };
    drop(listening(s.api_addr).await);

    let api_name = "dapr-api.dapr-system.svc";
    let orders = channel(
        s.api_addr,
        api_name,
        &ca.trust_anchors,
        Some(workload("spiffe://public/ns/prod/orders")),
    )
    .await
    .expect("mTLS");
    let listed = OperatorClient::new(orders.clone())
        .list_components(ListComponentsRequest {
            namespace: "prod".into(),
        })
        .await
        .expect("listed");
    assert!(listed.into_inner().components.is_empty());
    let e = OperatorClient::new(orders)
        .list_components(ListComponentsRequest {
            namespace: "staging".into(),
        })
        .await
        .expect_err("another namespace");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);

    // Without a client certificate the handshake itself is refused.
    let refused = match channel(s.api_addr, api_name, &ca.trust_anchors, None).await {
        Err(_) => true,
        Ok(ch) => OperatorClient::new(ch)
            .list_components(ListComponentsRequest {
                namespace: "prod".into(),
            })
            .await
            .is_err(),
    };
    assert!(refused, "no client certificate, no answer");
}

#[tokio::test]
async fn the_conversion_webhook_converts_subscriptions_over_https() {
    use http_body_util::BodyExt;
    let (api, s) = start();
    let anchors = published_anchors(&api).await;
    let tls = client_tls(&anchors, None, &[]);
    let tcp = listening(s.webhook_addr).await;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            ServerName::try_from("dapr-webhook.dapr-system.svc").expect("name"),
            tcp,
        )
        .await
        .expect("TLS checked against the anchors");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("http");
    tokio::spawn(conn);
    let review = serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
        "request": {"uid": "r1", "desiredAPIVersion": "dapr.io/v2alpha1", "objects": [
            {"apiVersion": "dapr.io/v1alpha1", "kind": "Subscription", "metadata": {"name": "order"},
             "spec": {"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}}]}});
    let req = http::Request::post("/convert")
        .header("host", "dapr-webhook.dapr-system.svc")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(review.to_string())))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(answer["response"]["uid"], "r1");
    assert_eq!(
        answer["response"]["convertedObjects"][0]["spec"]["routes"]["default"],
        "/orders"
    );
}
