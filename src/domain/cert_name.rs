//! The name of a TLS certificate (`certName` of `PUT /v1/docker-flow-proxy/cert`, or a file
//! name in `CERTS_DIR`).
//!
//! Owns the alphabet of certificate names: it becomes a file name under the data directory and
//! a KV key under `<instance>/_certs/`, so it must be safe as both. Pure: no IO.

use std::fmt;

/// Longest accepted certificate name, in bytes.
pub const MAX_CERT_NAME: usize = 128;

/// A certificate name: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most [`MAX_CERT_NAME`] bytes, without
/// `..`. Safe as a file name and as a KV key segment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CertName(String);

/// A rejected [`CertName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid certName {0:?}: must be [A-Za-z0-9][A-Za-z0-9._-]*, at most 128 bytes, without \"..\""
)]
pub struct CertNameError(pub String);

impl CertName {
    /// Validates a certificate name.
    pub fn new(value: &str) -> Result<CertName, CertNameError> {
        let ok = !value.is_empty()
            && value.len() <= MAX_CERT_NAME
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !value.contains("..");
        if ok {
            Ok(CertName(value.to_owned()))
        } else {
            Err(CertNameError(value.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_file_name_safe_names() {
        for ok in ["example.com.pem", "my-cert", "a", "wild_card.example.com"] {
            assert_eq!(CertName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_paths_spaces_and_reserved_starts() {
        let long = "a".repeat(MAX_CERT_NAME + 1);
        for bad in [
            "", "../x", "a/b", "a b", "_certs", ".hidden", "-x", "a..b", "x\n", "é", &long,
        ] {
            assert!(CertName::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
