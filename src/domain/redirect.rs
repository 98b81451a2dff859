//! The status code of a per-service redirect to HTTPS (`httpsRedirectCode`).
//!
//! Owns the allow-list of redirect codes HAProxy's `redirect` accepts. Pure: no IO.

use std::fmt;

/// A redirect status: 301, 302, 303, 307 or 308.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RedirectCode(u16);

impl RedirectCode {
    /// DFP's default: HAProxy's own (302).
    pub const DEFAULT: RedirectCode = RedirectCode(302);

    /// Parses one of 301, 302, 303, 307, 308.
    pub fn parse(value: &str) -> Option<RedirectCode> {
        match value {
            "301" | "302" | "303" | "307" | "308" => value.parse().ok().map(RedirectCode),
            _ => None,
        }
    }

    /// The code.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for RedirectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redirect_codes() {
        for ok in ["301", "302", "303", "307", "308"] {
            assert_eq!(RedirectCode::parse(ok).unwrap().to_string(), ok);
        }
        for bad in ["", "200", "304", "300", "30", "0301", "301 ", "3O1"] {
            assert!(RedirectCode::parse(bad).is_none(), "{bad:?}");
        }
    }
}
