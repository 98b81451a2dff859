//! Validation of a PEM bundle (certificate chain + private key) before HAProxy sees it.
//!
//! Owns: what a servable bundle is (at least one certificate, the end-entity one first, that
//! parses as X.509; exactly one unencrypted private key that rustls' ring provider can load;
//! the key matching the first certificate) and the normalized PEM text written for HAProxy
//! (the certificates in the given order, then the key; nothing else from the input).
//!
//! Pure: no IO. Must not write files or talk to Consul (the shell in `certs` does).

use base64::Engine as _;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::sign::CertifiedKey;

/// Why a bundle is refused. The messages are the API's 400 answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// Nothing was sent.
    #[error("the certificate body is empty")]
    Empty,
    /// The text is not valid PEM.
    #[error("the body is not valid PEM: {0}")]
    Syntax(String),
    /// No `CERTIFICATE` section.
    #[error("the PEM bundle holds no certificate")]
    NoCertificate,
    /// No private key section.
    #[error(
        "the PEM bundle holds no unencrypted private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NoKey,
    /// More than one private key.
    #[error("the PEM bundle holds more than one private key")]
    SeveralKeys,
    /// The first certificate is not valid X.509.
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
    /// The key cannot be loaded.
    #[error("the private key cannot be loaded: {0}")]
    BadKey(String),
    /// The key is not the certificate's.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
}

/// A bundle that passed validation, in normalized PEM form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidBundle {
    pem: String,
}

impl ValidBundle {
    /// The normalized PEM text: the certificates, then the key.
    pub fn pem(&self) -> &str {
        &self.pem
    }
}

fn encode(label: &str, der: &[u8], out: &mut String) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

/// Validates a PEM bundle and returns its normalized form.
pub fn validate(body: &[u8]) -> Result<ValidBundle, PemError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PemError::Empty);
    }
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    let mut keys: Vec<(SectionKind, Vec<u8>)> = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(body) {
        let (kind, der) = section.map_err(|e| PemError::Syntax(e.to_string()))?;
        match kind {
            SectionKind::Certificate => certs.push(CertificateDer::from(der)),
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                keys.push((kind, der))
            }
            _ => {}
        }
    }
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    let (kind, key_der) = match keys.len() {
        0 => return Err(PemError::NoKey),
        1 => keys.remove(0),
        _ => return Err(PemError::SeveralKeys),
    };
    let (label, key) = match kind {
        SectionKind::RsaPrivateKey => (
            "RSA PRIVATE KEY",
            PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(key_der.clone())),
        ),
        SectionKind::EcPrivateKey => (
            "EC PRIVATE KEY",
            PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(key_der.clone())),
        ),
        _ => (
            "PRIVATE KEY",
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.clone())),
        ),
    };
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| PemError::BadKey(e.to_string()))?;
    let certified = CertifiedKey::new(certs.clone(), signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(PemError::KeyMismatch);
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(PemError::BadKey(
                "its public key cannot be compared with the certificate's".to_owned(),
            ));
        }
        Err(e) => return Err(PemError::BadCertificate(e.to_string())),
    }
    let mut pem = String::new();
    for cert in &certs {
        encode("CERTIFICATE", cert, &mut pem);
    }
    encode(label, &key_der, &mut pem);
    Ok(ValidBundle { pem })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_certificate_with_its_key_is_normalized() {
        let (cert, key) = pair("a.example.test");
        let body = format!("junk before\n{cert}\n{key}");
        let bundle = validate(body.as_bytes()).unwrap();
        assert!(bundle.pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(bundle.pem().contains("-----BEGIN PRIVATE KEY-----\n"));
        assert!(!bundle.pem().contains("junk"));
        // Normalization is stable.
        assert_eq!(validate(bundle.pem().as_bytes()).unwrap(), bundle);
    }

    #[test]
    fn refusals_name_the_reason() {
        let (cert, key) = pair("a.example.test");
        let (_, other_key) = pair("b.example.test");
        assert_eq!(validate(b"  \n"), Err(PemError::Empty));
        assert_eq!(validate(b"hello"), Err(PemError::NoCertificate));
        assert_eq!(validate(key.as_bytes()), Err(PemError::NoCertificate));
        assert_eq!(validate(cert.as_bytes()), Err(PemError::NoKey));
        assert_eq!(
            validate(format!("{cert}{key}{key}").as_bytes()),
            Err(PemError::SeveralKeys)
        );
        assert_eq!(
            validate(format!("{cert}{other_key}").as_bytes()),
            Err(PemError::KeyMismatch)
        );
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            validate(format!("{broken}{key}").as_bytes()),
            Err(PemError::BadCertificate(_))
        ));
        let garbage_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            validate(format!("{cert}{garbage_key}").as_bytes()),
            Err(PemError::BadKey(_))
        ));
        let unterminated = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(matches!(
            validate(unterminated.as_bytes()),
            Err(PemError::Syntax(_))
        ));
    }
}
