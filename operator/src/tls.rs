//! The operator's own serving certificate, issued by its CA for the
//! control-plane identity and renewed when the CA changes or half its life
//! has passed. Sidecars verify it against the published trust anchors.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use time::OffsetDateTime;

use crate::{ca::Ca, sentry::CaState};

/// Lifetime of the operator's own certificate.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// Issues and caches the serving certificate.
pub struct SelfCert {
    ca: CaState,
    spiffe_id: String,
    dns: Vec<String>,
    cached: Mutex<Option<(String, OffsetDateTime, Arc<CertifiedKey>)>>,
}

impl std::fmt::Debug for SelfCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfCert")
            .field("spiffe_id", &self.spiffe_id)
            .finish_non_exhaustive()
    }
}

impl SelfCert {
    /// A certificate for the control-plane identity `id` (`dapr-sentry`,
    /// `dapr-operator`): the SPIFFE ID sidecars check, and the in-cluster
    /// DNS names of the Services in front of the operator.
    pub fn new(ca: CaState, trust_domain: &str, namespace: &str, id: &str) -> Self {
        Self {
            ca,
            spiffe_id: daprs_mtls::SpiffeId::new(trust_domain, namespace, id).to_string(),
            dns: vec![
                format!("dapr-sentry.{namespace}.svc"),
                format!("dapr-api.{namespace}.svc"),
                format!("daprs-operator.{namespace}.svc"),
                format!("dapr-webhook.{namespace}.svc"),
            ],
            cached: Mutex::new(None),
        }
    }

    fn issue(&self, ca: &Ca) -> Result<Arc<CertifiedKey>, String> {
        let (signed, key) = ca
            .issue_own(
                &self.spiffe_id,
                &self.dns,
                TTL,
                Duration::from_secs(900),
                OffsetDateTime::now_utc(),
            )
            .map_err(|e| e.to_string())?;
        daprs_mtls::tls::certified_key(&signed.chain_pem, &key.serialize_pem())
    }

    /// The current certificate, issuing a new one when needed.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        let ca = crate::sentry::current(&self.ca).ok()?;
        let mut cached = self.cached.lock().ok()?;
        let now = OffsetDateTime::now_utc();
        if let Some((anchors, renew_at, key)) = &*cached
            && *anchors == ca.trust_anchors
            && now < *renew_at
        {
            return Some(key.clone());
        }
        match self.issue(&ca) {
            Ok(key) => {
                *cached = Some((ca.trust_anchors.clone(), now + TTL / 2, key.clone()));
                Some(key)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot issue the operator's serving certificate");
                None
            }
        }
    }
}

impl ResolvesServerCert for SelfCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}
