//! The operator's own serving certificate, issued by its CA for the
//! control-plane identity and renewed when the CA changes or half its life
//! has passed. Sidecars verify it against the published trust anchors.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
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
    pub fn new(ca: CaState, trust_domain: &str, namespace: &str) -> Self {
        Self {
            ca,
            spiffe_id: format!("spiffe://{trust_domain}/ns/{namespace}/dapr-sentry"),
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
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(signed.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| e.to_string())?;
        Ok(Arc::new(CertifiedKey::new(chain, signer)))
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

/// TLS for the operator's servers. Without `client_roots` only the server
/// proves who it is (the certificate service: clients send a token); with
/// them, clients must present a certificate chaining to those anchors.
pub fn server_config(
    cert: Arc<SelfCert>,
    client_roots: Option<&str>,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(c.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
