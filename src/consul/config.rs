//! Consul connection settings: addresses, token, TLS files, datacenter and consistency.
//!
//! Owns parsing and validation of the values the settings layer collects (from flags or
//! `CONSUL_*` environment variables). It must not read environment variables itself and does no
//! network IO; reading the token and PEM files happens when a client is built.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No address was given.
    #[error("no Consul address given (expected e.g. `127.0.0.1:8500` or `https://consul:8501`)")]
    NoAddress,
    /// One address of the list is malformed.
    #[error("invalid Consul address {address:?}: {reason}")]
    InvalidAddress {
        /// The rejected entry.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A token or PEM file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    ReadFile {
        /// Which file (token, CA certificate, ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A token contains characters that cannot be sent in an HTTP header.
    #[error("the Consul token contains characters not allowed in an HTTP header")]
    InvalidToken,
    /// The datacenter name is not acceptable.
    #[error("invalid datacenter name {0:?}")]
    InvalidDatacenter(String),
    /// Only one of client certificate and client key was given.
    #[error("a client certificate needs both CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY")]
    IncompleteClientIdentity,
    /// A PEM file could not be parsed, or the HTTP client could not be built.
    #[error("invalid TLS setting ({what}): {source}")]
    Tls {
        /// Which setting.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
}

/// URL scheme of a Consul address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS via rustls.
    Https,
}

/// One parsed Consul address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulAddress {
    /// The scheme; `host:port` without one means HTTP.
    pub scheme: Scheme,
    /// The host name or IP address (IPv6 in brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl ConsulAddress {
    /// Parses `host:port`, `http://host:port` or `https://host:port`. The port defaults to 8500
    /// for HTTP and 8501 for HTTPS when omitted. A trailing `/` is ignored.
    pub fn parse(input: &str) -> Result<Self, ConfigError> {
        let raw = input.trim();
        let bad = |reason| ConfigError::InvalidAddress {
            address: input.to_owned(),
            reason,
        };
        let (scheme, rest) = if let Some(rest) = strip_prefix_ci(raw, "https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = strip_prefix_ci(raw, "http://") {
            (Scheme::Http, rest)
        } else if raw.contains("://") {
            return Err(bad("only http:// and https:// are supported"));
        } else {
            (Scheme::Http, raw)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(bad("missing host"));
        }
        if rest.contains('/') || rest.contains('?') || rest.contains('#') || rest.contains('@') {
            return Err(bad("expected only host and port"));
        }
        let default_port = match scheme {
            Scheme::Http => 8500,
            Scheme::Https => 8501,
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (inner, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            if inner.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("invalid IPv6 address"));
            }
            let port = match after {
                "" => default_port,
                p => parse_port(p.strip_prefix(':').ok_or_else(|| bad("junk after `]`"))?)
                    .ok_or_else(|| bad("invalid port"))?,
            };
            (format!("[{inner}]"), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    parse_port(p).ok_or_else(|| bad("invalid port"))?,
                ),
                None => (rest.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        if !host.starts_with('[')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(bad("invalid character in host"));
        }
        Ok(ConsulAddress { scheme, host, port })
    }

    /// The base URL, e.g. `http://consul:8500`.
    pub fn base_url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Everything needed to talk to Consul.
#[derive(Debug, Clone)]
pub struct ConsulConfig {
    /// Addresses tried in order; the one that last worked is used first.
    pub addresses: Vec<ConsulAddress>,
    /// An explicit ACL token (lowest precedence after the file, see [`ConsulConfig::resolve_token`]).
    pub token: Option<String>,
    /// A file holding the ACL token (`CONSUL_HTTP_TOKEN_FILE`); wins over `token`.
    pub token_file: Option<PathBuf>,
    /// CA certificate bundle (PEM) to verify the servers (`CONSUL_CACERT`).
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (`CONSUL_CLIENT_CERT`).
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS (`CONSUL_CLIENT_KEY`).
    pub client_key: Option<PathBuf>,
    /// Datacenter sent as `?dc=` on every request, if set.
    pub datacenter: Option<String>,
    /// Send `?stale` on reads, letting any server answer.
    pub stale: bool,
    /// Timeout of non-blocking requests.
    pub request_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Margin added to `wait + wait/16` for the timeout of blocking requests.
    pub blocking_margin: Duration,
}

impl ConsulConfig {
    /// Parses a comma-separated list of addresses (`CONSUL_ADDRESS` style). Empty entries are
    /// ignored; at least one address is required.
    pub fn new(addresses: &str) -> Result<Self, ConfigError> {
        let addresses = addresses
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(ConsulAddress::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if addresses.is_empty() {
            return Err(ConfigError::NoAddress);
        }
        Ok(ConsulConfig {
            addresses,
            token: None,
            token_file: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            datacenter: None,
            stale: false,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            blocking_margin: Duration::from_secs(10),
        })
    }

    /// Sets the explicit token (e.g. from `CONSUL_HTTP_TOKEN`). Empty means none.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.trim().is_empty());
        self
    }

    /// Sets the token file (e.g. from `CONSUL_HTTP_TOKEN_FILE`).
    pub fn with_token_file(mut self, path: Option<PathBuf>) -> Self {
        self.token_file = path;
        self
    }

