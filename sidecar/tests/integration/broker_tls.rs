//! Components reaching their servers over TLS and with credentials: Redis
//! (`enableTLS`), MQTT (`ssl://`, user and password in the url) and NATS
//! (`tls://`), each server started here from this machine's binaries with
//! certificates from a CA of the test's own. daprd trusts that CA through
//! `SSL_CERT_FILE`, as a container does with a mounted bundle; MQTT also
//! through `caCert`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::json;

use super::{
    harness::{Daprd, Spec, free_port, free_ports, resources, start_fails_with, temp_dir},
    pubsub::{numbers, publish_numbered, subscribed, subscriber},
};

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// as PEM files in `dir`.
struct Pki {
    dir: PathBuf,
    ca: String,
    client_cert: String,
    client_key: String,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "daprs test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let issue = |names: Vec<String>| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(names.clone()).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, names[0].clone());
            let cert = params.signed_by(&key, &issuer).expect("certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = issue(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = issue(vec!["daprd".into()]);
        for (name, pem) in [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", server_cert),
            ("server.key", server_key),
            ("client.pem", client_cert.clone()),
            ("client.key", client_key.clone()),
        ] {
            std::fs::write(dir.join(name), pem).expect("write PEM");
        }
        Self {
            dir: dir.to_path_buf(),
            ca: ca_cert.pem(),
            client_cert,
            client_key,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// A server process, stopped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and waits until it accepts connections on `port`.
async fn serve(cmd: &mut Command, port: u16) -> Server {
    let mut server = Server(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server"),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return server;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = server.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("{cmd:?} exited with {status}: {err}");
        }
        assert!(tokio::time::Instant::now() < deadline, "{cmd:?} did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A component file of one component.
fn component(name: &str, kind: &str, metadata: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\nspec:\n  type: {kind}\n  version: v1\n  metadata:\n"
    );
    for (k, v) in metadata {
        // Block scalars keep PEM line breaks.
        let value = if v.contains('\n') {
            format!(
                "|\n{}",
                v.lines().map(|l| format!("      {l}\n")).collect::<String>()
            )
        } else {
            format!("'{v}'\n")
        };
        yaml.push_str(&format!("  - name: {k}\n    value: {value}"));
    }
    yaml
}

/// A sidecar trusting the test CA, with one component.
async fn sidecar(home: &Path, pki: &Pki, yaml: &str, app_port: Option<u16>) -> Daprd {
    let res = resources(home, yaml);
    let mut spec = Spec::new("tls-app", home);
    spec.resources = Some(&res);
    spec.app_port = app_port;
    spec.env = vec![("SSL_CERT_FILE", pki.path("ca.pem"))];
    Daprd::start(spec).await
}

/// Runs daprd with one component, trusting the test CA when `trust`
/// names it, and expects it to refuse to start; returns what it said.
fn refused(home: &Path, yaml: &str, trust: Option<&Pki>) -> String {
    let res = resources(home, yaml).display().to_string();
    let [http, grpc, metrics] = free_ports().map(|p| p.to_string());
    let env: Vec<(&str, String)> = trust
        .map(|pki| ("SSL_CERT_FILE", pki.path("ca.pem")))
        .into_iter()
        .collect();
    start_fails_with(
        home,
        &[
            "--app-id",
            "tls-refused",
            "--resources-path",
            &res,
            "--dapr-http-port",
            &http,
            "--dapr-grpc-port",
            &grpc,
            "--metrics-port",
            &metrics,
        ],
        &env,
    )
}

/// Publishes three events through `d` and waits for the app to get them.
async fn round_trip(d: &Daprd, inbox: &super::pubsub::Inbox, topic: &str) {
    subscribed(d, 1).await;
    publish_numbered(d, topic, 3).await;
    assert_eq!(numbers(&inbox.wait("/in", 3).await), [0, 1, 2]);
}

#[tokio::test]
async fn redis_over_tls_with_a_client_certificate() {
    let home = temp_dir("tls-redis");
    let pki = Pki::new(&home);
    let port = free_port();
    let _redis = serve(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--tls-cert-file", &pki.path("server.pem")])
            .args(["--tls-key-file", &pki.path("server.key")])
            .args(["--tls-ca-cert-file", &pki.path("ca.pem")])
            .args(["--tls-auth-clients", "yes", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&home),
        port,
    )
    .await;
    let host = format!("127.0.0.1:{port}");
    let yaml = |extra: &[(&str, &str)]| {
        let mut md = vec![("redisHost", host.as_str()), ("enableTLS", "true")];
        md.extend_from_slice(extra);
        component("store", "state.redis", &md)
    };
    let client = [
        ("clientCert", pki.client_cert.as_str()),
        ("clientKey", pki.client_key.as_str()),
    ];
    let d = sidecar(&home, &pki, &yaml(&client), None).await;
    let r = d
        .send(
            "POST",
            "/v1.0/state/store",
            &[("content-type", "application/json")],
            json!([{"key": "k", "value": {"over": "tls"}}]).to_string(),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = d.get("/v1.0/state/store/k").await.expect("get");
    assert_eq!(r.json(), json!({"over": "tls"}));

    // The server's certificate is checked: without the CA, daprd says why.
    let log = refused(&home, &yaml(&client), None);
    assert!(log.contains("store") && log.contains("UnknownIssuer"), "{log}");
    // ... unless told not to check it.
    let mut insecure = client.to_vec();
    insecure.push(("insecureSkipTLSVerify", "true"));
    let res = resources(&home, &yaml(&insecure));
    let mut spec = Spec::new("tls-app", &home);
    spec.resources = Some(&res);
    let unchecked = Daprd::start(spec).await;
    let r = unchecked.get("/v1.0/state/store/k").await.expect("get");
    assert_eq!(r.json(), json!({"over": "tls"}));
    // The server asks for a client certificate.
    let log = refused(&home, &yaml(&[]), Some(&pki));
    assert!(log.contains("store"), "{log}");
}

#[tokio::test]
async fn mqtt_over_tls_and_with_a_password() {
    let home = temp_dir("tls-mqtt");
    let pki = Pki::new(&home);
    let [tls_port, plain_port] = free_ports();
    let passwords = home.join("passwords");
    let made = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["daprd", "s3cret"])
        .status()
        .expect("mosquitto_passwd");
    assert!(made.success());
    let conf = home.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings true\npersistence false\n\
             listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             require_certificate true\nallow_anonymous true\n\
             listener {plain_port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n",
            ca = pki.path("ca.pem"),
            cert = pki.path("server.pem"),
            key = pki.path("server.key"),
            pw = passwords.display(),
        ),
    )
    .expect("write mosquitto.conf");
    let _broker = serve(Command::new("mosquitto").arg("-c").arg(&conf), tls_port).await;

    let topic = format!("tls-{}", free_port());
    let subs = json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in"}]);
    let tls_url = format!("ssl://127.0.0.1:{tls_port}");
    let with_ca = [
        ("url", tls_url.as_str()),
        ("consumerID", "tls-app"),
        ("caCert", pki.ca.as_str()),
        ("clientCert", pki.client_cert.as_str()),
        ("clientKey", pki.client_key.as_str()),
    ];
    let (inbox, app_port) = subscriber(subs.clone()).await;
    let d = sidecar(
        &home,
        &pki,
        &component("pubsub", "pubsub.mqtt3", &with_ca),
        Some(app_port),
    )
    .await;
    round_trip(&d, &inbox, &topic).await;
    drop(d);

    // A broker that wants a client certificate gets none: refused.
    let log = refused(&home, &component("pubsub", "pubsub.mqtt3", &with_ca[..3]), None);
    assert!(log.contains("pubsub") && log.contains("cannot connect"), "{log}");
    // A CA that did not sign the broker's certificate: refused.
    let other = Pki::new(&temp_dir("tls-mqtt-other"));
    let mut wrong_ca = with_ca.to_vec();
    wrong_ca[2] = ("caCert", other.ca.as_str());
    let log = refused(&home, &component("pubsub", "pubsub.mqtt3", &wrong_ca), None);
    assert!(log.contains("invalid peer certificate"), "{log}");

    // User and password from the url, on the listener that asks for them.
    let (inbox, app_port) = subscriber(subs).await;
    let url = format!("tcp://daprd:s3cret@127.0.0.1:{plain_port}");
    let md = [("url", url.as_str()), ("consumerID", "pw-app")];
    let d = sidecar(
        &home,
        &pki,
        &component("pubsub", "pubsub.mqtt3", &md),
        Some(app_port),
    )
    .await;
    round_trip(&d, &inbox, &topic).await;
    let url = format!("tcp://daprd:wrong@127.0.0.1:{plain_port}");
    let log = refused(
        &home,
        &component("pubsub", "pubsub.mqtt3", &[("url", url.as_str())]),
        None,
    );
    assert!(log.contains("cannot connect"), "{log}");
}

#[tokio::test]
async fn jetstream_over_tls_with_a_client_certificate_and_a_password() {
    let home = temp_dir("tls-nats");
    let pki = Pki::new(&home);
    let port = free_port();
    let store = home.join("jetstream");
    let _nats = serve(
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["--tls", "--tlsverify"])
            .args(["--tlscert", &pki.path("server.pem")])
            .args(["--tlskey", &pki.path("server.key")])
            .args(["--tlscacert", &pki.path("ca.pem")])
            .args(["--user", "daprd", "--pass", "s3cret", "-js", "-sd"])
            .arg(&store),
        port,
    )
    .await;
    let topic = format!("tls-{}", free_port());
    let url = format!("tls://daprd:s3cret@127.0.0.1:{port}");
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let md = [
        ("natsURL", url.as_str()),
        ("tls_client_cert", cert.as_str()),
        ("tls_client_key", key.as_str()),
    ];
    let (inbox, app_port) =
        subscriber(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in"}])).await;
    let d = sidecar(
        &home,
        &pki,
        &component("pubsub", "pubsub.jetstream", &md),
        Some(app_port),
    )
    .await;
    round_trip(&d, &inbox, &topic).await;
    drop(d);

    // Not trusting the CA, or without a client certificate: refused.
    let log = refused(&home, &component("pubsub", "pubsub.jetstream", &md), None);
    assert!(log.contains("pubsub") && log.contains("cannot connect"), "{log}");
    let log = refused(
        &home,
        &component("pubsub", "pubsub.jetstream", &md[..1]),
        Some(&pki),
    );
    assert!(log.contains("cannot connect"), "{log}");
}
