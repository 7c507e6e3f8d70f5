//! `pubsub.jetstream` with decentralised authentication (`jwt` and
//! `seedKey`), against a NATS server of its own in operator mode: the
//! operator, account and user, and the JWTs that bind them, are made here.

use std::{process::Command, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use daprs_components::registry::Built;
use nkeys::KeyPair;
use serde_json::{Value, json};

use super::pubsub::{Seen, message, subscribe, until};
use super::restart::{Broker, Cleanup, data_dir, free_port, quiet};
use crate::{try_build, unique};

/// A JWT of `nats` claims about `subject`, signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &KeyPair, name: &str, nats: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = json!({
        "jti": unique("jti"),
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "sub": subject.public_key(),
        "name": name,
        "nats": nats,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A server that trusts one operator, which signed a system account (JetStream
/// needs one) and one account with JetStream; returns the server, its URL, a
/// user's JWT and that user's key.
fn server() -> (Broker, Cleanup, String, String, KeyPair) {
    let (operator, account, user) = (
        KeyPair::new_operator(),
        KeyPair::new_account(),
        KeyPair::new_user(),
    );
    let operator_jwt = jwt(
        &operator,
        &operator,
        "op",
        json!({"type": "operator", "version": 2}),
    );
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
        "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt = jwt(
        &operator,
        &account,
        "app",
        json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let system = KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system,
        "SYS",
        json!({"type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &account,
        &user,
        "daprd",
        json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
    );
    let (port, dir) = (free_port(), data_dir("daprs-nats-jwt"));
    let sys = system.public_key();
    let conf = dir.join("nats.conf");
    let text = format!(
        "listen: 127.0.0.1:{port}\noperator: \"{operator_jwt}\"\nsystem_account: {sys}\n\
         resolver: MEMORY\nresolver_preload: {{ {sys}: \"{system_jwt}\", {}: \"{account_jwt}\" }}\n\
         jetstream: {{ store_dir: \"{}\" }}\n",
        account.public_key(),
        dir.display()
    );
    std::fs::write(&conf, text).expect("config");
    let broker = Broker::new(port, move || {
        quiet(Command::new("nats-server").arg("-c").arg(&conf))
    });
    (
        broker,
        Cleanup(dir),
        format!("nats://127.0.0.1:{port}"),
        user_jwt,
        user,
    )
}

#[tokio::test]
async fn jwt_and_seed_authenticate() {
    let (broker, _cleanup, url, user_jwt, user) = server();
    broker.ready().await;
    let seed = user.seed().expect("seed");
    let stream = unique("jwt");
    let meta = |jwt: &str, seed: &str| {
        vec![
            ("natsURL", url.clone()),
            ("streamName", stream.clone()),
            ("jwt", jwt.to_string()),
            ("seedKey", seed.to_string()),
        ]
    };
    let open = |pairs: Vec<(&'static str, String)>| async move {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        try_build("pubsub.jetstream", &pairs, &Default::default()).await
    };

    // The user's JWT and seed: a message goes round.
    let Ok(Built::PubSub(p)) = open(meta(&user_jwt, &seed)).await else {
        panic!("jwt and seedKey did not connect");
    };
    let topic = unique("signed");
    let seen = Seen::default();
    let _sub = subscribe(p.as_ref(), &topic, "g", seen.handler(0)).await;
    p.publish(message(&topic, "hello")).await.expect("publish");
    until("the delivery", || seen.all() == ["hello"]).await;

    // Another user's seed cannot sign for this JWT: the server refuses it.
    let stranger = KeyPair::new_user().seed().expect("seed");
    let refused = tokio::time::timeout(Duration::from_secs(20), open(meta(&user_jwt, &stranger)))
        .await
        .expect("an answer");
    assert!(refused.is_err(), "a wrong seed was accepted");

    // Half of the pair, or a seed that is not one, is refused by name.
    let e = open(vec![("natsURL", url.clone()), ("jwt", user_jwt.clone())])
        .await
        .err()
        .unwrap_or_default();
    assert!(e.contains("seedKey"), "{e}");
    let e = open(meta(&user_jwt, "not-a-seed"))
        .await
        .err()
        .unwrap_or_default();
    assert!(e.contains("seedKey is not a NATS user seed"), "{e}");
    assert!(!e.contains("not-a-seed"), "the seed is echoed: {e}");
}
