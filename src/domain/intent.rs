//! Operator intent: what a `reconfigure` call (or its copy in Consul KV) asks for.
//!
//! Owns: [`ServiceIntent`] and the one parser that builds it from Docker Flow: Proxy's query
//! parameters ([`ServiceIntent::from_params`]), the KV encoding under
//! `<instance>/<service>/<key>` ([`ServiceIntent::to_kv_pairs`], [`ServiceIntent::from_kv`],
//! which reuses the same parser), the 1.0.3 response echo ([`ReconfigureEcho`]), and the
//! validated values that may reach `haproxy.cfg` ([`PathPattern`], [`PathType`],
//! [`DomainName`], [`Color`]) or a file lookup ([`TemplatePath`]).
//!
//! Pure: no IO, no serde. Every constructor here refuses anything that could break out of a
//! configuration token: whitespace, control characters, `#`, quotes and backticks.
//!
//! Domain names: lower-cased, an optional `*.` wildcard prefix, and an optional `:port` suffix
//! which is accepted and **dropped** (routing ignores the port of the `Host` header anyway), so
//! `My-Domain.com:8080` routes exactly like `my-domain.com`.

use std::collections::BTreeMap;
use std::fmt;

use super::routing::{self, EchoValue, RoutingOptions, RoutingParams};
use super::{RedirectCode, ServiceName, ValidationError};

/// DFP's exact message for a request without enough parameters.
pub const MANDATORY_MESSAGE: &str = "The following queries are mandatory: (serviceName and servicePath) or (serviceName, consulTemplateFePath, and consulTemplateBePath)";

