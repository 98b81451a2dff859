//! Authentication of the control API: `API_TOKEN` (a bearer token) and `API_USERS` (basic
//! authentication, `user:pass,user2:pass2`).
//!
//! Owns: the parsed credentials ([`ApiAuth`]), the decision whether a request's
//! `Authorization` header is accepted (constant-time comparisons, every configured user
//! compared), the list of paths that stay open (`ping`, `/v1/test`, `/v2/test`: health checks),
//! the `WWW-Authenticate` challenge, and the warning when the API is open beyond loopback.
//!
//! Must not: route requests or know any other endpoint; the gate (`gate`) applies this check
//! in front of every route, so a route added later is protected without further code.

use std::fmt;
use std::net::SocketAddr;

use base64::Engine as _;
use subtle::ConstantTimeEq;
use tracing::warn;

/// Paths answered without credentials: readiness and health checks.
pub const OPEN_PATHS: [&str; 3] = ["/v1/docker-flow-proxy/ping", "/v1/test", "/v2/test"];

/// The realm named in the challenge.
const REALM: &str = "flow-proxy";

/// Why the credential settings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// An `API_USERS` entry is not `user:pass` with both parts non-empty.
    #[error("API_USERS entry {position} is not user:pass (both non-empty)")]
    BadUser {
        /// 1-based position of the entry in the list.
        position: usize,
    },
}

/// The credentials the control API accepts. With neither a token nor users, every request is
/// accepted.
#[derive(Clone, Default)]
pub struct ApiAuth {
    token: Option<Vec<u8>>,
    users: Vec<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        f.debug_struct("ApiAuth")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("users", &self.users.len())
            .finish()
    }
}

impl ApiAuth {
    /// No credentials: every request is accepted.
    pub fn open() -> Self {
        Self::default()
    }

