//! The CA, checked with an independent verifier (the openssl command).

use std::{process::Command, time::Duration};

use daprs_operator::ca::{Bundle, Ca, CaError};
use time::OffsetDateTime;

const DAY: Duration = Duration::from_secs(24 * 3600);
const SKEW: Duration = Duration::from_secs(15 * 60);

fn csr() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn signed_certificates_verify_and_carry_the_spiffe_id() {
    let now = OffsetDateTime::now_utc();
    let (ca, bundle) = Ca::generate("cluster.local", "dapr-system", now).expect("generate");
    let signed = ca
        .sign(
            csr().as_bytes(),
            "spiffe://public/ns/prod/orders",
            &[],
            DAY,
            SKEW,
            now,
        )
        .expect("sign");
    assert_eq!(signed.not_after.unix_timestamp(), (now + DAY).unix_timestamp());

    let dir = std::env::temp_dir().join(format!("daprs-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = |f: &str| dir.join(f).display().to_string();
    std::fs::write(path("root.pem"), &ca.trust_anchors).expect("write");
    std::fs::write(path("chain.pem"), &signed.chain_pem).expect("write");
    // The chain is leaf then issuer; split it for openssl.
    let blocks: Vec<&str> = signed
        .chain_pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    assert_eq!(blocks.len(), 2, "leaf and issuer, root excluded");
    std::fs::write(path("leaf.pem"), blocks[0]).expect("write");
    std::fs::write(path("issuer.pem"), blocks[1]).expect("write");

    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        &path("root.pem"),
        "-untrusted",
        &path("issuer.pem"),
        "-purpose",
        "sslclient",
        &path("leaf.pem"),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        &path("root.pem"),
        "-untrusted",
        &path("issuer.pem"),
        "-purpose",
        "sslserver",
        &path("leaf.pem"),
    ]);
    assert!(ok, "{out}");
    let (_, text) = openssl(&["x509", "-in", &path("leaf.pem"), "-noout", "-text"]);
    assert!(text.contains("URI:spiffe://public/ns/prod/orders"), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication") && text.contains("TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("prime256v1") || text.contains("P-256"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    // NotBefore is backdated by the allowed skew.
    let (_, start) = openssl(&["x509", "-in", &path("leaf.pem"), "-noout", "-startdate"]);
    let expected = now - SKEW;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][usize::from(u8::from(expected.month())) - 1];
    assert!(
        start.contains(month) && start.contains(&format!("{:02}:{:02}", expected.hour(), expected.minute())),
        "{start}"
    );
    // The stored bundle loads back to the same CA.
    let again = Ca::load(&bundle, Some(&bundle.ca_crt), now).expect("reload");
    assert_eq!(again.trust_anchors, ca.trust_anchors);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inconsistent_material_is_refused_with_the_reason() {
    let now = OffsetDateTime::now_utc();
    let (_, a) = Ca::generate("cluster.local", "dapr-system", now).expect("a");
    let (_, b) = Ca::generate("cluster.local", "dapr-system", now).expect("b");
    let err = |r: Result<Ca, CaError>| match r {
        Err(CaError::Material(m)) => m,
        Err(other) => panic!("wrong error {other:?}"),
        Ok(_) => panic!("accepted"),
    };

    let m = err(Ca::load(&a, Some(&b.ca_crt), now));
    assert!(m.contains("ConfigMap"), "{m}");
    let m = err(Ca::load(&a, None, now));
    assert!(m.contains("ConfigMap dapr-trust-bundle has no ca.crt"), "{m}");
    let crossed = Bundle {
        issuer_crt: b.issuer_crt.clone(),
        issuer_key: b.issuer_key.clone(),
        ..a.clone()
    };
    let m = err(Ca::load(&crossed, Some(&a.ca_crt), now));
    assert!(m.contains("does not chain"), "{m}");
    let wrong_key = Bundle {
        issuer_key: b.issuer_key.clone(),
        ..a.clone()
    };
    let m = err(Ca::load(&wrong_key, Some(&a.ca_crt), now));
    assert!(m.contains("does not belong"), "{m}");
    let not_pem = Bundle {
        ca_crt: "hello".into(),
        ..a.clone()
    };
    assert!(err(Ca::load(&not_pem, Some("hello"), now)).contains("ca.crt"));
    let expired = err(Ca::load(
        &a,
        Some(&a.ca_crt),
        now + Duration::from_secs(400 * 24 * 3600),
    ));
    assert!(expired.contains("expired"), "{expired}");
    // The key never shows up in debug output.
    assert!(!format!("{a:?}").contains("PRIVATE KEY"));
}

#[test]
fn during_a_root_rotation_both_roots_are_published() {
    let now = OffsetDateTime::now_utc();
    let (_, old) = Ca::generate("cluster.local", "dapr-system", now).expect("old");
    let (_, new) = Ca::generate("cluster.local", "dapr-system", now).expect("new");
    let both = format!("{}{}", old.ca_crt, new.ca_crt);
    let ca = Ca::load(&new, Some(&both), now).expect("new issuer, both roots published");
    assert!(ca.trust_anchors.contains(new.ca_crt.trim()));
    // The Secret may itself carry both roots while the issuer is from the new one.
    let secret_both = Bundle {
        ca_crt: both.clone(),
        ..new.clone()
    };
    Ca::load(&secret_both, Some(&both), now).expect("both in both");
}

#[test]
fn bad_requests_are_told_why() {
    let now = OffsetDateTime::now_utc();
    let (ca, _) = Ca::generate("cluster.local", "dapr-system", now).expect("ca");
    let bad = |csr: &[u8]| match ca.sign(csr, "spiffe://public/ns/a/b", &[], DAY, SKEW, now) {
        Err(CaError::BadRequest(m)) => m,
        Err(other) => panic!("wrong error {other:?}"),
        Ok(_) => panic!("signed"),
    };
    assert!(bad(b"not a csr").contains("CERTIFICATE REQUEST"));
    assert!(bad(&[0xff, 0xfe]).contains("PEM"));
    // A request whose signature does not match its key.
    let good = csr();
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    let n = lines.len();
    let victim = &mut lines[n - 2];
    let flipped: String = victim.chars().rev().collect();
    *victim = flipped;
    assert!(bad(lines.join("\n").as_bytes()).contains("CSR"));
}

#[test]
fn expiry_is_warned_30_days_ahead() {
    let now = OffsetDateTime::now_utc();
    let (ca, _) = Ca::generate("cluster.local", "dapr-system", now).expect("ca");
    assert!(ca.expiry_warnings(now).is_empty());
    let late = now + Duration::from_secs(340 * 24 * 3600);
    let w = ca.expiry_warnings(late);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("issuer"));
}

mod bootstrap {
    use std::collections::BTreeMap;

    use daprs_operator::bootstrap::{Bootstrap, decide};
    use time::OffsetDateTime;

    fn secret(bundle: &daprs_operator::ca::Bundle) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("ca.crt".to_string(), bundle.ca_crt.clone().into_bytes()),
            ("issuer.crt".to_string(), bundle.issuer_crt.clone().into_bytes()),
            ("issuer.key".to_string(), bundle.issuer_key.clone().into_bytes()),
        ])
    }

    fn refused(b: Bootstrap) -> String {
        match b {
            Bootstrap::Refuse(m) => m,
            _ => panic!("expected a refusal"),
        }
    }

    #[test]
    fn creates_only_when_nothing_exists_and_never_replaces() {
        let now = OffsetDateTime::now_utc();
        let Bootstrap::Create { bundle, .. } = decide(None, None, "cluster.local", "dapr-system", now) else {
            panic!("expected a new CA");
        };
        // Stored: used as is, nothing published twice.
        let stored = secret(&bundle);
        match decide(
            Some(&stored),
            Some(&bundle.ca_crt),
            "cluster.local",
            "dapr-system",
            now,
        ) {
            Bootstrap::Use { publish, .. } => assert!(publish.is_none()),
            _ => panic!("expected use"),
        }
        // A brought-in Secret without a ConfigMap: use it and publish its roots.
        match decide(Some(&stored), None, "cluster.local", "dapr-system", now) {
            Bootstrap::Use { publish, .. } => assert_eq!(publish.as_deref(), Some(bundle.ca_crt.as_str())),
            _ => panic!("expected use"),
        }
        // Disagreement is refused, not repaired.
        let Bootstrap::Create { bundle: other, .. } = decide(None, None, "cluster.local", "dapr-system", now)
        else {
            panic!("second CA");
        };
        let m = refused(decide(
            Some(&stored),
            Some(&other.ca_crt),
            "cluster.local",
            "dapr-system",
            now,
        ));
        assert!(m.contains("ConfigMap"), "{m}");
        // Published anchors without a Secret: refused.
        let m = refused(decide(
            None,
            Some(&bundle.ca_crt),
            "cluster.local",
            "dapr-system",
            now,
        ));
        assert!(m.contains("holds no CA"), "{m}");
        // Partial Secret: refused, naming what is missing.
        let mut partial = stored.clone();
        partial.remove("issuer.key");
        let m = refused(decide(
            Some(&partial),
            Some(&bundle.ca_crt),
            "cluster.local",
            "dapr-system",
            now,
        ));
        assert!(m.contains("issuer.key missing"), "{m}");
    }
}

#[test]
fn metrics_show_readiness_and_expiry() {
    use std::sync::{Arc, RwLock};
    let not_ready: daprs_operator::sentry::CaState = Arc::new(RwLock::new(Err("no CA".into())));
    assert!(daprs_operator::serve::metrics_text(&not_ready).contains("daprs_operator_ca_ready 0"));
    let now = OffsetDateTime::now_utc();
    let (ca, _) = Ca::generate("cluster.local", "dapr-system", now).expect("ca");
    let expiry = ca.issuer_not_after.unix_timestamp();
    let ready: daprs_operator::sentry::CaState = Arc::new(RwLock::new(Ok(Arc::new(ca))));
    let text = daprs_operator::serve::metrics_text(&ready);
    assert!(text.contains("daprs_operator_ca_ready 1"), "{text}");
    assert!(
        text.contains(&format!("dapr_sentry_issuercert_expiry_timestamp {expiry}")),
        "{text}"
    );
    assert!(text.contains("daprs_operator_ca_expiring_soon 0"), "{text}");
}
