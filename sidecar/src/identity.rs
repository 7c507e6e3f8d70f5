//! This sidecar's workload identity: a key generated in memory, a
//! certificate for it signed by the control plane's certificate service in
//! exchange for the pod's service-account token, and its renewal.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use daprs_mtls::{Authorize, Identity, SpiffeId, tls};
use daprs_proto::sentry::{
    SignCertificateRequest, ca_client::CaClient, sign_certificate_request::TokenValidator,
};
use rustls::{RootCertStore, sign::CertifiedKey};

use crate::settings::ControlPlane;

/// The token mounted for every pod, used when the audience-bound one is missing.
const FALLBACK_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Attempts per request and their timeout (as Dapr's client).
const ATTEMPTS: u32 = 5;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The certificate, the anchors it chains to, and the SPIFFE ID it proves.
pub struct Svid {
    pub identity: Arc<Identity>,
    pub roots: Arc<RootCertStore>,
    pub id: SpiffeId,
    valid_until: SystemTime,
}

/// A fresh certificate and its expiry.
struct Issued {
    key: Arc<CertifiedKey>,
    id: SpiffeId,
    anchors: Vec<String>,
    valid_until: SystemTime,
}

/// The identity a control-plane server must prove: `dapr-sentry` for the
/// certificate service, `dapr-operator` for the operator API.
pub fn control_plane_id(cp: &ControlPlane, id: &str) -> Authorize {
    Authorize::OneOf(vec![SpiffeId::new(&cp.trust_domain, &cp.namespace, id)])
}

fn read_token(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                missing = %path.display(),
                "identity token not mounted; falling back to the service-account token"
            );
            std::fs::read_to_string(FALLBACK_TOKEN_FILE)
                .map(|t| t.trim().to_string())
                .map_err(|e| {
                    format!(
                        "no service-account token at {} or {FALLBACK_TOKEN_FILE}: {e}",
                        path.display()
                    )
                })
        }
        Err(e) => Err(format!("cannot read the identity token {}: {e}", path.display())),
    }
}

/// One certificate request, with retries.
async fn request(
    cp: &ControlPlane,
    roots: Arc<RootCertStore>,
    app_id: &str,
    namespace: &str,
) -> Result<Issued, String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| format!("key: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| format!("certificate request: {e}"))?;
    let token = read_token(&cp.token_file)?;
    let config = tls::client_config(roots, control_plane_id(cp, "dapr-sentry"), None)?;
    let channel = daprs_mtls::net::channel(&cp.sentry_address, Some(Arc::new(config)))?;
    let req = SignCertificateRequest {
        id: app_id.into(),
        token,
        trust_domain: String::new(),
        namespace: namespace.into(),
        certificate_signing_request: csr.into_bytes().into(),
        token_validator: TokenValidator::Kubernetes as i32,
        jwt_audiences: Vec::new(),
    };
    let mut client = CaClient::new(channel);
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let call = client.sign_certificate(req.clone());
        match tokio::time::timeout(ATTEMPT_TIMEOUT, call).await {
            Ok(Ok(res)) => {
                let res = res.into_inner();
                let chain = String::from_utf8(res.workload_certificate.to_vec())
                    .map_err(|_| "the certificate service sent a chain that is not PEM".to_string())?;
                let certified = tls::certified_key(&chain, &key.serialize_pem())?;
                let id = certified
                    .end_entity_cert()
                    .ok()
                    .and_then(|c| SpiffeId::of(c))
                    .ok_or("the issued certificate carries no SPIFFE ID")?;
                let valid_until = res
                    .valid_until
                    .and_then(|t| SystemTime::try_from(t).ok())
                    .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(3600));
                let anchors = res
                    .trust_chain_certificates
                    .into_iter()
                    .filter_map(|b| String::from_utf8(b.to_vec()).ok())
                    .collect();
                return Ok(Issued {
                    key: certified,
                    id,
                    anchors,
                    valid_until,
                });
            }
            // A refusal will not change on retry.
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::PermissionDenied
                        | tonic::Code::InvalidArgument
                        | tonic::Code::Unauthenticated
                ) =>
            {
                return Err(format!(
                    "the certificate service at {} refused: {}",
                    cp.sentry_address,
                    status.message()
                ));
            }
            Ok(Err(status)) => last = format!("{}: {}", status.code(), status.message()),
            Err(_) => last = format!("no answer within {ATTEMPT_TIMEOUT:?}"),
        }
        tracing::debug!(attempt, error = %last, "certificate request failed");
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Err(format!(
        "cannot obtain a certificate from {} after {ATTEMPTS} attempts: {last}",
        cp.sentry_address
    ))
}

impl Svid {
    /// Obtains the first certificate; start-up fails without it.
    pub async fn obtain(cp: &ControlPlane, app_id: &str, namespace: &str) -> Result<Self, String> {
        let roots = Arc::new(tls::roots(&cp.trust_anchors)?);
        let issued = request(cp, roots.clone(), app_id, namespace).await?;
        // The service's anchors are the current ones; keep the configured
        // ones too so a root rotation in progress does not split the mesh.
        let mut all = (*roots).clone();
        for pem in &issued.anchors {
            if let Ok(more) = tls::roots(pem) {
                all.roots.extend(more.roots);
            }
        }
        tracing::info!(id = %issued.id, "obtained workload certificate");
        Ok(Self {
            identity: Arc::new(Identity::new(issued.key)),
            roots: Arc::new(all),
            id: issued.id,
            valid_until: issued.valid_until,
        })
    }

    /// Renews the certificate when 70% of its life has passed, retrying
    /// every 10 s on failure, until the task is dropped.
    pub async fn renew(
        &self,
        cp: ControlPlane,
        app_id: String,
        namespace: String,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) {
        let mut valid_until = self.valid_until;
        loop {
            let left = valid_until.duration_since(SystemTime::now()).unwrap_or_default();
            // Never spin, whatever the clocks say.
            tokio::time::sleep(left.mul_f64(0.7).max(Duration::from_secs(10))).await;
            loop {
                match request(&cp, self.roots.clone(), &app_id, &namespace).await {
                    Ok(issued) => {
                        self.identity.replace(issued.key);
                        valid_until = issued.valid_until;
                        tracing::info!(id = %issued.id, "renewed workload certificate");
                        metrics.cert_renewal(None);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate renewal failed; retrying in 10s");
                        metrics.cert_renewal(Some("sign"));
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                }
            }
        }
    }
}