    /// From `API_TOKEN` and `API_USERS`; empty values count as unset.
    pub fn new(token: Option<&str>, users: Option<&str>) -> Result<Self, AuthError> {
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.as_bytes().to_vec());
        let mut parsed = Vec::new();
        if let Some(list) = users.map(str::trim).filter(|u| !u.is_empty()) {
            for (i, entry) in list.split(',').enumerate() {
                let entry = entry.trim();
                match entry.split_once(':') {
                    Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
                        parsed.push((user.as_bytes().to_vec(), pass.as_bytes().to_vec()));
                    }
                    _ => return Err(AuthError::BadUser { position: i + 1 }),
                }
            }
        }
        Ok(ApiAuth {
            token,
            users: parsed,
        })
    }

    /// Whether any credential is required.
    pub fn is_enabled(&self) -> bool {
        self.token.is_some() || !self.users.is_empty()
    }

    /// Whether `path` is answered without credentials.
    pub fn is_open_path(path: &str) -> bool {
        let path = path.strip_suffix('/').unwrap_or(path);
        OPEN_PATHS.contains(&path)
    }

    /// Whether a request to `path` with this `Authorization` header value may go on.
    pub fn allows(&self, path: &str, authorization: Option<&[u8]>) -> bool {
        if !self.is_enabled() || Self::is_open_path(path) {
            return true;
        }
        let Some(header) = authorization.and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        let (scheme, credentials) = header.trim().split_once(' ').unwrap_or((header, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self
                .token
                .as_ref()
                .is_some_and(|t| bool::from(t.as_slice().ct_eq(credentials.as_bytes())));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
                return false;
            };
            let Some(colon) = decoded.iter().position(|b| *b == b':') else {
                return false;
            };
            let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
            // Every user is compared, so the answer time does not tell which name exists.
            let mut found = subtle::Choice::from(0);
            for (u, p) in &self.users {
                found |= u.as_slice().ct_eq(user) & p.as_slice().ct_eq(pass);
            }
            return bool::from(found);
        }
        false
    }

    /// The `WWW-Authenticate` values of a 401 answer: one per accepted scheme.
    pub fn challenges(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.token.is_some() {
            out.push(format!("Bearer realm=\"{REALM}\""));
        }
        if !self.users.is_empty() {
            out.push(format!("Basic realm=\"{REALM}\", charset=\"UTF-8\""));
        }
        out
    }

    /// Logs a loud warning when the API needs no credentials and listens beyond loopback.
    /// Returns whether it warned.
    pub fn warn_if_exposed(&self, address: SocketAddr) -> bool {
        if self.is_enabled() || address.ip().is_loopback() {
            return false;
        }
        warn!(
            api = %address,
            "THE CONTROL API IS OPEN: it listens beyond loopback and neither API_TOKEN nor \
             API_USERS is set, so anyone who reaches {address} can change routing; set one of \
             them or listen on 127.0.0.1"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
        .into_bytes()
    }

    #[test]
    fn open_without_settings() {
        let auth = ApiAuth::new(None, Some(" ")).unwrap();
        assert!(!auth.is_enabled());
        assert!(auth.allows("/v1/docker-flow-proxy/reconfigure", None));
        assert!(auth.challenges().is_empty());
    }

    #[test]
    fn bearer_token() {
        let auth = ApiAuth::new(Some("s3cret"), None).unwrap();
        let path = "/v1/docker-flow-proxy/remove";
        assert!(!auth.allows(path, None));
        assert!(auth.allows(path, Some(b"Bearer s3cret")));
        assert!(auth.allows(path, Some(b"bearer  s3cret ")));
        assert!(!auth.allows(path, Some(b"Bearer s3cre")));
        assert!(!auth.allows(path, Some(b"Bearer s3cretx")));
        assert!(!auth.allows(path, Some(b"Bearer ")));
        assert!(!auth.allows(path, Some(b"s3cret")));
        assert!(!auth.allows(path, Some(&basic("x:s3cret"))));
        assert_eq!(auth.challenges(), vec!["Bearer realm=\"flow-proxy\""]);
    }

    #[test]
    fn basic_users() {
        let auth = ApiAuth::new(None, Some("alice:pw1, bob:p:w2")).unwrap();
        let path = "/metrics";
        assert!(auth.allows(path, Some(&basic("alice:pw1"))));
        assert!(auth.allows(path, Some(&basic("bob:p:w2"))));
        assert!(!auth.allows(path, Some(&basic("alice:pw2"))));
        assert!(!auth.allows(path, Some(&basic("alice"))));
        assert!(!auth.allows(path, Some(b"Basic !!!")));
        assert!(!auth.allows(path, Some(b"Bearer pw1")));
        assert!(!auth.allows(path, Some(&[0xff, 0xfe])));
    }

    #[test]
    fn open_paths_need_nothing() {
        let auth = ApiAuth::new(Some("t"), Some("a:b")).unwrap();
        for p in OPEN_PATHS {
            assert!(auth.allows(p, None), "{p}");
        }
        assert!(auth.allows("/v1/test/", None));
        assert!(!auth.allows("/v1/docker-flow-proxy/config", None));
        assert!(!auth.allows("/v1/tests", None));
        assert!(!auth.allows("/", None));
    }

    #[test]
    fn bad_user_lists_are_refused() {
        for bad in ["alice", "alice:", ":pw", "a:b,,c:d"] {
            assert!(ApiAuth::new(None, Some(bad)).is_err(), "{bad}");
        }
        let debug = format!("{:?}", ApiAuth::new(Some("s3cr3t"), Some("a:pw9")).unwrap());
        assert!(
            !debug.contains("s3cr3t") && !debug.contains("pw9"),
            "{debug}"
        );
    }

    #[test]
    fn warns_only_when_open_beyond_loopback() {
        let open = ApiAuth::open();
        assert!(open.warn_if_exposed("0.0.0.0:8080".parse().unwrap()));
        assert!(!open.warn_if_exposed("127.0.0.1:8080".parse().unwrap()));
        assert!(!open.warn_if_exposed("[::1]:8080".parse().unwrap()));
        let closed = ApiAuth::new(Some("t"), None).unwrap();
        assert!(!closed.warn_if_exposed("0.0.0.0:8080".parse().unwrap()));
    }
}
