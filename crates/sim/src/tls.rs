//! HTTPS for sims: a self-signed CA and a `localhost` certificate, generated on the fly.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_failover_sim::{Flavor, Sim, tls};
//!
//! let certs = tls::self_signed()?;
//! let sim = Sim::builder(Flavor::OpenAi).tls(certs.server_config.clone()).start().await?;
//! assert!(sim.base_url().starts_with("https://127.0.0.1:"));
//! // Clients trust `certs.ca_der` (or `certs.ca_pem`) as a root, and reach the sim
//! // as `https://localhost:PORT` or `https://127.0.0.1:PORT`.
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::SimError;

/// A freshly generated CA and a server certificate it signed.
#[derive(Clone)]
pub struct SelfSigned {
    /// Server configuration presenting the certificate for `localhost`,
    /// `127.0.0.1` and `::1`, with ALPN `h2` and `http/1.1`.
    pub server_config: Arc<rustls::ServerConfig>,
    /// The CA certificate, PEM-encoded: what clients must trust.
    pub ca_pem: String,
    /// The CA certificate, DER-encoded: what clients must trust.
    pub ca_der: CertificateDer<'static>,
    /// The server certificate chain (leaf first), DER-encoded.
    pub cert_chain: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

fn err(e: impl fmt::Display) -> SimError {
    SimError::Tls(e.to_string())
}

/// Generate a CA and a server certificate for `localhost`, `127.0.0.1` and `::1`
/// (ECDSA P-256, ring), and a server configuration using them.
pub fn self_signed() -> Result<SelfSigned, SimError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tower-failover-sim test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let leaf_key = KeyPair::generate().map_err(err)?;
    let mut leaf_params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(err)?;

    let cert_chain = vec![leaf.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server_config = server_config(cert_chain.clone(), key)?;
    Ok(SelfSigned {
        server_config,
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        cert_chain,
    })
}

/// A server configuration (ring provider, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`)
/// from a certificate chain and its private key.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, SimError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)
        .map_err(err)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
