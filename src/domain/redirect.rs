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

#[cfg(test)]
mod intent_tests {
    use std::collections::BTreeMap;

    use super::RedirectCode;
    use crate::domain::ServiceIntent;

    fn parse(pairs: &[(&str, &str)]) -> Result<ServiceIntent, crate::domain::IntentError> {
        let map: BTreeMap<String, String> = [("serviceName", "web"), ("servicePath", "/")]
            .iter()
            .chain(pairs)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ServiceIntent::from_params(&map)
    }

    #[test]
    fn https_only_with_its_code_round_trips_through_kv() {
        assert_eq!(parse(&[]).unwrap().https_redirect, None);
        let i = parse(&[("httpsOnly", "true")]).unwrap();
        assert_eq!(i.https_redirect, Some(RedirectCode::DEFAULT));
        let i = parse(&[("httpsOnly", "TRUE"), ("httpsRedirectCode", "301")]).unwrap();
        assert_eq!(i.https_redirect.map(RedirectCode::get), Some(301));
        let kv: BTreeMap<String, String> = i.to_kv_pairs().into_iter().collect();
        assert_eq!(kv["httpsonly"], "true");
        assert_eq!(kv["httpsredirectcode"], "301");
        assert_eq!(ServiceIntent::from_kv("web", &kv).unwrap(), i);
        // A code without httpsOnly is kept but redirects nothing.
        let i = parse(&[("httpsRedirectCode", "308")]).unwrap();
        assert_eq!(i.https_redirect, None);
    }

    #[test]
    fn bad_values_are_refused_with_the_parameter_name() {
        let e = parse(&[("httpsOnly", "yes")]).unwrap_err().to_string();
        assert!(e.contains("httpsOnly"), "{e}");
        let e = parse(&[("httpsOnly", "true"), ("httpsRedirectCode", "200")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("httpsRedirectCode") && e.contains("301"), "{e}");
    }
}
