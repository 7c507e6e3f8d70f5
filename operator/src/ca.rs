//! The certificate authority: a root and an issuer (ECDSA P-256), and the
//! signing of workload certificates carrying SPIFFE IDs. Keys stay in
//! memory; the only place they are written is the `dapr-trust-bundle`
//! Secret, by the caller.

use std::time::Duration;

use daprs_mtls::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData,
    SanType,
};
use time::OffsetDateTime;
use x509_parser::{pem::Pem, prelude::X509Certificate};

/// What can go wrong with CA material or a signing request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaError {
    /// The stored material is unusable; signing must stop until a person fixes it.
    #[error("{0}")]
    Material(String),
    /// The request cannot be signed as sent.
    #[error("{0}")]
    BadRequest(String),
    /// Signing failed for a reason that is not the caller's.
    #[error("signing failed: {0}")]
    Internal(String),
}

fn material(msg: impl Into<String>) -> CaError {
    CaError::Material(msg.into())
}

/// The three keys of the `dapr-trust-bundle` Secret, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    /// Trust anchors: one root, or several during a rotation.
    pub ca_crt: String,
    /// The issuer certificate (and any intermediates up to a root).
    pub issuer_crt: String,
    /// The issuer's private key.
    pub issuer_key: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Bundle")
            .field("ca_crt", &self.ca_crt)
            .field("issuer_crt", &self.issuer_crt)
            .finish_non_exhaustive()
    }
}

/// A ready CA.
pub struct Ca {
    /// PEM trust anchors handed to sidecars.
    pub trust_anchors: String,
    /// PEM issuer chain sent after every leaf.
    issuer_chain: String,
    issuer: Issuer<'static, KeyPair>,
    /// When the issuer and the earliest root expire.
    pub issuer_not_after: OffsetDateTime,
    pub root_not_after: OffsetDateTime,
}

/// A signed workload certificate.
pub struct Signed {
    /// Leaf followed by the issuer chain, PEM.
    pub chain_pem: String,
    pub not_after: OffsetDateTime,
}

/// How long generated roots and issuers last.
pub const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

fn pem_blocks(text: &str, what: &str) -> Result<Vec<Pem>, CaError> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(text.as_bytes()) {
        let block = block.map_err(|e| material(format!("{what} is not valid PEM: {e}")))?;
        if block.label == "CERTIFICATE" {
            out.push(block);
        }
    }
    if out.is_empty() {
        return Err(material(format!("{what} holds no certificate")));
    }
    Ok(out)
}

fn parse<'a>(pem: &'a Pem, what: &str) -> Result<X509Certificate<'a>, CaError> {
    pem.parse_x509()
        .map_err(|e| material(format!("{what} is not a valid certificate: {e}")))
}

fn to_offset(t: x509_parser::time::ASN1Time) -> OffsetDateTime {
    t.to_datetime()
}

fn ca_params(org: &str, not_before: OffsetDateTime) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = not_before;
    p.not_after = not_before + CA_VALIDITY;
    p.serial_number = Some(random_serial()?);
    Ok(p)
}

fn random_serial() -> Result<rcgen::SerialNumber, CaError> {
    use ring::rand::SecureRandom;
    // 128 random bits, as Dapr uses; the top bit is cleared to keep it positive.
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Internal("no randomness for a serial number".into()))?;
    bytes[0] &= 0x7f;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

impl Ca {
    /// A new root and issuer, for a cluster that has none yet.
    pub fn generate(
        trust_domain: &str,
        control_plane_namespace: &str,
        now: OffsetDateTime,
    ) -> Result<(Ca, Bundle), CaError> {
        let internal = |e: rcgen::Error| CaError::Internal(e.to_string());
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(internal)?;
        let root_params = ca_params(trust_domain, now)?;
        let root = root_params.self_signed(&root_key).map_err(internal)?;
        let root_issuer = Issuer::new(root_params, root_key);
        let issuer_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(internal)?;
        let issuer_params = ca_params(
            &SpiffeId::new(trust_domain, control_plane_namespace, "dapr-sentry").to_string(),
            now,
        )?;
        let issuer = issuer_params
            .signed_by(&issuer_key, &root_issuer)
            .map_err(internal)?;
        let bundle = Bundle {
            ca_crt: root.pem(),
            issuer_crt: issuer.pem(),
            issuer_key: issuer_key.serialize_pem(),
        };
        let ca = Ca::load(&bundle, Some(&bundle.ca_crt), now)?;
        Ok((ca, bundle))
    }

