//! The process-wide TLS crypto provider.
//!
//! reqwest is built without a bundled provider (so no C crypto library is compiled), which
//! means every HTTP client needs rustls' process-wide provider installed first, or building a
//! client panics. This module owns that one decision (ring). It must not build clients itself.

/// Installs ring's rustls provider for this process unless one is already installed.
/// Safe to call any number of times, from any thread.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: some provider is then set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn installing_twice_is_harmless() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        assert!(reqwest::Client::builder().build().is_ok());
    }
}
