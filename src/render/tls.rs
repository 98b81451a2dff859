//! How the HTTPS bind of the shared frontend terminates TLS.
//!
//! Owns: the validated path of the certificate list HAProxy reads (`crt-list`) and the text of
//! the `ssl` bind options. Pure: no IO; the file itself is written by `certs`.

use std::fmt;

/// An absolute file path safe to write into the configuration: starts with `/`, at most 1024
/// bytes, `[A-Za-z0-9/._-]` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFilePath(String);

/// A rejected [`ConfigFilePath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid file path {0:?} for haproxy.cfg: must be absolute, at most 1024 bytes, [A-Za-z0-9/._-]"
)]
pub struct ConfigFilePathError(pub String);

impl ConfigFilePath {
    /// Validates a path.
    pub fn new(path: &str) -> Result<Self, ConfigFilePathError> {
        let ok = path.starts_with('/')
            && path.len() <= 1024
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
        if ok {
            Ok(ConfigFilePath(path.to_owned()))
        } else {
            Err(ConfigFilePathError(path.to_owned()))
        }
    }

    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigFilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// TLS termination on `HTTPS_PORT`: the certificates are listed in `crt_list`, the first line
/// being the default certificate (served when no SNI name matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsBind {
    /// The `crt-list` file.
    pub crt_list: ConfigFilePath,
}

impl TlsBind {
    /// The options appended to the HTTPS `bind` line: HTTP/2 and HTTP/1.1 through ALPN.
    pub fn bind_options(&self) -> String {
        format!("ssl crt-list {} alpn h2,http/1.1", self.crt_list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(ConfigFilePath::new("/var/lib/flow-proxy/tls/crt-list").is_ok());
        for bad in ["relative/x", "/a b", "/a\nb", "/a'b", "/a#b", ""] {
            assert!(ConfigFilePath::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bind_options() {
        let tls = TlsBind {
            crt_list: ConfigFilePath::new("/d/tls/crt-list").unwrap(),
        };
        assert_eq!(
            tls.bind_options(),
            "ssl crt-list /d/tls/crt-list alpn h2,http/1.1"
        );
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;
    use crate::plan::test_support::*;
    use crate::plan::{PlanSettings, SlotTable, plan};
    use crate::render::{RenderSettings, render};

    #[test]
    fn https_bind_and_redirects_are_rendered() {
        let ints = intents(vec![
            intent(&[
                ("serviceName", "secure"),
                ("servicePath", "/s"),
                ("httpsOnly", "true"),
                ("httpsRedirectCode", "301"),
            ]),
            intent(&[("serviceName", "plain"), ("servicePath", "/p")]),
        ]);
        let p = plan(
            &ints,
            &crate::domain::CatalogSnapshot::new(),
            &SlotTable::default(),
            &PlanSettings::default(),
        );
        let settings = RenderSettings {
            https_port: Some(8443),
            tls: Some(TlsBind {
                crt_list: ConfigFilePath::new("/d/tls/crt-list").unwrap(),
            }),
            ..RenderSettings::for_tests()
        };
        let text = render(&p, &settings).unwrap().into_string();
        assert!(
            text.contains("    bind 0.0.0.0:8443 ssl crt-list /d/tls/crt-list alpn h2,http/1.1\n"),
            "{text}"
        );
        assert!(text.contains(
            "backend secure-be\n    http-request redirect location https://%[req.hdr(host),field(1,:)]:8443%[pathq] code 301 if !{ ssl_fc }\n"
        ), "{text}");
        assert_eq!(text.matches("redirect location").count(), 1, "{text}");
        let standard = RenderSettings {
            https_port: Some(443),
            ..settings
        };
        let text = render(&p, &standard).unwrap().into_string();
        assert!(
            text.contains("redirect location https://%[req.hdr(host),field(1,:)]%[pathq] code 301"),
            "{text}"
        );
        let plain = RenderSettings::for_tests();
        let text = render(&p, &plain).unwrap().into_string();
        assert!(text.contains("    bind 0.0.0.0:443\n"), "{text}");
    }
}