    /// Loads stored material, refusing anything that does not hang together:
    /// the published anchors (`published`, the ConfigMap) must include every
    /// root in the Secret, the issuer must be a CA that chains to one of
    /// them, and the key must be the issuer's.
    pub fn load(bundle: &Bundle, published: Option<&str>, now: OffsetDateTime) -> Result<Ca, CaError> {
        let roots_pem = pem_blocks(&bundle.ca_crt, "ca.crt of the Secret dapr-trust-bundle")?;
        let roots: Vec<X509Certificate<'_>> = roots_pem
            .iter()
            .map(|p| parse(p, "a root in ca.crt"))
            .collect::<Result<_, _>>()?;
        match published {
            None => {
                return Err(material(
                    "the ConfigMap dapr-trust-bundle has no ca.crt; it must publish the roots of the Secret",
                ));
            }
            Some(text) => {
                let published = pem_blocks(text, "ca.crt of the ConfigMap dapr-trust-bundle")?;
                for (i, r) in roots_pem.iter().enumerate() {
                    if !published.iter().any(|p| p.contents == r.contents) {
                        return Err(material(format!(
                            "root {} of the Secret dapr-trust-bundle is not in the ConfigMap dapr-trust-bundle; sidecars would not trust what is signed. Put the same ca.crt in both (during a rotation the ConfigMap may hold old and new roots)",
                            i + 1
                        )));
                    }
                }
            }
        }
        for (i, r) in roots.iter().enumerate() {
            if r.verify_signature(None).is_err() {
                return Err(material(format!("root {} in ca.crt is not self-signed", i + 1)));
            }
        }
        let chain_pem = pem_blocks(&bundle.issuer_crt, "issuer.crt")?;
        let chain: Vec<X509Certificate<'_>> = chain_pem
            .iter()
            .map(|p| parse(p, "issuer.crt"))
            .collect::<Result<_, _>>()?;
        let issuer = &chain[0];
        if !issuer.is_ca() {
            return Err(material(
                "issuer.crt is not a CA certificate (basicConstraints CA:TRUE is missing)",
            ));
        }
        // Each certificate of the chain is signed by the next, the last by a root.
        for w in chain.windows(2) {
            if w[0].verify_signature(Some(w[1].public_key())).is_err() {
                return Err(material(
                    "issuer.crt is not a chain: a certificate is not signed by the one after it",
                ));
            }
        }
        let last = chain.last().unwrap_or(issuer);
        let last_der = chain_pem
            .last()
            .map(|p| p.contents.as_slice())
            .unwrap_or_default();
        let anchored = roots.iter().zip(&roots_pem).any(|(r, r_pem)| {
            r_pem.contents == last_der || last.verify_signature(Some(r.public_key())).is_ok()
        });
        if !anchored {
            return Err(material(
                "issuer.crt does not chain to any root in ca.crt; the issuer was signed by a different CA",
            ));
        }
        let issuer_not_after = to_offset(issuer.validity().not_after);
        let root_not_after = roots
            .iter()
            .map(|r| to_offset(r.validity().not_after))
            .min()
            .unwrap_or(issuer_not_after);
        if issuer_not_after <= now {
            return Err(material(format!("issuer.crt expired at {issuer_not_after}")));
        }
        let key = KeyPair::from_pem(&bundle.issuer_key)
            .map_err(|e| material(format!("issuer.key is not a usable private key: {e}")))?;
        if key.subject_public_key_info() != issuer.public_key().raw {
            return Err(material("issuer.key does not belong to issuer.crt"));
        }
        let signer = Issuer::from_ca_cert_pem(&bundle.issuer_crt, key)
            .map_err(|e| material(format!("issuer.crt cannot sign: {e}")))?;
        // The chain sent to workloads stops below the roots.
        let issuer_chain: String = chain_pem
            .iter()
            .zip(&chain)
            .filter(|(_, c)| c.verify_signature(None).is_err())
            .map(|(p, _)| pem_text(p))
            .collect();
        Ok(Ca {
            trust_anchors: roots_pem.iter().map(pem_text).collect(),
            issuer_chain,
            issuer: signer,
            issuer_not_after,
            root_not_after,
        })
    }

