//! RabbitMQ over TLS (`amqps://`): the server checked against `caCert` (or
//! the system's roots, which do not know the test's CA), and a client
//! certificate that logs in by SASL EXTERNAL (`saslExternal` for the
//! pub/sub, `externalSasl` for the binding). The test runs its own node
//! with a TLS listener only.

use std::{sync::Arc, time::Duration};

use daprs_components::{bindings::Request, pubsub::PubSub, registry::Built};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::{
    pubsub::{Seen, message, subscribe, until},
    restart::{Broker, Cleanup, data_dir, free_port, rabbitmq_node},
};
use crate::{try_build, unique};

/// A CA, the server's certificate for 127.0.0.1, and a client certificate
/// for the user `guest`, all PEM.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "daprs test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca.pem(),
        server: leaf(vec!["127.0.0.1".into(), "localhost".into()], "localhost"),
        client: leaf(vec![], "guest"),
    }
}

/// A node whose only listener is TLS on `port`, with EXTERNAL enabled and
/// the user taken from a client certificate's common name.
async fn tls_node(pki: &Pki) -> (Broker, Cleanup, u16) {
    let (port, dir) = (free_port(), data_dir("daprs-rabbit-tls"));
    for (name, pem) in [
        ("ca.pem", &pki.ca),
        ("server.pem", &pki.server.0),
        ("server.key", &pki.server.1),
    ] {
        std::fs::write(dir.join(name), pem).expect("certificate");
    }
    let path = |name: &str| dir.join(name).display().to_string();
    let conf = format!(
        "listeners.tcp = none\nlisteners.ssl.1 = 127.0.0.1:{port}\nloopback_users = none\n\
         ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
         ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = false\n\
         auth_mechanisms.1 = PLAIN\nauth_mechanisms.2 = AMQPLAIN\nauth_mechanisms.3 = EXTERNAL\n\
         ssl_cert_login_from = common_name\n",
        path("ca.pem"),
        path("server.pem"),
        path("server.key")
    );
    let broker = rabbitmq_node(&dir, port, &conf, "rabbitmq_auth_mechanism_ssl");
    broker.ready().await;
    (broker, Cleanup(dir), port)
}

async fn pubsub(md: &[(&str, &str)]) -> Result<Arc<dyn PubSub>, String> {
    match try_build("pubsub.rabbitmq", md, &Default::default()).await? {
        Built::PubSub(p) => Ok(p),
        _ => Err("not a pub/sub".into()),
    }
}

/// Builds, retrying while the node finishes starting (the port opens first).
async fn pubsub_when_up(md: &[(&str, &str)]) -> Arc<dyn PubSub> {
    let mut last = String::new();
    for _ in 0..120 {
        match pubsub(md).await {
            Ok(p) => return p,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("pubsub.rabbitmq over TLS: {last}");
}

async fn round_trip(p: &dyn PubSub) {
    let (topic, seen) = (unique("tls"), Seen::default());
    let _sub = subscribe(p, &topic, &unique("g"), seen.handler(0)).await;
    p.publish(message(&topic, "over tls")).await.expect("publish");
    until("the message over TLS", || seen.all() == ["over tls"]).await;
}

#[tokio::test]
async fn rabbitmq_over_tls_with_a_ca_and_a_client_certificate() {
    let pki = pki();
    let (_broker, _cleanup, port) = tls_node(&pki).await;
    let url = format!("amqps://guest:guest@127.0.0.1:{port}");

    // The server's certificate is checked against caCert.
    let plain = pubsub_when_up(&[("connectionString", &url), ("caCert", &pki.ca)]).await;
    round_trip(&*plain).await;

    // Without caCert the system's roots are used, and they do not know the CA.
    let err = pubsub(&[("connectionString", &url)])
        .await
        .err()
        .unwrap_or_default();
    assert!(err.to_lowercase().contains("cert"), "{err}");

    // A client certificate logs in as its common name, with no password.
    let bare = format!("amqps://127.0.0.1:{port}");
    let (cert, key) = (&pki.client.0, &pki.client.1);
    let external = [
        ("connectionString", bare.as_str()),
        ("caCert", pki.ca.as_str()),
        ("clientCert", cert.as_str()),
        ("clientKey", key.as_str()),
        ("saslExternal", "true"),
    ];
    round_trip(&*pubsub(&external).await.expect("SASL EXTERNAL")).await;

    // The binding reads the same settings, with its own name for EXTERNAL.
    let queue = unique("tls-q");
    let binding = [
        ("host", bare.as_str()),
        ("queueName", queue.as_str()),
        ("caCert", pki.ca.as_str()),
        ("clientCert", cert.as_str()),
        ("clientKey", key.as_str()),
        ("externalSasl", "true"),
        ("direction", "output"),
    ];
    let Built::Binding(b) = try_build("bindings.rabbitmq", &binding, &Default::default())
        .await
        .expect("bindings.rabbitmq over TLS")
    else {
        panic!("not a binding");
    };
    b.invoke(Request {
        operation: "create".into(),
        data: bytes::Bytes::from_static(b"to the queue"),
        metadata: Default::default(),
    })
    .await
    .expect("create over TLS");
}

#[tokio::test]
async fn tls_settings_without_amqps_are_refused_clearly() {
    let cases: [&[(&str, &str)]; 2] = [
        &[("connectionString", "amqp://127.0.0.1:1"), ("caCert", "PEM")],
        &[
            ("connectionString", "amqps://127.0.0.1:1"),
            ("saslExternal", "true"),
        ],
    ];
    for (md, named) in cases.iter().zip(["amqps://", "clientCert"]) {
        let err = pubsub(md).await.err().unwrap_or_default();
        assert!(err.contains(named), "{md:?}: {err}");
    }
}