    /// Sets the CA certificate file.
    pub fn with_ca_cert(mut self, path: Option<PathBuf>) -> Self {
        self.ca_cert = path;
        self
    }

    /// Sets the client certificate and key files.
    pub fn with_client_identity(mut self, cert: Option<PathBuf>, key: Option<PathBuf>) -> Self {
        self.client_cert = cert;
        self.client_key = key;
        self
    }

    /// Sets the datacenter; it must match `[A-Za-z0-9_.-]+`.
    pub fn with_datacenter(mut self, dc: Option<String>) -> Result<Self, ConfigError> {
        if let Some(dc) = &dc {
            let ok = !dc.is_empty()
                && dc
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(ConfigError::InvalidDatacenter(dc.clone()));
            }
        }
        self.datacenter = dc;
        Ok(self)
    }

    /// Enables or disables stale reads.
    pub fn with_stale(mut self, stale: bool) -> Self {
        self.stale = stale;
        self
    }

    /// The token to send: the token file wins over the explicit token, as in Consul's Go client.
    /// Trailing whitespace (the file's newline) is trimmed; an empty token means none.
    pub fn resolve_token(&self) -> Result<Option<String>, ConfigError> {
        let token = match &self.token_file {
            Some(path) => Some(read_file(path, "token")?),
            None => self.token.clone(),
        };
        let token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        if let Some(t) = &token
            && !t.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(ConfigError::InvalidToken);
        }
        Ok(token)
    }
}

fn read_file(path: &Path, what: &'static str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn read_bytes(path: &Path, what: &'static str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> ConsulAddress {
        ConsulAddress::parse(s).unwrap()
    }

    #[test]
    fn scheme_is_a_prefix_not_a_character_trim() {
        let a = addr("http://hotel:8500");
        assert_eq!(a.host, "hotel");
        assert_eq!(a.scheme, Scheme::Http);
        let a = addr("https://hotel:8501");
        assert_eq!(
            (a.scheme, a.host.as_str(), a.port),
            (Scheme::Https, "hotel", 8501)
        );
        let a = addr("http://ptth:1");
        assert_eq!(a.host, "ptth");
        assert_eq!(addr("HTTP://h:1").host, "h");
    }

    #[test]
    fn address_forms() {
        let a = addr("consul:8500");
        assert_eq!(
            (a.scheme, a.host.as_str(), a.port),
            (Scheme::Http, "consul", 8500)
        );
        assert_eq!(addr("consul").port, 8500);
        assert_eq!(addr("https://consul").port, 8501);
        assert_eq!(
            addr("http://10.0.0.1:8500/").base_url(),
            "http://10.0.0.1:8500"
        );
        assert_eq!(addr("[::1]:8500").base_url(), "http://[::1]:8500");
        assert_eq!(addr("https://[::1]").base_url(), "https://[::1]:8501");
    }

    #[test]
    fn bad_addresses() {
        for bad in [
            "",
            "http://",
            "unix:///tmp/consul.sock",
            "ftp://x:1",
            "host:0",
            "host:65536",
            "host:abc",
            "host:",
            "http://host:8500/path",
            "user@host:8500",
            "ho st:8500",
            "[::1",
            "[zz]:1",
        ] {
            assert!(ConsulAddress::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn address_list() {
        let c = ConsulConfig::new("a:1, http://b:2 ,,https://c:3").unwrap();
        let urls: Vec<_> = c.addresses.iter().map(ConsulAddress::base_url).collect();
        assert_eq!(urls, ["http://a:1", "http://b:2", "https://c:3"]);
        assert!(matches!(
            ConsulConfig::new(" , "),
            Err(ConfigError::NoAddress)
        ));
        let err = ConsulConfig::new("a:1,b:x").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid Consul address \"b:x\": invalid port")
        );
    }

    #[test]
    fn token_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let base = ConsulConfig::new("a:1").unwrap();

        assert_eq!(base.resolve_token().unwrap(), None);
        let explicit = base.clone().with_token(Some("explicit".into()));
        assert_eq!(
            explicit.resolve_token().unwrap().as_deref(),
            Some("explicit")
        );
        let both = explicit.with_token_file(Some(file.clone()));
        assert_eq!(both.resolve_token().unwrap().as_deref(), Some("from-file"));
        let missing = base.clone().with_token_file(Some(dir.path().join("nope")));
        assert!(matches!(
            missing.resolve_token(),
            Err(ConfigError::ReadFile { what: "token", .. })
        ));
        assert_eq!(
            base.clone()
                .with_token(Some("  ".into()))
                .resolve_token()
                .unwrap(),
            None
        );
        assert!(matches!(
            base.with_token(Some("a b".into())).resolve_token(),
            Err(ConfigError::InvalidToken)
        ));
    }

    #[test]
    fn datacenter_validation() {
        let c = ConsulConfig::new("a:1").unwrap();
        assert!(c.clone().with_datacenter(Some("dc1".into())).is_ok());
        assert!(c.clone().with_datacenter(Some("dc 1".into())).is_err());
        assert!(c.with_datacenter(Some("dc1&x=y".into())).is_err());
    }
}
