//! SPIFFE IDs of the form `spiffe://<trust-domain>/ns/<namespace>/<app-id>`.

use std::fmt;

/// A workload's identity. Extra path segments after the app-id are
/// tolerated when parsing, as Dapr tolerates them, and dropped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub app_id: String,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, app_id: &str) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            app_id: app_id.into(),
        }
    }

    /// Parses `spiffe://<td>/ns/<ns>/<app-id>[/...]`; None for anything else.
    pub fn parse(id: &str) -> Option<Self> {
        let rest = id.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let trust_domain = parts.next().filter(|t| !t.is_empty())?;
        match (parts.next(), parts.next(), parts.next()) {
            (Some("ns"), Some(ns), Some(app)) if !ns.is_empty() && !app.is_empty() => {
                Some(Self::new(trust_domain, ns, app))
            }
            _ => None,
        }
    }

    /// The first `spiffe://` URI SAN of a DER certificate.
    pub fn uri_of(der: &[u8]) -> Option<String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
                Some((*u).to_string())
            }
            _ => None,
        })
    }

    /// The parsed SPIFFE ID of a DER certificate.
    pub fn of(der: &[u8]) -> Option<Self> {
        Self::uri_of(der).as_deref().and_then(Self::parse)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/{}",
            self.trust_domain, self.namespace, self.app_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_app_ids_and_tolerates_extra_segments() {
        let id = SpiffeId::parse("spiffe://public/ns/prod/orders").expect("id");
        assert_eq!(id, SpiffeId::new("public", "prod", "orders"));
        assert_eq!(id.to_string(), "spiffe://public/ns/prod/orders");
        assert_eq!(
            SpiffeId::parse("spiffe://td/ns/prod/orders/extra"),
            Some(SpiffeId::new("td", "prod", "orders"))
        );
        for bad in [
            "spiffe://td/prod/orders",
            "https://td/ns/prod/orders",
            "spiffe:///ns/prod/orders",
            "spiffe://td/ns//orders",
            "spiffe://td/ns/prod",
        ] {
            assert_eq!(SpiffeId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_the_uri_san_of_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["example.org".to_string()]).expect("params");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://public/ns/default/app".try_into().expect("uri"),
        ));
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            SpiffeId::of(cert.der()),
            Some(SpiffeId::new("public", "default", "app"))
        );
        let plain = rcgen::CertificateParams::new(vec!["example.org".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        assert_eq!(SpiffeId::uri_of(plain.der()), None);
    }
}
