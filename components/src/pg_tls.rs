//! TLS to PostgreSQL with libpq's `sslmode` semantics: `prefer` and
//! `require` encrypt without checking the server's certificate (unless a
//! root certificate is given, when `require` checks it as `verify-ca`
//! does), `verify-ca` checks that the certificate chains to
//! `sslrootcert`, and `verify-full` also that it names the host.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use rustls::{
    CertificateError, DigitallySignedStruct, Error, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Encryption only (`prefer`).
    Nothing,
    /// Encryption, and the chain when a root file exists (`require`).
    Require,
    /// The chain must reach a trusted root.
    Chain,
    /// The chain, and the host name.
    Full,
}

/// The TLS files and choices of a connection string.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// `sslrootcert`: a PEM file of trusted roots, or `system`.
    pub root_cert: Option<String>,
    /// `sslcert` and `sslkey`: a client certificate to present.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// `sslsni=0` turns Server Name Indication off.
    pub no_sni: bool,
}

/// The connector handed to the driver; `None` when TLS is off.
#[derive(Clone, Default)]
pub struct Tls(Option<Arc<rustls::ClientConfig>>);

/// The default root file libpq reads when `sslrootcert` is not given.
fn default_root_file() -> Option<String> {
    let home = std::env::var("HOME").ok()?;
    let path = format!("{home}/.postgresql/root.crt");
    std::path::Path::new(&path).exists().then_some(path)
}

impl Tls {
    /// No TLS (`sslmode=disable`).
    pub fn off() -> Self {
        Self(None)
    }

    /// TLS checking `check` of the server, with the options' files read now
    /// so a missing or bad file fails the component's start, not a query.
    pub fn new(check: Check, options: &Options) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        // `prefer` never checks, so it has no root to look for.
        let root = match check {
            Check::Nothing => None,
            _ => options.root_cert.clone().or_else(default_root_file),
        };
        let check = match (check, &root) {
            (Check::Require, Some(_)) => Check::Chain,
            (Check::Require, None) => Check::Nothing,
            (c, _) => c,
        };
        let chain = match check {
            Check::Nothing | Check::Require => None,
            Check::Chain | Check::Full => {
                let roots = match root.as_deref() {
                    Some("system") => crate::https::native_roots(),
                    Some(path) => crate::https::roots(&read(path, "sslrootcert")?)?,
                    None => {
                        return Err(
                            "sslmode=verify-ca and verify-full need sslrootcert: a PEM file of the \
                             certificate authority that signed the server's certificate, or system"
                                .into(),
                        );
                    }
                };
                let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("sslrootcert: {e}"))?;
                Some(verifier)
            }
        };
        let verifier = Arc::new(Verifier {
            chain,
            names: check == Check::Full,
            algorithms,
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let client =
            match crate::both_or_neither(options.cert.as_ref(), options.key.as_ref(), "sslcert", "sslkey")? {
                Some((cert, key)) => Some((read(cert, "sslcert")?, read(key, "sslkey")?)),
                None => None,
            };
        let mut config = crate::https::with_client(builder, client).map_err(|e| {
            format!(
                "sslcert {} and sslkey {}: {e}",
                options.cert.as_deref().unwrap_or_default(),
                options.key.as_deref().unwrap_or_default()
            )
        })?;
        config.enable_sni = !options.no_sni;
        Ok(Self(Some(Arc::new(config))))
    }
}

fn read(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {path}: {e}"))
}

/// Checks what `sslmode` asks of the server's certificate.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    names: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // The name is checked after the chain, so this error means the
            // chain held.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    // The driver asks for a connector before it knows whether the mode
    // will use it, so an absent configuration fails only on use.
    fn make_tls_connect(&mut self, host: &str) -> io::Result<Connect> {
        let config = self.0.clone();
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("host {host:?}: {e}")))?;
        Ok(Connect { config, name })
    }
}

/// One connection's handshake.
pub struct Connect {
    config: Option<Arc<rustls::ClientConfig>>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("TLS was asked for with sslmode=disable"))?;
            let connector = tokio_rustls::TlsConnector::from(config);
            Ok(Stream(connector.connect(self.name, stream).await?))
        })
    }
}

/// An encrypted connection to the server.
pub struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM then runs without channel binding, which `prefer` (the
        // default) allows.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
