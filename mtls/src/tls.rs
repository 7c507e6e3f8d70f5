//! rustls configurations for mutual TLS between workloads: certificates must
//! chain to the trust anchors, and a server must also carry the SPIFFE ID
//! the client expects (DNS names play no part, as in Dapr).

use std::sync::{Arc, RwLock};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::{
        ResolvesClientCert,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};

use crate::SpiffeId;

/// The one crypto provider of the workspace.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store from PEM trust anchors (one or more certificates).
pub fn roots(pem: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let c = c.map_err(|e| format!("trust anchors: {e}"))?;
        roots.add(c).map_err(|e| format!("trust anchors: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the trust anchors hold no certificate".into());
    }
    Ok(roots)
}

/// A certificate chain and its key, ready for rustls.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate chain is empty".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("private key: {e}"))?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// This workload's certificate, replaced in place when it is renewed so
/// that every configuration built on it presents the new one.
#[derive(Debug)]
pub struct Identity {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Identity {
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(key),
        }
    }

    /// Swaps in a renewed certificate.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut c) = self.current.write() {
            *c = key;
        }
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Which server identities a client accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorize {
    /// Exactly one of these IDs.
    OneOf(Vec<SpiffeId>),
    /// A given app in a given namespace, in any trust domain (sidecars do
    /// not know the trust domain of the app they call).
    App { namespace: String, app_id: String },
}

impl Authorize {
    pub fn admits(&self, id: &SpiffeId) -> bool {
        match self {
            Self::OneOf(ids) => ids.contains(id),
            Self::App { namespace, app_id } => id.namespace == *namespace && id.app_id == *app_id,
        }
    }
}

impl std::fmt::Display for Authorize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OneOf(ids) => {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                write!(f, "{}", ids.join(" or "))
            }
            Self::App { namespace, app_id } => write!(f, "app {app_id} in namespace {namespace}"),
        }
    }
}

/// What a client checks of the server's certificate.
#[derive(Debug)]
enum Check {
    /// The chain against the trust anchors, then the SPIFFE ID.
    Spiffe {
        roots: Arc<RootCertStore>,
        authorize: Authorize,
    },
    /// Nothing beyond the handshake signature (see [`any_server_config`]).
    Presented,
}

#[derive(Debug)]
struct Verifier {
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Check::Spiffe { roots, authorize } = &self.check else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let Some(id) = SpiffeId::of(end_entity) else {
            return Err(rustls::Error::General(
                "the server's certificate carries no SPIFFE ID".into(),
            ));
        };
        if !authorize.admits(&id) {
            return Err(rustls::Error::General(format!(
                "the server is {id}, expected {authorize}"
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn client_builder(
    check: Check,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, String> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { check, algorithms })))
}

/// A client that trusts `roots`, accepts only servers `authorize` admits,
/// and presents `identity` when given. ALPN is h2 (gRPC).
pub fn client_config(
    roots: Arc<RootCertStore>,
    authorize: Authorize,
    identity: Option<Arc<Identity>>,
) -> Result<ClientConfig, String> {
    let builder = client_builder(Check::Spiffe { roots, authorize })?;
    let mut config = match identity {
        Some(id) => builder.with_client_cert_resolver(id),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A client that accepts the server's certificate as presented, for the
/// sidecar's own app (`--app-protocol https` and `grpcs`), as Dapr does: the
/// app sits beside the sidecar, often with a self-signed certificate, and
/// TLS there protects the bytes rather than proving who the app is. The
/// handshake signature is still verified, so the server must hold the key
/// of the certificate it shows.
pub fn any_server_config() -> Result<ClientConfig, String> {
    Ok(client_builder(Check::Presented)?.with_no_client_auth())
}

/// A server presenting what `cert` resolves; with `client_roots`, clients
/// must present a certificate chaining to them. ALPN is h2 (gRPC).
pub fn server_config(
    cert: Arc<dyn ResolvesServerCert>,
    client_roots: Option<Arc<RootCertStore>>,
) -> Result<ServerConfig, String> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("client verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