/// Why a set of parameters is not a valid intent. Every message names the parameter and the
/// offending value (debug-escaped), and is meant for a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntentError {
    /// The mandatory parameters are missing.
    #[error("{MANDATORY_MESSAGE}")]
    Mandatory,
    /// A parameter has an invalid value.
    #[error("invalid {param} {value:?}: {reason}")]
    Invalid {
        /// The query parameter name, e.g. `servicePath`.
        param: &'static str,
        /// The rejected value (debug-escaped when displayed).
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

fn invalid(param: &'static str, value: &str, reason: impl Into<String>) -> IntentError {
    IntentError::Invalid {
        param,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Characters never accepted in a value that may reach the configuration.
fn forbidden_in_token(c: char) -> bool {
    c.is_whitespace() || c.is_control() || !c.is_ascii() || matches!(c, '#' | '"' | '\'' | '`')
}

/// The HAProxy sample fetch used to match a path. Allow-list of DFP's `pathType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum PathType {
    /// `path`: exact match.
    Path,
    /// `path_beg`: prefix match (the default).
    #[default]
    PathBeg,
    /// `path_dir`: slash-delimited sub-path match.
    PathDir,
    /// `path_end`: suffix match.
    PathEnd,
    /// `path_reg`: PCRE regular expression.
    PathReg,
    /// `path_sub`: substring match.
    PathSub,
}

impl PathType {
    /// Every accepted value, in the order listed in error messages.
    pub const ALL: [PathType; 6] = [
        PathType::Path,
        PathType::PathBeg,
        PathType::PathDir,
        PathType::PathEnd,
        PathType::PathReg,
        PathType::PathSub,
    ];

    /// The HAProxy fetch name.
    pub fn as_str(self) -> &'static str {
        match self {
            PathType::Path => "path",
            PathType::PathBeg => "path_beg",
            PathType::PathDir => "path_dir",
            PathType::PathEnd => "path_end",
            PathType::PathReg => "path_reg",
            PathType::PathSub => "path_sub",
        }
    }

    /// Parses a `pathType` value; the empty string means the default `path_beg`.
    pub fn parse(value: &str) -> Result<Self, IntentError> {
        if value.is_empty() {
            return Ok(PathType::default());
        }
        PathType::ALL
            .into_iter()
            .find(|t| t.as_str() == value)
            .ok_or_else(|| {
                let allowed: Vec<&str> = PathType::ALL.iter().map(|t| t.as_str()).collect();
                invalid(
                    "pathType",
                    value,
                    format!("must be one of {}", allowed.join(", ")),
                )
            })
    }
}

impl fmt::Display for PathType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One path pattern of `servicePath`. Rendered inside single quotes, where HAProxy performs no
/// escaping or variable expansion, so backslashes (regular expressions) and `$` are literal.
/// Refused: empty, longer than 1024 bytes, non-ASCII, whitespace, control characters, `#`,
/// `"`, `'` and `` ` ``.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathPattern(String);

impl PathPattern {
    /// Validates one pattern; `param` names the parameter in the error.
    fn parse(param: &'static str, value: &str) -> Result<Self, IntentError> {
        if value.is_empty() {
            return Err(invalid(param, value, "empty path entry"));
        }
        if value.len() > 1024 {
            return Err(invalid(param, value, "longer than 1024 bytes"));
        }
        if let Some(c) = value.chars().find(|c| forbidden_in_token(*c)) {
            return Err(invalid(
                param,
                value,
                format!(
                    "the character {c:?} is not allowed (no whitespace, control or non-ASCII \
                     characters, '#', quotes or backticks)"
                ),
            ));
        }
        Ok(PathPattern(value.to_owned()))
    }

    /// Validates one path pattern.
    pub fn new(value: &str) -> Result<Self, IntentError> {
        Self::parse("servicePath", value)
    }

    /// The pattern.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the catch-all `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host name of `serviceDomain`: lower-cased labels of `[a-z0-9_-]` separated by single dots,
/// optionally preceded by `*.` (matches any subdomain, not the bare domain). A `:port` suffix
/// is accepted and dropped. At most 253 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName {
    host: String,
    wildcard: bool,
}

impl DomainName {
    /// Validates and normalizes one host name.
    pub fn new(value: &str) -> Result<Self, IntentError> {
        let param = "serviceDomain";
        if value.is_empty() {
            return Err(invalid(param, value, "empty domain entry"));
        }
        let lower = value.to_ascii_lowercase();
        let mut host = lower.as_str();
        if let Some((h, port)) = host.rsplit_once(':') {
            let valid_port = !port.is_empty()
                && port.len() <= 5
                && port.chars().all(|c| c.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|p| p > 0);
            if !valid_port {
                return Err(invalid(
                    param,
                    value,
                    "the port after ':' must be 1 to 65535",
                ));
            }
            host = h;
        }
        let (wildcard, rest) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if rest.is_empty() || rest.len() > 253 {
            return Err(invalid(
                param,
                value,
                "must be a host name of 1 to 253 bytes",
            ));
        }
        for label in rest.split('.') {
            if label.is_empty() {
                return Err(invalid(
                    param,
                    value,
                    "empty label (leading, trailing or '..')",
                ));
            }
            if label.len() > 63 {
                return Err(invalid(param, value, "a label is longer than 63 bytes"));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
            {
                return Err(invalid(
                    param,
                    value,
                    format!(
                        "the character {c:?} is not allowed (letters, digits, '-', '_' and '.', \
                         optionally starting with '*.')"
                    ),
                ));
            }
        }
        Ok(DomainName {
            host: rest.to_owned(),
            wildcard,
        })
    }

    /// True for `*.example.com`.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The host without the wildcard prefix, e.g. `example.com`.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)
    }
}

/// A `serviceColor`: `[A-Za-z0-9_-]`, 1 to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Color(String);

impl Color {
    /// Validates a color.
    pub fn new(value: &str) -> Result<Self, IntentError> {
        if value.is_empty() || value.len() > 64 {
            return Err(invalid("serviceColor", value, "must be 1 to 64 bytes"));
        }
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return Err(invalid(
                "serviceColor",
                value,
                format!("the character {c:?} is not allowed (letters, digits, '-' and '_')"),
            ));
        }
        Ok(Color(value.to_owned()))
    }

    /// The color.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A custom template path as given (`consulTemplatePath`, `consulTemplateFePath`,
/// `consulTemplateBePath`): relative or absolute, 1 to 4096 bytes, no control characters and no
/// `..` component. Resolving it under the templates root is the caller's job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TemplatePath(String);

impl TemplatePath {
    fn parse(param: &'static str, value: &str) -> Result<Self, IntentError> {
        if value.len() > 4096 {
            return Err(invalid(param, value, "longer than 4096 bytes"));
        }
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            return Err(invalid(
                param,
                value,
                format!("the control character {c:?} is not allowed"),
            ));
        }
        if value.split('/').any(|seg| seg == "..") {
            return Err(invalid(
                param,
                value,
                "'..' path components are not allowed",
            ));
        }
        Ok(TemplatePath(value.to_owned()))
    }

    /// The path as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The parameters exactly as received (after URL decoding), kept for the response echo and
/// the KV encoding. Only ever built together with a successful validation, or by
/// [`ReconfigureEcho::from_params`] for error answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawParams {
    /// `serviceName`.
    pub service_name: String,
    /// `serviceColor`.
    pub service_color: String,
    /// `servicePath`, `None` when absent (or empty).
    pub service_path: Option<String>,
    /// `serviceDomain`.
    pub service_domain: String,
    /// `pathType`.
    pub path_type: String,
    /// `skipCheck`, as given (normalized to `true`/`false` in a validated intent).
    pub skip_check: String,
    /// `consulTemplatePath`.
    pub consul_template_path: String,
    /// `consulTemplateFePath`.
    pub consul_template_fe_path: String,
    /// `consulTemplateBePath`.
    pub consul_template_be_path: String,
    /// `httpsOnly` and `httpsRedirectCode`, as given (`httpsOnly` normalized when valid).
    pub https_only: String,
    /// `httpsRedirectCode`.
    pub https_redirect_code: String,
    /// The routing parameters of later DFP versions (`users`, `reqMode`, ...).
    pub routing: RoutingParams,
}

