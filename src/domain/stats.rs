//! HAProxy's statistics page: its credentials (`STATS_USER`, `STATS_PASS`) and the `defaults`
//! lines that serve it at DFP's `/admin?stats`.
//!
//! The page exists only when both credentials are set: DFP's old `admin:admin` default let
//! anyone read it. Both values reach `haproxy.cfg`, so they are validated here to stay one
//! token: no whitespace, control or non-ASCII characters, no `#`, quotes, backticks or
//! backslashes, and no `:` in the user name (it separates the user from the password).
//!
//! Pure: no IO.

use std::fmt;

/// Longest accepted user name or password.
pub const MAX_STATS_CREDENTIAL: usize = 256;

/// DFP's statistics URI.
pub const STATS_URI: &str = "/admin?stats";

/// Why the statistics settings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// Only one of the two settings is set.
    #[error("STATS_USER and STATS_PASS must be set together (or both left unset)")]
    Incomplete,
    /// A value has a character that cannot appear in the configuration, or is empty or long.
    #[error("{setting} {reason}")]
    Invalid {
        /// `STATS_USER` or `STATS_PASS`.
        setting: &'static str,
        /// What is wrong (the value itself is not repeated: it may be a secret).
        reason: &'static str,
    },
}

/// Validated credentials of the statistics page.
#[derive(Clone, PartialEq, Eq)]
pub struct StatsPage {
    user: String,
    pass: String,
}

impl fmt::Debug for StatsPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsPage")
            .field("user", &self.user)
            .field("pass", &"<set>")
            .finish()
    }
}

fn check(setting: &'static str, value: &str, colon_ok: bool) -> Result<(), StatsError> {
    let invalid = |reason| Err(StatsError::Invalid { setting, reason });
    if value.is_empty() {
        return invalid("is empty");
    }
    if value.len() > MAX_STATS_CREDENTIAL {
        return invalid("is longer than 256 bytes");
    }
    if value.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || !c.is_ascii()
            || matches!(c, '#' | '"' | '\'' | '`' | '\\')
            || (c == ':' && !colon_ok)
    }) {
        return invalid(
            "may only hold printable ASCII without spaces, #, quotes, backticks or backslashes \
             (and no : in the user name)",
        );
    }
    Ok(())
}

impl StatsPage {
    /// Validated credentials.
    pub fn new(user: &str, pass: &str) -> Result<Self, StatsError> {
        check("STATS_USER", user, false)?;
        check("STATS_PASS", pass, true)?;
        Ok(StatsPage {
            user: user.to_owned(),
            pass: pass.to_owned(),
        })
    }

    /// From the two optional settings: `None` (no page) when both are unset or empty.
    pub fn from_settings(
        user: Option<&str>,
        pass: Option<&str>,
    ) -> Result<Option<Self>, StatsError> {
        let user = user.filter(|u| !u.is_empty());
        let pass = pass.filter(|p| !p.is_empty());
        match (user, pass) {
            (None, None) => Ok(None),
            (Some(u), Some(p)) => Self::new(u, p).map(Some),
            _ => Err(StatsError::Incomplete),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Lines for the `defaults` section (indented, each ending with `\n`), as DFP's template.
    pub fn defaults_lines(&self) -> String {
        format!(
            "    stats enable\n    stats refresh 30s\n    stats realm Strictly\\ Private\n    \
             stats auth {}:{}\n    stats uri {STATS_URI}\n",
            self.user, self.pass
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_or_none() {
        assert_eq!(StatsPage::from_settings(None, None), Ok(None));
        assert_eq!(StatsPage::from_settings(Some(""), Some("")), Ok(None));
        assert_eq!(
            StatsPage::from_settings(Some("admin"), None),
            Err(StatsError::Incomplete)
        );
        assert_eq!(
            StatsPage::from_settings(None, Some("pw")),
            Err(StatsError::Incomplete)
        );
        let page = StatsPage::from_settings(Some("ops"), Some("p:w$1"))
            .unwrap()
            .unwrap();
        assert_eq!(
            page.defaults_lines(),
            "    stats enable\n    stats refresh 30s\n    stats realm Strictly\\ Private\n    \
             stats auth ops:p:w$1\n    stats uri /admin?stats\n"
        );
        assert!(!format!("{page:?}").contains("p:w$1"));
    }

    #[test]
    fn values_stay_one_token() {
        for bad in [
            "a b", "a\nb", "a#b", "a\"b", "a'b", "a\\b", "a`b", "é", "a\tb", "",
        ] {
            assert!(StatsPage::new("ops", bad).is_err(), "{bad:?}");
            assert!(StatsPage::new(bad, "pw").is_err(), "{bad:?}");
        }
        assert!(StatsPage::new("a:b", "pw").is_err());
        assert!(StatsPage::new("ops", &"x".repeat(257)).is_err());
    }
}
