//! TLS client configurations that accept any server certificate, for talking to the agent's
//! self-signed webhook directly in tests and benchmarks (the API server, which verifies the CA bundle, is
//! the real client; these callers check the server's behaviour, not the certificate). The handshake
//! signatures are still verified, so a client built here completes only real TLS handshakes.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme, SupportedProtocolVersion};

/// Accepts any certificate chain; checks the handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration (ring provider) offering exactly the protocol `versions` and trusting any
/// server certificate; no ALPN protocols (set `alpn_protocols` on it for HTTP/1.1 or h2).
///
/// # Errors
/// When the provider supports none of `versions` (or `versions` is empty).
pub fn client_config(
    versions: &[&'static SupportedProtocolVersion],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth())
}

/// [`client_config`] with rustls's default versions (TLS 1.2 and 1.3).
pub fn trust_any_certificate() -> rustls::ClientConfig {
    client_config(rustls::DEFAULT_VERSIONS).unwrap_or_else(|_| {
        // unreachable with the ring provider, which supports both default versions
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))))
            .with_no_client_auth()
    })
}