impl RawParams {
    /// Picks the known parameters out of a query map; unknown ones are ignored, as DFP did.
    pub fn from_params(params: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| params.get(k).cloned().unwrap_or_default();
        RawParams {
            service_name: get("serviceName"),
            service_color: get("serviceColor"),
            service_path: params.get("servicePath").filter(|p| !p.is_empty()).cloned(),
            service_domain: get("serviceDomain"),
            path_type: get("pathType"),
            skip_check: get("skipCheck"),
            consul_template_path: get("consulTemplatePath"),
            consul_template_fe_path: get("consulTemplateFePath"),
            consul_template_be_path: get("consulTemplateBePath"),
            https_only: get("httpsOnly"),
            https_redirect_code: get("httpsRedirectCode"),
            routing: RoutingParams::from_params(params),
        }
    }
}

/// Custom templates named by the intent. When present, the service's frontend and backend come
/// from these files instead of the built-in routing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CustomTemplates {
    /// `consulTemplatePath` (DFP 1.0): one file holding a whole frontend and backend.
    Whole(TemplatePath),
    /// `consulTemplateFePath` and `consulTemplateBePath` (DFP 1.0.1 and later).
    Split {
        /// The frontend snippet (ACL and `use_backend` lines).
        fe: TemplatePath,
        /// The backend section.
        be: TemplatePath,
    },
}

/// One validated service intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIntent {
    /// The service name: the backend is `<name>-be`.
    pub name: ServiceName,
    /// The color, if any.
    pub color: Option<Color>,
    /// The Consul service whose instances feed the backend: `<name>` or `<name>-<color>`.
    pub catalog_service: ServiceName,
    /// Path patterns, sorted and without duplicates; empty for template-only services.
    pub paths: Vec<PathPattern>,
    /// Host names, sorted and without duplicates; empty means any host.
    pub domains: Vec<DomainName>,
    /// The path matcher.
    pub path_type: PathType,
    /// Leave `check` off the server lines.
    pub skip_check: bool,
    /// Custom templates, when the intent names them.
    pub templates: Option<CustomTemplates>,
    /// `httpsOnly`: plain HTTP requests routed here are redirected to HTTPS with this code.
    pub https_redirect: Option<RedirectCode>,
    /// Rewrites, auth, stickiness, headers, timeouts, TCP/SNI mode.
    pub routing: RoutingOptions,
    /// The parameters as received, for the echo and the KV encoding.
    pub raw: RawParams,
}

