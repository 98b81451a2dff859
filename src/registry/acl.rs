//! The embedded registry's one ACL token (`EMBEDDED_REGISTRY_TOKEN`).
//!
//! Owns: reading a request's token where Consul reads it (`?token=`, then `X-Consul-Token`,
//! then `Authorization: Bearer`), the constant-time comparison, the endpoints that stay open
//! (`/v1/status/leader` and `/v1/status/peers`, as in Consul) and Consul's 403 answers:
//! `Permission denied` without a token (the anonymous token may do nothing), `ACL not found`
//! for a token that is not the configured one.
//!
//! Must not: know about other ACL concepts (policies, roles, filtering of list reads): with a
//! token set, the registry behaves as a Consul whose default policy is `deny` and whose only
//! token may do everything.

use std::fmt;

use subtle::ConstantTimeEq;
use warp::http::HeaderMap;

/// Consul's body when no token (the anonymous token) is given.
pub const PERMISSION_DENIED: &str = "Permission denied";
/// Consul's body when the token is unknown.
pub const ACL_NOT_FOUND: &str = "ACL not found";

/// Endpoints answered without a token (paths after `/v1/`).
const OPEN: [&str; 2] = ["status/leader", "status/peers"];

/// The token the registry requires.
#[derive(Clone, PartialEq, Eq)]
pub struct AclToken(String);

impl fmt::Debug for AclToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AclToken(<set>)")
    }
}

impl AclToken {
    /// The token, when set and not blank.
    pub fn new(token: Option<&str>) -> Option<AclToken> {
        token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| AclToken(t.to_owned()))
    }

    /// The token itself, for a client of this registry.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

/// Why a request is refused: both are 403 in Consul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token was given.
    PermissionDenied,
    /// A token was given and it is not the configured one.
    AclNotFound,
}

impl Denied {
    /// Consul's body.
    pub fn body(self) -> &'static str {
        match self {
            Denied::PermissionDenied => PERMISSION_DENIED,
            Denied::AclNotFound => ACL_NOT_FOUND,
        }
    }
}

/// The token of a request, where Consul looks for it: `?token=` first, then the
/// `X-Consul-Token` header, then `Authorization: Bearer`.
pub fn request_token<'a>(query: &'a [(String, String)], headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some((_, t)) = query.iter().find(|(k, v)| k == "token" && !v.is_empty()) {
        return Some(t.as_str());
    }
    if let Some(t) = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Some(t);
    }
    let auth = headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, token) = auth.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether a request for `path` (after `/v1/`, decoded) with `token` may go on.
pub fn check(required: &AclToken, path: &str, token: Option<&str>) -> Result<(), Denied> {
    if OPEN.contains(&path.trim_end_matches('/')) {
        return Ok(());
    }
    match token {
        None => Err(Denied::PermissionDenied),
        Some(t) if bool::from(t.as_bytes().ct_eq(required.0.as_bytes())) => Ok(()),
        Some(_) => Err(Denied::AclNotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    #[test]
    fn token_sources_in_consul_order() {
        let mut h = HeaderMap::new();
        let q = vec![("token".to_owned(), "q".to_owned())];
        assert_eq!(request_token(&[], &h), None);
        h.insert("authorization", HeaderValue::from_static("Bearer b"));
        assert_eq!(request_token(&[], &h), Some("b"));
        h.insert("x-consul-token", HeaderValue::from_static("x"));
        assert_eq!(request_token(&[], &h), Some("x"));
        assert_eq!(request_token(&q, &h), Some("q"));
        let mut basic = HeaderMap::new();
        basic.insert("authorization", HeaderValue::from_static("Basic Yjpj"));
        assert_eq!(request_token(&[], &basic), None);
    }

    #[test]
    fn check_answers_as_consul() {
        let t = AclToken::new(Some("s3cret")).unwrap();
        assert_eq!(check(&t, "kv/a", None), Err(Denied::PermissionDenied));
        assert_eq!(check(&t, "kv/a", Some("nope")), Err(Denied::AclNotFound));
        assert_eq!(check(&t, "kv/a", Some("s3cret")), Ok(()));
        assert_eq!(check(&t, "status/leader", None), Ok(()));
        assert_eq!(check(&t, "status/peers", None), Ok(()));
        assert_eq!(check(&t, "agent/self", None), Err(Denied::PermissionDenied));
        assert!(AclToken::new(Some("  ")).is_none());
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