    /// Signs `csr_pem` for `spiffe_id`, valid from `now - skew` for `ttl`.
    pub fn sign(
        &self,
        csr_pem: &[u8],
        spiffe_id: &str,
        dns_names: &[String],
        ttl: Duration,
        skew: Duration,
        now: OffsetDateTime,
    ) -> Result<Signed, CaError> {
        let text = std::str::from_utf8(csr_pem)
            .map_err(|_| CaError::BadRequest("the CSR is not PEM text".into()))?;
        let der = Pem::iter_from_buffer(text.as_bytes())
            .filter_map(Result::ok)
            .find(|p| p.label == "CERTIFICATE REQUEST" || p.label == "NEW CERTIFICATE REQUEST")
            .ok_or_else(|| CaError::BadRequest("no CERTIFICATE REQUEST block in the CSR".into()))?;
        let csr = CertificateSigningRequestParams::from_der(&der.contents.clone().into())
            .map_err(|e| CaError::BadRequest(format!("the CSR cannot be used: {e}")))?;
        // Only the public key of the request is used; everything else is ours.
        self.leaf(&csr.public_key, spiffe_id, dns_names, ttl, skew, now)
    }

    /// A certificate and a fresh key for the operator's own servers (no CSR:
    /// the key never leaves this process).
    pub fn issue_own(
        &self,
        spiffe_id: &str,
        dns_names: &[String],
        ttl: Duration,
        skew: Duration,
        now: OffsetDateTime,
    ) -> Result<(Signed, KeyPair), CaError> {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Internal(e.to_string()))?;
        let signed = self.leaf(&key, spiffe_id, dns_names, ttl, skew, now)?;
        Ok((signed, key))
    }

    /// Signs a workload certificate for `public_key`.
    fn leaf(
        &self,
        public_key: &impl PublicKeyData,
        spiffe_id: &str,
        dns_names: &[String],
        ttl: Duration,
        skew: Duration,
        now: OffsetDateTime,
    ) -> Result<Signed, CaError> {
        let uri = spiffe_id
            .try_into()
            .map_err(|_| CaError::BadRequest(format!("{spiffe_id:?} is not a valid URI")))?;
        let mut sans = vec![SanType::URI(uri)];
        for d in dns_names {
            sans.push(SanType::DnsName(
                d.as_str()
                    .try_into()
                    .map_err(|_| CaError::Internal(format!("{d:?} is not a DNS name")))?,
            ));
        }
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = now - skew;
        p.not_after = now + ttl;
        p.serial_number = Some(random_serial()?);
        p.use_authority_key_identifier_extension = true;
        let leaf = p
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Internal(e.to_string()))?;
        Ok(Signed {
            chain_pem: format!("{}{}", leaf.pem(), self.issuer_chain),
            not_after: p.not_after,
        })
    }

    /// Lines a person should act on: the issuer or a root expires within 30 days.
    pub fn expiry_warnings(&self, now: OffsetDateTime) -> Vec<String> {
        let soon = now + Duration::from_secs(30 * 24 * 3600);
        let mut out = Vec::new();
        if self.issuer_not_after <= soon {
            out.push(format!("the issuer certificate expires at {}; replace issuer.crt and issuer.key in the Secret dapr-trust-bundle", self.issuer_not_after));
        }
        if self.root_not_after <= soon {
            out.push(format!("a root certificate expires at {}; add the new root to both ca.crt entries of dapr-trust-bundle before replacing the issuer", self.root_not_after));
        }
        out
    }
}

/// Re-encodes one certificate as PEM (dropping any comments around it).
fn pem_text(p: &Pem) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&p.contents);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}