/// The KV key suffixes, in the order they are written.
pub const KV_KEYS: [&str; 10] = [
    "path",
    "color",
    "domain",
    "pathtype",
    "skipcheck",
    "consultemplatepath",
    "consultemplatefepath",
    "consultemplatebepath",
    "httpsonly",
    "httpsredirectcode",
];

/// Strict boolean: `true`/`false` (any ASCII case), `1`/`0`; empty means false.
fn parse_bool(param: &'static str, value: &str) -> Result<bool, IntentError> {
    match value.to_ascii_lowercase().as_str() {
        "" | "false" | "0" => Ok(false),
        "true" | "1" => Ok(true),
        _ => Err(invalid(param, value, "must be true, false, 1 or 0")),
    }
}

fn parse_template(param: &'static str, value: &str) -> Result<Option<TemplatePath>, IntentError> {
    if value.is_empty() {
        Ok(None)
    } else {
        TemplatePath::parse(param, value).map(Some)
    }
}

impl ServiceIntent {
    /// Whether HAProxy may refuse this service's configuration although every value in it
    /// passed validation here: it holds text that HAProxy parses by rules of its own (PCRE
    /// regular expressions of `path_reg` paths and of path rewrites, crypt(3) password hashes)
    /// or custom templates (text read from files). Any other service is rendered from fixed
    /// keywords and literal values HAProxy takes as they are, so a configuration that adds or
    /// changes only such services needs no `haproxy -c` before its reload: the master's own
    /// parse at reload checks it, confirmed through `show proc`, and a refusal is rolled back.
    pub fn haproxy_may_refuse(&self) -> bool {
        self.templates.is_some()
            || self.path_type == PathType::PathReg
            || !self.routing.path_rewrites.is_empty()
            || self.routing.users.as_ref().is_some_and(|u| u.encrypted)
    }

    /// Parses DFP's `reconfigure` query parameters (first value of each, URL-decoded).
    ///
    /// Valid when `serviceName` is set and either `servicePath`, or `consulTemplatePath`, or
    /// both `consulTemplateFePath` and `consulTemplateBePath` are set; otherwise
    /// [`IntentError::Mandatory`] with DFP's exact message. Unknown parameters are ignored.
    pub fn from_params(params: &BTreeMap<String, String>) -> Result<ServiceIntent, IntentError> {
        Self::from_raw(RawParams::from_params(params))
    }

