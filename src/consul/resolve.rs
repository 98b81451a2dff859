//! Turning instance addresses into IP addresses.
//!
//! Owns the [`Resolver`] seam and the system resolver (tokio's `lookup_host`). It must not
//! cache: the catalog watcher resolves again on every re-read and resync.

use std::net::IpAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;

/// Resolves a host name to one IP address; `None` when it cannot be resolved.
pub trait Resolver: Send + Sync + 'static {
    /// Resolves `host` (never an IP literal; those are parsed without asking).
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<IpAddr>>;
}

impl<T: Resolver + ?Sized> Resolver for Arc<T> {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<IpAddr>> {
        (**self).resolve(host)
    }
}

/// The system resolver via `tokio::net::lookup_host`, preferring IPv4 results.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<IpAddr>> {
        Box::pin(async move {
            let addrs: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
                .await
                .ok()?
                .map(|sa| sa.ip())
                .collect();
            addrs
                .iter()
                .find(|ip| ip.is_ipv4())
                .or_else(|| addrs.first())
                .copied()
        })
    }
}

/// Whether `host` is a syntactically acceptable DNS name (`[A-Za-z0-9.-]`, labels not starting
/// or ending with `-`, at most 253 bytes).
pub(crate) fn is_valid_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Parses an IP literal, or resolves a valid host name; `None` otherwise.
pub(crate) async fn resolve_address(resolver: &dyn Resolver, address: &str) -> Option<IpAddr> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Some(ip);
    }
    if !is_valid_hostname(address) {
        return None;
    }
    resolver.resolve(address).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(is_valid_hostname("consul.service.dc1"));
        assert!(is_valid_hostname("web-1"));
        assert!(!is_valid_hostname("a b"));
        assert!(!is_valid_hostname("-a"));
        assert!(!is_valid_hostname("a..b"));
        assert!(!is_valid_hostname(""));
    }

    #[tokio::test]
    async fn system_resolver_literals_and_localhost() {
        let r = SystemResolver;
        assert_eq!(
            resolve_address(&r, "10.1.2.3").await,
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            resolve_address(&r, "::1").await,
            Some("::1".parse().unwrap())
        );
        assert!(resolve_address(&r, "localhost").await.is_some());
        assert_eq!(resolve_address(&r, "bad host").await, None);
    }
}
