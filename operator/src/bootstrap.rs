//! What to do with the stored CA material at start and on every re-read:
//! use it, create it (only when there is none at all), publish the anchors,
//! or refuse. Never replaces material that exists.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::ca::{Bundle, Ca, CaError};

/// Names of the Secret and ConfigMap, and their keys.
pub const TRUST_BUNDLE: &str = "dapr-trust-bundle";
pub const CA_CRT: &str = "ca.crt";
pub const ISSUER_CRT: &str = "issuer.crt";
pub const ISSUER_KEY: &str = "issuer.key";

/// The decision.
pub enum Bootstrap {
    /// Sign with this CA. `publish` is set when the ConfigMap lacks the
    /// anchors and they should be written there.
    Use { ca: Ca, publish: Option<String> },
    /// There was nothing: store `bundle` in the Secret and its `ca_crt` in the ConfigMap.
    Create { ca: Ca, bundle: Bundle },
    /// Do not sign. The message says what is wrong and what to do.
    Refuse(String),
}

fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Option<String> {
    data.get(key)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Decides from the Secret's data (None when there is no Secret) and the
/// ConfigMap's `ca.crt` (None when absent).
pub fn decide(
    secret: Option<&BTreeMap<String, Vec<u8>>>,
    published: Option<&str>,
    trust_domain: &str,
    namespace: &str,
    now: OffsetDateTime,
) -> Bootstrap {
    let empty = BTreeMap::new();
    let data = secret.unwrap_or(&empty);
    let parts = [CA_CRT, ISSUER_CRT, ISSUER_KEY].map(|k| text(data, k));
    let published = published.filter(|p| !p.trim().is_empty());
    match parts {
        [None, None, None] => {
            if published.is_some() {
                return Bootstrap::Refuse(format!(
                    "the ConfigMap {TRUST_BUNDLE} publishes trust anchors but the Secret {TRUST_BUNDLE} holds no CA; \
                     restore the Secret (ca.crt, issuer.crt, issuer.key), or delete the ConfigMap's ca.crt to let a new CA be created"
                ));
            }
            match Ca::generate(trust_domain, namespace, now) {
                Ok((ca, bundle)) => Bootstrap::Create { ca, bundle },
                Err(e) => Bootstrap::Refuse(e.to_string()),
            }
        }
        [Some(ca_crt), Some(issuer_crt), Some(issuer_key)] => {
            let bundle = Bundle {
                ca_crt: ca_crt.clone(),
                issuer_crt,
                issuer_key,
            };
            let (check_against, publish) = match published {
                Some(p) => (p.to_string(), None),
                None => (ca_crt.clone(), Some(ca_crt)),
            };
            match Ca::load(&bundle, Some(&check_against), now) {
                Ok(ca) => Bootstrap::Use { ca, publish },
                Err(CaError::Material(m) | CaError::BadRequest(m) | CaError::Internal(m)) => {
                    Bootstrap::Refuse(m)
                }
            }
        }
        present => {
            let missing: Vec<&str> = [CA_CRT, ISSUER_CRT, ISSUER_KEY]
                .iter()
                .zip(&present)
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| *k)
                .collect();
            Bootstrap::Refuse(format!(
                "the Secret {TRUST_BUNDLE} is incomplete: {} missing; supply all of ca.crt, issuer.crt and issuer.key, or none to let a new CA be created",
                missing.join(" and ")
            ))
        }
    }
}
