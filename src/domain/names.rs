//! Validated string newtypes.
//!
//! HAProxy configuration output is not escaped, so every string that may reach it is checked
//! against a small per-type alphabet. No type accepts whitespace or control characters.

use std::fmt;

/// Why a value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The value was empty where a value is required.
    #[error("{kind} must not be empty")]
    Empty {
        /// The type being validated.
        kind: &'static str,
    },
    /// The value exceeded the maximum length.
    #[error("{kind} is longer than {max} bytes")]
    TooLong {
        /// The type being validated.
        kind: &'static str,
        /// Maximum length in bytes.
        max: usize,
    },
    /// The value contained a character outside the accepted alphabet.
    #[error("{kind} contains the invalid character {ch:?} in {value:?}")]
    InvalidChar {
        /// The type being validated.
        kind: &'static str,
        /// The offending character.
        ch: char,
        /// The rejected value (debug-escaped when displayed).
        value: String,
    },
    /// The value did not start with a letter or digit.
    #[error("{kind} must start with a letter or a digit: {value:?}")]
    BadStart {
        /// The type being validated.
        kind: &'static str,
        /// The rejected value (debug-escaped when displayed).
        value: String,
    },
    /// The value contained `..`.
    #[error("{kind} must not contain \"..\": {value:?}")]
    DotDot {
        /// The type being validated.
        kind: &'static str,
        /// The rejected value (debug-escaped when displayed).
        value: String,
    },
}

fn check(
    kind: &'static str,
    value: &str,
    allow_empty: bool,
    max: usize,
    allowed: fn(char) -> bool,
) -> Result<(), ValidationError> {
    if value.is_empty() && !allow_empty {
        return Err(ValidationError::Empty { kind });
    }
    if value.len() > max {
        return Err(ValidationError::TooLong { kind, max });
    }
    if let Some(ch) = value.chars().find(|c| !allowed(*c)) {
        return Err(ValidationError::InvalidChar {
            kind,
            ch,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// `[A-Za-z0-9_.-]`
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// `[A-Za-z0-9][A-Za-z0-9._-]*` without `..`: the rule for service names, which also become
/// HAProxy backend and ACL names and Consul KV key segments.
fn check_service_name(value: &str) -> Result<(), ValidationError> {
    check("service name", value, false, 255, name_char)?;
    if let Some(first) = value.chars().next()
        && !first.is_ascii_alphanumeric()
    {
        return Err(ValidationError::BadStart {
            kind: "service name",
            value: value.to_owned(),
        });
    }
    if value.contains("..") {
        return Err(ValidationError::DotDot {
            kind: "service name",
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// `[A-Za-z0-9_.:-]`
fn id_char(c: char) -> bool {
    name_char(c) || c == ':'
}

/// `[A-Za-z0-9_-]`
fn meta_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

/// Visible ASCII (`!` to `~`) except the quoting and comment characters `"`, `'`, `` ` ``,
/// `\` and `#`.
fn free_text_char(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '`' | '\\' | '#')
}

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal, allow_empty = $empty:expr, max = $max:expr, $allowed:expr) => {
        newtype!($(#[$doc])* $name, |value: &str| check($kind, value, $empty, $max, $allowed));
    };
    ($(#[$doc:meta])* $name:ident, $checker:expr) => {
        $(#[$doc])*
        ///
        /// Shared, immutable text: a clone is a reference count, not a copy, so snapshots and
        /// plans holding thousands of names stay cheap to clone.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            /// Validates `value` against this type's alphabet.
            pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                let checker: fn(&str) -> Result<(), ValidationError> = $checker;
                checker(&value)?;
                Ok(Self(value.into()))
            }

            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValidationError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }
    };
}

newtype!(
    /// A Consul service name: `[A-Za-z0-9][A-Za-z0-9._-]*`, 1 to 255 bytes, never containing
    /// `..`. Service names become HAProxy backend and ACL names and Consul KV key segments, so
    /// `/`, `..` and a leading `_` (reserved for flow-proxy's own KV data) are refused.
    ServiceName, check_service_name
);
newtype!(
    /// A Consul node name. Accepted alphabet: `[A-Za-z0-9_.-]`, 1 to 255 bytes.
    NodeName, "node name", allow_empty = false, max = 255, name_char
);
newtype!(
    /// A service instance ID (unique per node), e.g. Registrator's `host:container:5000`.
    /// Accepted alphabet: `[A-Za-z0-9_.:-]`, 1 to 255 bytes.
    InstanceId, "instance id", allow_empty = false, max = 255, id_char
);
newtype!(
    /// A service tag, e.g. `flow-proxy.path=/demo`. Accepted alphabet: visible ASCII
    /// (`!` to `~`) except `"`, `'`, `` ` ``, `\` and `#`; 1 to 512 bytes.
    Tag, "tag", allow_empty = false, max = 512, free_text_char
);
newtype!(
    /// A service metadata key. Accepted alphabet: `[A-Za-z0-9_-]`, 1 to 128 bytes (Consul's
    /// own rule for meta keys).
    MetaKey, "meta key", allow_empty = false, max = 128, meta_key_char
);
newtype!(
    /// A service metadata value. Accepted alphabet: visible ASCII (`!` to `~`) except `"`,
    /// `'`, `` ` ``, `\` and `#`; 0 to 512 bytes (empty is allowed).
    MetaValue, "meta value", allow_empty = true, max = 512, free_text_char
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        for ok in ["go-demo", "web_1", "a.b-c", "X"] {
            assert!(ServiceName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "go demo", "go\tdemo", "go\ndemo", "a/b", "a#b", "a\"b", "a;b", "ä", "_x", ".x",
            "-x", "a..b", "..", "../etc",
        ] {
            assert!(ServiceName::new(bad).is_err(), "{bad:?}");
        }
        assert!(ServiceName::new("a".repeat(256)).is_err());
    }

    #[test]
    fn node_and_instance_ids() {
        assert!(NodeName::new("node-1.example").is_ok());
        assert!(NodeName::new("node 1").is_err());
        assert!(InstanceId::new("32a2a47f7992:nodea:5000").is_ok());
        assert!(InstanceId::new("id:udp").is_ok());
        assert!(InstanceId::new("id\r").is_err());
        assert!(InstanceId::new("a/b").is_err());
    }

    #[test]
    fn tags_allow_routing_syntax() {
        for ok in [
            "flow-proxy.path=/demo",
            "flow-proxy.servicePath=/a,/b",
            "urlprefix-/api",
            "k=v:1",
        ] {
            assert!(Tag::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a b", "a\nb", "a#b", "a\"b", "a'b", "a\\b", "a`b", "\u{7f}",
        ] {
            assert!(Tag::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn meta() {
        assert!(MetaKey::new("redis_version").is_ok());
        assert!(MetaKey::new("a.b").is_err());
        assert!(MetaValue::new("").is_ok());
        assert!(MetaValue::new("4.0").is_ok());
        assert!(MetaValue::new("4 0").is_err());
    }

    #[test]
    fn error_messages_escape_the_value() {
        let err = ServiceName::new("a\nb").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("service name contains the invalid character '\\n' in \"a\\nb\"")
        );
    }
}