    /// Validates raw parameters; the single validation path of the API and of KV recovery.
    pub fn from_raw(raw: RawParams) -> Result<ServiceIntent, IntentError> {
        let whole = parse_template("consulTemplatePath", &raw.consul_template_path)?;
        let fe = parse_template("consulTemplateFePath", &raw.consul_template_fe_path)?;
        let be = parse_template("consulTemplateBePath", &raw.consul_template_be_path)?;
        if raw.service_name.is_empty() {
            return Err(IntentError::Mandatory);
        }
        let templates = match (whole, fe, be) {
            (_, Some(fe), Some(be)) => Some(CustomTemplates::Split { fe, be }),
            (Some(w), _, _) => Some(CustomTemplates::Whole(w)),
            _ => None,
        };
        if raw.service_path.is_none() && templates.is_none() && !routing::wants_tcp(&raw.routing) {
            return Err(IntentError::Mandatory);
        }
        let name = ServiceName::new(raw.service_name.as_str())
            .map_err(|e| invalid("serviceName", &raw.service_name, name_reason(&e)))?;
        let color = if raw.service_color.is_empty() {
            None
        } else {
            Some(Color::new(&raw.service_color)?)
        };
        let catalog_service = match &color {
            None => name.clone(),
            Some(c) => ServiceName::new(format!("{name}-{}", c.as_str()))
                .map_err(|e| invalid("serviceColor", &raw.service_color, name_reason(&e)))?,
        };
        let mut paths = match &raw.service_path {
            Some(p) => p
                .split(',')
                .map(|entry| PathPattern::parse("servicePath", entry))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        paths.sort();
        paths.dedup();
        let mut domains = if raw.service_domain.is_empty() {
            Vec::new()
        } else {
            raw.service_domain
                .split(',')
                .map(DomainName::new)
                .collect::<Result<Vec<_>, _>>()?
        };
        domains.sort();
        domains.dedup();
        let path_type = PathType::parse(&raw.path_type)?;
        let skip_check = parse_bool("skipCheck", &raw.skip_check)?;
        let https_only = parse_bool("httpsOnly", &raw.https_only)?;
        let code = match raw.https_redirect_code.as_str() {
            "" => RedirectCode::DEFAULT,
            c => RedirectCode::parse(c).ok_or_else(|| {
                invalid("httpsRedirectCode", c, "must be 301, 302, 303, 307 or 308")
            })?,
        };
        let routing_options = RoutingOptions::parse(&raw.routing, &domains)?;
        if templates.is_some() {
            routing::refuse_with_templates(&raw.routing)?;
        }
        // Normalized, so that an intent read back from KV equals the one that was written.
        let mut raw = RawParams {
            skip_check: skip_check.to_string(),
            https_only: https_only.to_string(),
            ..raw
        };
        routing::normalize(&mut raw.routing, &routing_options);
        Ok(ServiceIntent {
            name,
            color,
            catalog_service,
            paths,
            domains,
            path_type,
            skip_check,
            templates,
            https_redirect: https_only.then_some(code),
            routing: routing_options,
            raw,
        })
    }

    /// The KV pairs to write under `<instance>/<service>/`: every key of [`KV_KEYS`], in that
    /// order, with the raw request values (empty values included; `skipcheck` is `true` or
    /// `false`).
    pub fn to_kv_pairs(&self) -> Vec<(String, String)> {
        let r = &self.raw;
        let values = [
            r.service_path.clone().unwrap_or_default(),
            r.service_color.clone(),
            r.service_domain.clone(),
            r.path_type.clone(),
            self.skip_check.to_string(),
            r.consul_template_path.clone(),
            r.consul_template_fe_path.clone(),
            r.consul_template_be_path.clone(),
            r.https_only.clone(),
            r.https_redirect_code.clone(),
        ];
        let mut pairs: Vec<(String, String)> = KV_KEYS
            .iter()
            .zip(values)
            .map(|(k, v)| ((*k).to_owned(), v))
            .collect();
        pairs.extend(self.raw.routing.kv_pairs());
        pairs
    }

    /// Rebuilds an intent from the KV values of one service (`key suffix → value`; missing
    /// keys count as empty, unknown keys are ignored), through the same validation as the API.
    pub fn from_kv(
        name: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<ServiceIntent, IntentError> {
        let get = |k: &str| values.get(k).cloned().unwrap_or_default();
        let raw = RawParams {
            service_name: name.to_owned(),
            service_color: get("color"),
            service_path: values.get("path").filter(|p| !p.is_empty()).cloned(),
            service_domain: get("domain"),
            path_type: get("pathtype"),
            skip_check: get("skipcheck"),
            consul_template_path: get("consultemplatepath"),
            consul_template_fe_path: get("consultemplatefepath"),
            consul_template_be_path: get("consultemplatebepath"),
            https_only: get("httpsonly"),
            https_redirect_code: get("httpsredirectcode"),
            routing: RoutingParams::from_kv(values),
        };
        Self::from_raw(raw)
    }
}

fn name_reason(e: &ValidationError) -> String {
    match e {
        ValidationError::Empty { .. } => "must not be empty".to_owned(),
        ValidationError::TooLong { max, .. } => format!("is longer than {max} bytes"),
        ValidationError::InvalidChar { ch, .. } => format!(
            "the character {ch:?} is not allowed (service names are \
             [A-Za-z0-9][A-Za-z0-9._-]* without '..')"
        ),
        ValidationError::BadStart { .. } => "must start with a letter or a digit".to_owned(),
        ValidationError::DotDot { .. } => "must not contain \"..\"".to_owned(),
    }
}

/// The body of a `reconfigure` answer, DFP 1.0.3's fields in their order. Plain values: the
/// API layer serializes them (`service_path: None` is JSON `null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconfigureEcho {
    /// `Status`: `OK` or `NOK`.
    pub status: String,
    /// `Message`.
    pub message: String,
    /// `ServiceName`.
    pub service_name: String,
    /// `ServiceColor`.
    pub service_color: String,
    /// `ServicePath`: the raw value split on `,`, `None` when absent.
    pub service_path: Option<Vec<String>>,
    /// `ServiceDomain`.
    pub service_domain: String,
    /// `ConsulTemplateFePath`.
    pub consul_template_fe_path: String,
    /// `ConsulTemplateBePath`.
    pub consul_template_be_path: String,
    /// `PathType`, as given (`""` when defaulted).
    pub path_type: String,
    /// `SkipCheck`.
    pub skip_check: bool,
    /// `HttpsOnly`.
    pub https_only: bool,
    /// `HttpsRedirectCode`, as given.
    pub https_redirect_code: String,
    /// The routing parameters that were given, DFP's field names (after `SkipCheck`).
    pub routing: Vec<(&'static str, EchoValue)>,
}

impl ReconfigureEcho {
    /// The echo of a request, valid or not (an unparsable `skipCheck` echoes `false`).
    pub fn from_raw(raw: &RawParams, status: &str, message: &str) -> Self {
        ReconfigureEcho {
            status: status.to_owned(),
            message: message.to_owned(),
            service_name: raw.service_name.clone(),
            service_color: raw.service_color.clone(),
            service_path: raw
                .service_path
                .as_ref()
                .map(|p| p.split(',').map(str::to_owned).collect()),
            service_domain: raw.service_domain.clone(),
            consul_template_fe_path: raw.consul_template_fe_path.clone(),
            consul_template_be_path: raw.consul_template_be_path.clone(),
            path_type: raw.path_type.clone(),
            skip_check: parse_bool("skipCheck", &raw.skip_check).unwrap_or(false),
            https_only: parse_bool("httpsOnly", &raw.https_only).unwrap_or(false),
            https_redirect_code: raw.https_redirect_code.clone(),
            routing: routing::routing_echo(&raw.routing),
        }
    }

    /// The echo of request parameters, valid or not.
    pub fn from_params(params: &BTreeMap<String, String>, status: &str, message: &str) -> Self {
        Self::from_raw(&RawParams::from_params(params), status, message)
    }

    /// The success echo of a valid intent.
    pub fn ok(intent: &ServiceIntent) -> Self {
        Self::from_raw(&intent.raw, "OK", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<ServiceIntent, IntentError> {
        ServiceIntent::from_params(&params(pairs))
    }

    #[test]
    fn only_values_haproxy_parses_itself_may_be_refused() {
        let base = [("serviceName", "web"), ("servicePath", "/web")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            parse(&pairs).unwrap().haproxy_may_refuse()
        };
        assert!(!with(&[]));
        assert!(!with(&[
            ("serviceDomain", "a.com,*.b.org"),
            ("pathType", "path_end"),
            ("addReqHeader", "X-A 1"),
            ("users", "u:p"),
            ("sessionType", "sticky-server"),
        ]));
        assert!(with(&[("pathType", "path_reg")]));
        assert!(with(&[("reqPathSearchReplace", "/web,/")]));
        assert!(with(&[
            ("users", "u:$6$salt$hash"),
            ("usersPassEncrypted", "true")
        ]));
        assert!(
            parse(&[("serviceName", "t"), ("consulTemplatePath", "/t.ctmpl")])
                .unwrap()
                .haproxy_may_refuse()
        );
    }

    #[test]
    fn go_demo() {
        let i = parse(&[("serviceName", "go-demo"), ("servicePath", "/demo")]).unwrap();
        assert_eq!(i.name.as_str(), "go-demo");
        assert_eq!(i.catalog_service.as_str(), "go-demo");
        assert_eq!(i.paths, vec![PathPattern::new("/demo").unwrap()]);
        assert_eq!(i.path_type, PathType::PathBeg);
        assert!(!i.skip_check);
        assert!(i.templates.is_none());
        let echo = ReconfigureEcho::ok(&i);
        assert_eq!(echo.service_path, Some(vec!["/demo".to_owned()]));
        assert_eq!(echo.path_type, "");
        assert_eq!(echo.status, "OK");
    }

    #[test]
    fn mandatory_parameters() {
        for bad in [
            &[][..],
            &[("serviceName", "x")][..],
            &[("servicePath", "/x")][..],
            &[("serviceName", "x"), ("servicePath", "")][..],
            &[("serviceName", "x"), ("consulTemplateFePath", "/t/fe")][..],
            &[("serviceName", "x"), ("consulTemplateBePath", "/t/be")][..],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err, IntentError::Mandatory, "{bad:?}");
            assert_eq!(err.to_string(), MANDATORY_MESSAGE);
        }
        let split = parse(&[
            ("serviceName", "x"),
            ("consulTemplateFePath", "/t/fe"),
            ("consulTemplateBePath", "/t/be"),
        ])
        .unwrap();
        assert!(matches!(
            split.templates,
            Some(CustomTemplates::Split { .. })
        ));
        assert!(split.paths.is_empty());
        let whole = parse(&[("serviceName", "x"), ("consulTemplatePath", "/t/x.tmpl")]).unwrap();
        assert!(matches!(whole.templates, Some(CustomTemplates::Whole(_))));
    }

    #[test]
    fn paths_and_types() {
        let i = parse(&[
            ("serviceName", "s"),
            ("servicePath", "/demo/person,/demo/hello,/demo/hello"),
            ("pathType", "path_reg"),
        ])
        .unwrap();
        assert_eq!(
            i.paths.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            ["/demo/hello", "/demo/person"]
        );
        assert_eq!(i.path_type, PathType::PathReg);
        assert!(parse(&[("serviceName", "s"), ("servicePath", r"^/v[0-9]+/\d")]).is_ok());
        for t in [
            "path", "path_beg", "path_dir", "path_end", "path_reg", "path_sub",
        ] {
            assert!(parse(&[("serviceName", "s"), ("servicePath", "/"), ("pathType", t)]).is_ok());
        }
        let err = parse(&[
            ("serviceName", "s"),
            ("servicePath", "/"),
            ("pathType", "hdr_dom"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid pathType \"hdr_dom\": must be one of path, path_beg, path_dir, path_end, \
             path_reg, path_sub"
        );
        for bad in [
            ",/a", "/a,", "/a,,/b", "/a b", "/a\nb", "/a#b", "/a'b", "/a\"b", "/a`b", "/ä", "/a\tb",
        ] {
            let err = parse(&[("serviceName", "s"), ("servicePath", bad)]).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid servicePath"),
                "{bad:?}: {err}"
            );
        }
        let err = parse(&[("serviceName", "s"), ("servicePath", "/a\nuse_backend x")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid servicePath \"/a\\nuse_backend x\": the character '\\n' is not allowed (no \
             whitespace, control or non-ASCII characters, '#', quotes or backticks)"
        );
    }

    #[test]
    fn service_names() {
        for bad in ["a/b", "..", "a..b", "_x", "a b", "a\n"] {
            let err = parse(&[("serviceName", bad), ("servicePath", "/")]).unwrap_err();
            assert!(err.to_string().starts_with("invalid serviceName"), "{err}");
        }
    }

    #[test]
    fn domains() {
        let i = parse(&[
            ("serviceName", "s"),
            ("servicePath", "/"),
            (
                "serviceDomain",
                "My-Domain.com:8080,*.Example.com,my-domain.com",
            ),
        ])
        .unwrap();
        let shown: Vec<String> = i.domains.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["*.example.com", "my-domain.com"]);
        assert!(i.domains[0].is_wildcard());
        assert_eq!(i.domains[0].host(), "example.com");
        for bad in [
            "a b", "a..b", ".a", "a.", "*.", "*", "a.*.b", "a:0", "a:x", "a:70000", "a/b", "a#b",
            "[::1]", "a,", "a\n",
        ] {
            let err = parse(&[
                ("serviceName", "s"),
                ("servicePath", "/"),
                ("serviceDomain", bad),
            ])
            .unwrap_err();
            assert!(
                err.to_string().starts_with("invalid serviceDomain"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn colors_and_skip_check() {
        let i = parse(&[
            ("serviceName", "go-demo"),
            ("servicePath", "/"),
            ("serviceColor", "blue"),
            ("skipCheck", "TRUE"),
        ])
        .unwrap();
        assert_eq!(i.catalog_service.as_str(), "go-demo-blue");
        assert!(i.skip_check);
        for (v, want) in [("true", true), ("1", true), ("false", false), ("0", false)] {
            let i = parse(&[("serviceName", "s"), ("servicePath", "/"), ("skipCheck", v)]).unwrap();
            assert_eq!(i.skip_check, want);
        }
        for bad in ["yes", "t", "2", " true"] {
            let err = parse(&[
                ("serviceName", "s"),
                ("servicePath", "/"),
                ("skipCheck", bad),
            ])
            .unwrap_err();
            assert!(err.to_string().starts_with("invalid skipCheck"), "{err}");
        }
        for bad in ["bl ue", "a.b", "x/y"] {
            let err = parse(&[
                ("serviceName", "s"),
                ("servicePath", "/"),
                ("serviceColor", bad),
            ])
            .unwrap_err();
            assert!(err.to_string().starts_with("invalid serviceColor"), "{err}");
        }
    }

    #[test]
    fn template_paths() {
        assert!(parse(&[("serviceName", "s"), ("consulTemplatePath", "tmpl/x.tmpl")]).is_ok());
        for bad in ["../x", "/a/../b", "/a\0b", "/a\nb"] {
            let err = parse(&[("serviceName", "s"), ("consulTemplatePath", bad)]).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid consulTemplatePath"),
                "{err}"
            );
        }
    }

    #[test]
    fn kv_round_trip() {
        let i = parse(&[
            ("serviceName", "go-demo"),
            ("servicePath", "/demo/hello,/demo/person"),
            ("serviceDomain", "My-Domain.com"),
            ("serviceColor", "blue"),
            ("skipCheck", "1"),
            ("pathType", "path_beg"),
            ("ignored", "x"),
        ])
        .unwrap();
        let pairs = i.to_kv_pairs();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys[..KV_KEYS.len()], KV_KEYS);
        let map: BTreeMap<String, String> = pairs.into_iter().collect();
        assert_eq!(map["path"], "/demo/hello,/demo/person");
        assert_eq!(map["domain"], "My-Domain.com");
        assert_eq!(map["skipcheck"], "true");
        assert_eq!(map["consultemplatefepath"], "");
        let back = ServiceIntent::from_kv("go-demo", &map).unwrap();
        assert_eq!(back.name, i.name);
        assert_eq!(back.paths, i.paths);
        assert_eq!(back.domains, i.domains);
        assert_eq!(back.color, i.color);
        assert_eq!(back.skip_check, i.skip_check);
        assert_eq!(back.to_kv_pairs(), i.to_kv_pairs());
        assert_eq!(back, i);
        // A KV value that the API would refuse is refused on the way back too.
        let mut bad = map.clone();
        bad.insert("path".into(), "/a\n#".into());
        assert!(ServiceIntent::from_kv("go-demo", &bad).is_err());
        assert!(ServiceIntent::from_kv("../x", &map).is_err());
    }

    #[test]
    fn echo_of_invalid_request() {
        let p = params(&[("serviceName", "x"), ("skipCheck", "maybe")]);
        let echo = ReconfigureEcho::from_params(&p, "NOK", MANDATORY_MESSAGE);
        assert_eq!(echo.service_path, None);
        assert!(!echo.skip_check);
        assert_eq!(echo.status, "NOK");
    }
}
