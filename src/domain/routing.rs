//! Per-service routing parameters of later Docker Flow: Proxy versions: path rewriting
//! (`reqPathSearchReplace`, `reqPathSearch`/`reqPathReplace`), basic auth (`users`,
//! `usersPassEncrypted`), sticky sessions (`sessionType`), header rules
//! (`addReqHeader`, `setReqHeader`, `delReqHeader` and the `Res` variants), `redirectFromDomain`,
//! `serviceHeader`, `timeoutServer`, `timeoutTunnel`, `isDefaultBackend`, and TCP services
//! (`reqMode=tcp|sni` with `srcPort`).
//!
//! Owns: the raw values of these parameters ([`RoutingParams`]: query parameter ↔ KV key, the
//! KV keys being the lower-cased parameter names, written only when set), their validation
//! into [`RoutingOptions`], the checks that involve other services ([`check_conflicts`]), the
//! echo of the parameters in the `reconfigure` answer ([`routing_echo`]) and the sticky-session
//! key ([`StickyKey`]).
//!
//! Pure: no IO, no serde. Every value that can reach `haproxy.cfg` is a validated newtype whose
//! `Display` is safe to write as one configuration word: regular expressions, replacements,
//! passwords, header values and header patterns are rendered inside single quotes (where
//! HAProxy neither unescapes nor expands anything) and can contain no quote, backslash, `#`,
//! control or non-ASCII character; `%` (HAProxy's log-format expressions, which could read
//! environment variables) is refused wherever the value is a format string.

use std::collections::BTreeMap;
use std::fmt;

use super::{DomainName, IntentError, ServiceIntent};

fn invalid(param: &'static str, value: &str, reason: impl Into<String>) -> IntentError {
    IntentError::Invalid {
        param,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// The parameters this module owns, with their KV key, in the order they are written and
/// echoed.
pub const ROUTING_PARAMS: [(&str, &str); 19] = [
    ("reqPathSearchReplace", "reqpathsearchreplace"),
    ("reqPathSearch", "reqpathsearch"),
    ("reqPathReplace", "reqpathreplace"),
    ("users", "users"),
    ("usersPassEncrypted", "userspassencrypted"),
    ("sessionType", "sessiontype"),
    ("addReqHeader", "addreqheader"),
    ("setReqHeader", "setreqheader"),
    ("delReqHeader", "delreqheader"),
    ("addResHeader", "addresheader"),
    ("setResHeader", "setresheader"),
    ("delResHeader", "delresheader"),
    ("redirectFromDomain", "redirectfromdomain"),
    ("serviceHeader", "serviceheader"),
    ("timeoutServer", "timeoutserver"),
    ("timeoutTunnel", "timeouttunnel"),
    ("isDefaultBackend", "isdefaultbackend"),
    ("reqMode", "reqmode"),
    ("srcPort", "srcport"),
];

/// The raw values of the routing parameters that were given (non-empty), by parameter name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutingParams(BTreeMap<&'static str, String>);

impl RoutingParams {
    /// Picks the routing parameters out of a query map (first values, URL-decoded).
    pub fn from_params(params: &BTreeMap<String, String>) -> Self {
        Self::pick(|param, _| params.get(param))
    }

    /// Picks the routing parameters out of one service's KV values (`key suffix → value`).
    pub fn from_kv(values: &BTreeMap<String, String>) -> Self {
        Self::pick(|_, key| values.get(key))
    }

    fn pick<'a>(get: impl Fn(&str, &str) -> Option<&'a String>) -> Self {
        RoutingParams(
            ROUTING_PARAMS
                .iter()
                .filter_map(|(param, key)| {
                    get(param, key)
                        .filter(|v| !v.is_empty())
                        .map(|v| (*param, v.clone()))
                })
                .collect(),
        )
    }

    /// The value of `param`, `""` when absent.
    pub fn get(&self, param: &str) -> &str {
        self.0.get(param).map(String::as_str).unwrap_or("")
    }

    /// The KV pairs of the parameters that were given, in [`ROUTING_PARAMS`] order.
    pub fn kv_pairs(&self) -> Vec<(String, String)> {
        ROUTING_PARAMS
            .iter()
            .filter_map(|(param, key)| self.0.get(param).map(|v| ((*key).to_owned(), v.clone())))
            .collect()
    }

    fn set(&mut self, param: &'static str, value: String) {
        if value.is_empty() {
            self.0.remove(param);
        } else {
            self.0.insert(param, value);
        }
    }
}

/// Printable ASCII without space, quotes, backtick, backslash or `#`: safe inside single
/// quotes and on one line.
fn check_quoted_token(param: &'static str, value: &str, max: usize) -> Result<(), IntentError> {
    if value.is_empty() {
        return Err(invalid(param, value, "empty entry"));
    }
    if value.len() > max {
        return Err(invalid(param, value, format!("longer than {max} bytes")));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '\'' | '"' | '`' | '\\' | '#'))
    {
        return Err(invalid(
            param,
            value,
            format!(
                "the character {c:?} is not allowed (no whitespace, control or non-ASCII \
                 characters, quotes, backticks, backslashes or '#')"
            ),
        ));
    }
    Ok(())
}

fn refuse_percent(param: &'static str, value: &str) -> Result<(), IntentError> {
    if value.contains('%') {
        return Err(invalid(
            param,
            value,
            "'%' is not allowed (values are literal, HAProxy sample expressions are refused)",
        ));
    }
    Ok(())
}

/// A regular expression matched against the request path (PCRE, as HAProxy compiles it).
/// Rendered inside single quotes: no whitespace, quotes, backslashes, `#` or non-ASCII; use
/// `[.]` rather than `\.`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathRegex(String);

impl PathRegex {
    /// Validates a path regular expression.
    pub fn new(param: &'static str, value: &str) -> Result<Self, IntentError> {
        check_quoted_token(param, value, 1024)?;
        Ok(PathRegex(value.to_owned()))
    }
}

impl fmt::Display for PathRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The replacement of a path rewrite: literal text plus `\1`..`\9` back-references. No `%`,
/// whitespace, quotes or `#`; a backslash only before a digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathReplacement(String);

impl PathReplacement {
    /// Validates a replacement.
    pub fn new(param: &'static str, value: &str) -> Result<Self, IntentError> {
        // Back-references are the only backslashes allowed; check the rest without them.
        let mut rest = String::with_capacity(value.len());
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(d) if d.is_ascii_digit() => rest.push('0'),
                    _ => {
                        return Err(invalid(
                            param,
                            value,
                            "a backslash is only allowed before a digit (\\1 to \\9)",
                        ));
                    }
                }
            } else {
                rest.push(c);
            }
        }
        if rest.is_empty() {
            return Err(invalid(param, value, "empty replacement"));
        }
        check_quoted_token(param, &rest, 1024).map_err(|e| match e {
            IntentError::Invalid { param, reason, .. } => invalid(param, value, reason),
            other => other,
        })?;
        refuse_percent(param, value)?;
        Ok(PathReplacement(value.to_owned()))
    }
}

impl fmt::Display for PathReplacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One path rewrite with the semantics of DFP's `regsub`: the first match of `search` in the
/// path is replaced by `replace` (`\1`..`\6` refer to the groups of `search`); the rest of the
/// path and the query string are kept.
///
/// HAProxy's `replace-path` replaces the *whole* path when its regex matches, so the rewrite is
/// rendered as `replace-path '^(.*?)(<search>)(.*)$' '\1<replace>\N'`, the user's
/// back-references shifted by two ([`PathRewrite::haproxy_args`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathRewrite {
    /// What to match.
    pub search: PathRegex,
    /// What to put instead.
    pub replace: PathReplacement,
    /// The number of capturing groups of `search`.
    groups: usize,
}

/// The most groups a search may have: with the three added ones, back-references stay `\1` to
/// `\9`, the only ones HAProxy knows.
const MAX_GROUPS: usize = 6;

/// Counts the capturing groups of a regular expression without backslashes: `(` outside a
/// character class, not followed by `?` unless it starts a named group.
fn capture_groups(re: &str) -> usize {
    let b = re.as_bytes();
    let (mut i, mut n, mut in_class) = (0, 0, false);
    while i < b.len() {
        let c = b[i];
        if in_class {
            if c == b']' {
                in_class = false;
            }
        } else if c == b'[' {
            in_class = true;
            // A ']' right after '[' or '[^' is a literal member.
            if b.get(i + 1) == Some(&b'^') {
                i += 1;
            }
            if b.get(i + 1) == Some(&b']') {
                i += 1;
            }
        } else if c == b'(' {
            let named = (b.get(i + 2) == Some(&b'P') && b.get(i + 3) == Some(&b'<'))
                || (b.get(i + 2) == Some(&b'<') && !matches!(b.get(i + 3), Some(b'=' | b'!')));
            if b.get(i + 1) != Some(&b'?') || named {
                n += 1;
            }
        }
        i += 1;
    }
    n
}

impl PathRewrite {
    /// Validates a rewrite; the parameters name the values in errors.
    pub fn new(
        search_param: &'static str,
        search: &str,
        replace_param: &'static str,
        replace: &str,
    ) -> Result<Self, IntentError> {
        let search_re = PathRegex::new(search_param, search)?;
        let replacement = PathReplacement::new(replace_param, replace)?;
        let groups = capture_groups(search);
        if groups > MAX_GROUPS {
            return Err(invalid(
                search_param,
                search,
                format!("at most {MAX_GROUPS} capturing groups"),
            ));
        }
        let bytes = replace.as_bytes();
        for (i, c) in bytes.iter().enumerate() {
            if *c == b'\\'
                && let Some(d) = bytes.get(i + 1)
            {
                let n = usize::from(d - b'0');
                if n > groups {
                    return Err(invalid(
                        replace_param,
                        replace,
                        format!("refers to group {n}, the regex has {groups}"),
                    ));
                }
            }
        }
        Ok(PathRewrite {
            search: search_re,
            replace: replacement,
            groups,
        })
    }

    /// The regex and format of `http-request replace-path`, both safe inside single quotes.
    pub fn haproxy_args(&self) -> (String, String) {
        let regex = format!("^(.*?)({})(.*)$", self.search);
        let mut fmt = String::from("\\1");
        let mut chars = self.replace.0.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                // Validated: a digit from 0 to `groups` follows.
                let n = chars.next().and_then(|d| d.to_digit(10)).unwrap_or(0);
                fmt.push_str(&format!("\\{}", n + 2));
            } else {
                fmt.push(c);
            }
        }
        fmt.push_str(&format!("\\{}", self.groups + 3));
        (regex, fmt)
    }
}

/// A basic-auth user name: `[A-Za-z0-9._-]`, 1 to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserName(String);

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password (plain, or a crypt(3) hash when encrypted). Rendered inside single quotes, so
/// `$` and `/` of crypt hashes are literal; no whitespace, quotes, backslashes, `#`, `,` or
/// non-ASCII. Its `Debug` hides the value.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One user of a userlist.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct User {
    /// The name.
    pub name: UserName,
    /// The password or its hash.
    pub password: Password,
}

/// A userlist: `user:pass,user2:pass2`, passwords plain or crypt(3) hashes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Users {
    /// The users, sorted by name, names unique.
    pub users: Vec<User>,
    /// The passwords are crypt(3) hashes (`password`), not plain (`insecure-password`).
    pub encrypted: bool,
}

impl Users {
    /// Parses `user:pass,user2:pass2`; `param` names the parameter (or setting) in errors.
    /// Error messages never repeat a password.
    pub fn parse(param: &'static str, value: &str, encrypted: bool) -> Result<Self, IntentError> {
        let mut users: Vec<User> = Vec::new();
        for entry in value.split(',') {
            let Some((name, password)) = entry.split_once(':') else {
                let shown = entry.split(':').next().unwrap_or_default();
                return Err(invalid(param, shown, "each entry must be user:password"));
            };
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !name_ok {
                return Err(invalid(
                    param,
                    name,
                    "user names are 1 to 64 characters of [A-Za-z0-9._-]",
                ));
            }
            if let Err(IntentError::Invalid { reason, .. }) =
                check_quoted_token(param, password, 512)
            {
                return Err(invalid(
                    param,
                    name,
                    format!("the password of this user is not allowed: {reason}"),
                ));
            }
            if users.iter().any(|u| u.name.0 == name) {
                return Err(invalid(param, name, "this user is listed twice"));
            }
            users.push(User {
                name: UserName(name.to_owned()),
                password: Password(password.to_owned()),
            });
        }
        users.sort();
        Ok(Users { users, encrypted })
    }
}

/// An HTTP header name: `[A-Za-z0-9._-]`, 1 to 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderName(String);

impl HeaderName {
    /// Validates a header name.
    pub fn new(param: &'static str, value: &str) -> Result<Self, IntentError> {
        let ok = !value.is_empty()
            && value.len() <= 128
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(invalid(
                param,
                value,
                "header names are 1 to 128 characters of [A-Za-z0-9._-]",
            ));
        }
        Ok(HeaderName(value.to_owned()))
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A literal header value: printable ASCII and inner spaces, at most 1024 bytes; no quotes,
/// backslashes, `#` or `%`. Rendered inside single quotes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderValue(String);

impl HeaderValue {
    /// Validates a header value.
    pub fn new(param: &'static str, value: &str) -> Result<Self, IntentError> {
        if value.trim() != value {
            return Err(invalid(
                param,
                value,
                "no leading or trailing spaces in a value",
            ));
        }
        // Inner spaces are fine inside quotes; check every other character.
        check_quoted_token(param, &value.replace(' ', "_"), 1024).map_err(|_| {
            invalid(
                param,
                value,
                "header values are printable ASCII and spaces, without quotes, \
                     backticks, backslashes, '#' or '%'",
            )
        })?;
        refuse_percent(param, value)?;
        Ok(HeaderValue(value.to_owned()))
    }
}

impl fmt::Display for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a header rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HeaderOp {
    /// `add-header`.
    Add,
    /// `set-header`.
    Set,
    /// `del-header`.
    Del,
}

impl HeaderOp {
    /// The HAProxy action.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderOp::Add => "add-header",
            HeaderOp::Set => "set-header",
            HeaderOp::Del => "del-header",
        }
    }
}

/// One header rule; `value` is `None` exactly for [`HeaderOp::Del`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderRule {
    /// The action.
    pub op: HeaderOp,
    /// The header.
    pub name: HeaderName,
    /// The value to add or set.
    pub value: Option<HeaderValue>,
}

fn parse_header_rules(
    param: &'static str,
    value: &str,
    op: HeaderOp,
) -> Result<Vec<HeaderRule>, IntentError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|entry| {
            // Only spaces around an entry are dropped; any other whitespace is refused below.
            let entry = entry.trim_matches(' ');
            if op == HeaderOp::Del {
                return Ok(HeaderRule {
                    op,
                    name: HeaderName::new(param, entry)?,
                    value: None,
                });
            }
            let Some((name, v)) = entry.split_once(' ') else {
                return Err(invalid(
                    param,
                    entry,
                    "each entry must be a header name, a space and a value",
                ));
            };
            Ok(HeaderRule {
                op,
                name: HeaderName::new(param, name)?,
                value: Some(HeaderValue::new(param, v.trim_matches(' '))?),
            })
        })
        .collect()
}

/// A `serviceHeader` condition: the request header `name` must equal `value` exactly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderMatch {
    /// The header.
    pub name: HeaderName,
    /// The exact value (no whitespace, quotes, backslashes or `#`).
    pub value: HeaderPattern,
}

/// The value of a [`HeaderMatch`], rendered inside single quotes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderPattern(String);

impl fmt::Display for HeaderPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a service is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ReqMode {
    /// Through the shared HTTP frontend (the default).
    #[default]
    Http,
    /// Raw TCP on its own port (`srcPort`).
    Tcp,
    /// TLS passed through untouched, chosen by SNI, on its own port (`srcPort`).
    Sni,
}

impl ReqMode {
    /// DFP's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReqMode::Http => "http",
            ReqMode::Tcp => "tcp",
            ReqMode::Sni => "sni",
        }
    }
}

/// The secret of HAProxy's dynamic cookies (`sessionType=sticky-server`): every replica must
/// use the same one. `[A-Za-z0-9._-]`, 1 to 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyKey(String);

/// A rejected [`StickyKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid STICKY_KEY: must be 1 to 256 characters of [A-Za-z0-9._-]")]
pub struct StickyKeyError;

impl StickyKey {
    /// Validates a key given by the operator.
    pub fn new(value: &str) -> Result<Self, StickyKeyError> {
        let ok = !value.is_empty()
            && value.len() <= 256
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(StickyKey(value.to_owned()))
        } else {
            Err(StickyKeyError)
        }
    }

    /// The key replicas of one proxy instance share when none is given: derived from
    /// `PROXY_INSTANCE_NAME` (hex-encoded, so any name gives a valid key).
    pub fn from_instance_name(name: &str) -> Self {
        let hex: String = name.bytes().take(120).map(|b| format!("{b:02x}")).collect();
        StickyKey(format!("flow-proxy-{hex}"))
    }
}

impl Default for StickyKey {
    fn default() -> Self {
        StickyKey::from_instance_name("docker-flow")
    }
}

impl fmt::Display for StickyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The validated routing parameters of one service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutingOptions {
    /// Path rewrites, in order (`reqPathSearchReplace` entries, then the older pair).
    pub path_rewrites: Vec<PathRewrite>,
    /// The service's own users; `None` means the global `USERS`, if any.
    pub users: Option<Users>,
    /// `sessionType=sticky-server`: dynamic cookies.
    pub sticky: bool,
    /// Request header rules (adds, sets, then deletes).
    pub request_headers: Vec<HeaderRule>,
    /// Response header rules (adds, sets, then deletes).
    pub response_headers: Vec<HeaderRule>,
    /// Hosts redirected (301) to the first `serviceDomain`.
    pub redirect_from: Vec<DomainName>,
    /// Request headers that must all match for the service's routes.
    pub service_headers: Vec<HeaderMatch>,
    /// `timeout server`, seconds.
    pub timeout_server: Option<u32>,
    /// `timeout tunnel`, seconds.
    pub timeout_tunnel: Option<u32>,
    /// The shared frontend's `default_backend`.
    pub default_backend: bool,
    /// HTTP, TCP or SNI.
    pub mode: ReqMode,
    /// The port of a TCP or SNI service's own frontend.
    pub src_port: Option<u16>,
    /// Where `redirect_from` hosts are sent: the first `serviceDomain` that is not a wildcard.
    pub redirect_to: Option<DomainName>,
    /// The server names routed to an SNI service (its `serviceDomain`).
    pub sni_names: Vec<DomainName>,
}

/// HAProxy's largest timeout is 2^31-1 ms.
const MAX_TIMEOUT_SECONDS: u32 = 2_147_483;

fn parse_timeout(param: &'static str, value: &str) -> Result<Option<u32>, IntentError> {
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<u32>() {
        Ok(n)
            if (1..=MAX_TIMEOUT_SECONDS).contains(&n)
                && value.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(Some(n))
        }
        _ => Err(invalid(
            param,
            value,
            format!("must be a number of seconds from 1 to {MAX_TIMEOUT_SECONDS}"),
        )),
    }
}

fn parse_flag(param: &'static str, value: &str) -> Result<bool, IntentError> {
    match value.to_ascii_lowercase().as_str() {
        "" | "false" | "0" => Ok(false),
        "true" | "1" => Ok(true),
        _ => Err(invalid(param, value, "must be true, false, 1 or 0")),
    }
}

fn parse_rewrite(
    param: &'static str,
    search: &str,
    replace: &str,
) -> Result<PathRewrite, IntentError> {
    PathRewrite::new(param, search, param, replace)
}

/// DFP's message when a TCP or SNI service lacks its port.
pub const SRC_PORT_MANDATORY: &str =
    "When NOT using reqMode http (e.g. tcp), the srcPort parameter is mandatory";

impl RoutingOptions {
    /// Validates the routing parameters of a service whose `serviceDomain` is `domains`.
    pub fn parse(raw: &RoutingParams, domains: &[DomainName]) -> Result<Self, IntentError> {
        let mut path_rewrites = Vec::new();
        let psr = raw.get("reqPathSearchReplace");
        if !psr.is_empty() {
            for pair in psr.split(':') {
                let parts: Vec<&str> = pair.split(',').collect();
                let [search, replace] = parts[..] else {
                    return Err(invalid(
                        "reqPathSearchReplace",
                        pair,
                        "each entry must be <regex>,<replacement> (entries separated by ':')",
                    ));
                };
                path_rewrites.push(parse_rewrite("reqPathSearchReplace", search, replace)?);
            }
        }
        match (raw.get("reqPathSearch"), raw.get("reqPathReplace")) {
            ("", "") => {}
            ("", r) => {
                return Err(invalid("reqPathReplace", r, "needs reqPathSearch as well"));
            }
            (s, "") => {
                return Err(invalid("reqPathSearch", s, "needs reqPathReplace as well"));
            }
            (s, r) => {
                path_rewrites.push(PathRewrite::new("reqPathSearch", s, "reqPathReplace", r)?);
            }
        }
        let encrypted = parse_flag("usersPassEncrypted", raw.get("usersPassEncrypted"))?;
        let users = match raw.get("users") {
            "" => None,
            u => Some(Users::parse("users", u, encrypted)?),
        };
        let sticky = match raw.get("sessionType") {
            "" => false,
            "sticky-server" => true,
            other => {
                return Err(invalid(
                    "sessionType",
                    other,
                    "the only session type is sticky-server",
                ));
            }
        };
        let mut request_headers =
            parse_header_rules("addReqHeader", raw.get("addReqHeader"), HeaderOp::Add)?;
        request_headers.extend(parse_header_rules(
            "setReqHeader",
            raw.get("setReqHeader"),
            HeaderOp::Set,
        )?);
        request_headers.extend(parse_header_rules(
            "delReqHeader",
            raw.get("delReqHeader"),
            HeaderOp::Del,
        )?);
        let mut response_headers =
            parse_header_rules("addResHeader", raw.get("addResHeader"), HeaderOp::Add)?;
        response_headers.extend(parse_header_rules(
            "setResHeader",
            raw.get("setResHeader"),
            HeaderOp::Set,
        )?);
        response_headers.extend(parse_header_rules(
            "delResHeader",
            raw.get("delResHeader"),
            HeaderOp::Del,
        )?);
        let redirect = raw.get("redirectFromDomain");
        let mut redirect_from = Vec::new();
        if !redirect.is_empty() {
            for d in redirect.split(',') {
                redirect_from.push(DomainName::new(d).map_err(|e| match e {
                    IntentError::Invalid { value, reason, .. } => IntentError::Invalid {
                        param: "redirectFromDomain",
                        value,
                        reason,
                    },
                    other => other,
                })?);
            }
            redirect_from.sort();
            redirect_from.dedup();
            if !domains.iter().any(|d| !d.is_wildcard()) {
                return Err(invalid(
                    "redirectFromDomain",
                    redirect,
                    "needs a serviceDomain that is not a wildcard to redirect to",
                ));
            }
        }
        let mut service_headers = Vec::new();
        let sh = raw.get("serviceHeader");
        if !sh.is_empty() {
            for entry in sh.split(',') {
                let Some((name, value)) = entry.split_once(':') else {
                    return Err(invalid(
                        "serviceHeader",
                        entry,
                        "each entry must be <header>:<value>",
                    ));
                };
                let value = value.trim_matches(' ');
                check_quoted_token("serviceHeader", value, 1024)?;
                service_headers.push(HeaderMatch {
                    name: HeaderName::new("serviceHeader", name.trim_matches(' '))?,
                    value: HeaderPattern(value.to_owned()),
                });
            }
            service_headers.sort();
            service_headers.dedup();
        }
        let timeout_server = parse_timeout("timeoutServer", raw.get("timeoutServer"))?;
        let timeout_tunnel = parse_timeout("timeoutTunnel", raw.get("timeoutTunnel"))?;
        let default_backend = parse_flag("isDefaultBackend", raw.get("isDefaultBackend"))?;
        let mode = match raw.get("reqMode").to_ascii_lowercase().as_str() {
            "" | "http" => ReqMode::Http,
            "tcp" => ReqMode::Tcp,
            "sni" => ReqMode::Sni,
            _ => {
                return Err(invalid(
                    "reqMode",
                    raw.get("reqMode"),
                    "must be one of http, tcp, sni",
                ));
            }
        };
        let src_port = match raw.get("srcPort") {
            "" => None,
            p => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(invalid("srcPort", p, "must be a port from 1 to 65535")),
            },
        };
        let options = RoutingOptions {
            path_rewrites,
            users,
            sticky,
            request_headers,
            response_headers,
            redirect_from,
            service_headers,
            timeout_server,
            timeout_tunnel,
            default_backend,
            mode,
            src_port,
            redirect_to: None,
            sni_names: Vec::new(),
        };
        options.check_mode(raw, domains)?;
        let mut options = options;
        if !options.redirect_from.is_empty() {
            options.redirect_to = domains.iter().find(|d| !d.is_wildcard()).cloned();
        }
        if options.mode == ReqMode::Sni {
            options.sni_names = domains.to_vec();
        }
        Ok(options)
    }

    fn check_mode(&self, raw: &RoutingParams, domains: &[DomainName]) -> Result<(), IntentError> {
        match self.mode {
            ReqMode::Http => {
                if let Some(p) = self.src_port {
                    return Err(invalid(
                        "srcPort",
                        &p.to_string(),
                        "applies to reqMode tcp and sni only (HTTP services share HTTP_PORT)",
                    ));
                }
            }
            ReqMode::Tcp | ReqMode::Sni => {
                if self.src_port.is_none() {
                    return Err(invalid("srcPort", "", SRC_PORT_MANDATORY));
                }
                for param in [
                    "reqPathSearchReplace",
                    "reqPathSearch",
                    "reqPathReplace",
                    "users",
                    "sessionType",
                    "addReqHeader",
                    "setReqHeader",
                    "delReqHeader",
                    "addResHeader",
                    "setResHeader",
                    "delResHeader",
                    "redirectFromDomain",
                    "serviceHeader",
                    "isDefaultBackend",
                ] {
                    let v = raw.get(param);
                    if !v.is_empty() && (param != "isDefaultBackend" || self.default_backend) {
                        return Err(invalid(
                            param,
                            v,
                            format!("applies to reqMode http only, not {}", self.mode.as_str()),
                        ));
                    }
                }
                if self.mode == ReqMode::Sni && domains.is_empty() {
                    return Err(invalid(
                        "serviceDomain",
                        "",
                        "reqMode sni needs serviceDomain: the server names (SNI) routed to the service",
                    ));
                }
            }
        }
        Ok(())
    }

    /// True for TCP and SNI services, which have no HTTP routes.
    pub fn is_tcp(&self) -> bool {
        self.mode != ReqMode::Http
    }
}

/// Refuses routing parameters on a service whose configuration comes from custom templates
/// (they would be silently ignored).
pub(super) fn refuse_with_templates(raw: &RoutingParams) -> Result<(), IntentError> {
    match raw
        .0
        .iter()
        .find(|(p, v)| !(**p == "reqMode" && v.eq_ignore_ascii_case("http")))
    {
        Some((param, value)) => Err(invalid(
            param,
            value,
            "does not apply to a service with custom templates (write it in the template)",
        )),
        None => Ok(()),
    }
}

/// True when the raw `reqMode` asks for a TCP or SNI service (no `servicePath` needed).
pub(super) fn wants_tcp(raw: &RoutingParams) -> bool {
    matches!(
        raw.get("reqMode").to_ascii_lowercase().as_str(),
        "tcp" | "sni"
    )
}

/// Refuses an intent whose `srcPort` clashes with `reserved` ports (`HTTP_PORT`,
/// `HTTPS_PORT`) or with another service's port of a different mode (or of plain TCP, which
/// cannot share), or that asks to be the default backend when another service is.
pub fn check_conflicts<'a>(
    intent: &ServiceIntent,
    others: impl IntoIterator<Item = &'a ServiceIntent>,
    reserved: &[u16],
) -> Result<(), IntentError> {
    let mine = &intent.routing;
    let others: Vec<&ServiceIntent> = others
        .into_iter()
        .filter(|o| o.name != intent.name)
        .collect();
    if let Some(port) = mine.src_port {
        if reserved.contains(&port) {
            return Err(invalid(
                "srcPort",
                &port.to_string(),
                "is HAProxy's HTTP_PORT or HTTPS_PORT",
            ));
        }
        for o in &others {
            if o.routing.src_port != Some(port) {
                continue;
            }
            if o.routing.mode != mine.mode || mine.mode == ReqMode::Tcp {
                return Err(invalid(
                    "srcPort",
                    &port.to_string(),
                    format!(
                        "is already used by the service {} (reqMode {})",
                        o.name,
                        o.routing.mode.as_str()
                    ),
                ));
            }
        }
    }
    if mine.default_backend
        && let Some(o) = others.iter().find(|o| o.routing.default_backend)
    {
        return Err(invalid(
            "isDefaultBackend",
            "true",
            format!("the service {} is already the default backend", o.name),
        ));
    }
    Ok(())
}

/// One echoed value of the `reconfigure` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EchoValue {
    /// A JSON string.
    Str(String),
    /// A JSON boolean.
    Bool(bool),
    /// A JSON number.
    Int(u64),
    /// A JSON array of strings.
    List(Vec<String>),
    /// A JSON object of strings.
    Map(BTreeMap<String, String>),
    /// DFP's `Users`: `[{"Username": ..., "PassEncrypted": ...}]` (passwords are never echoed).
    Users(Vec<(String, bool)>),
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',').map(|s| s.trim().to_owned()).collect()
}

/// The echo of the routing parameters that were given, in DFP's field names and types (as
/// later DFP versions answered); parameters not given are left out, so an answer to a 1.0.3
/// request stays exactly 1.0.3's.
pub fn routing_echo(raw: &RoutingParams) -> Vec<(&'static str, EchoValue)> {
    let mut out = Vec::new();
    let text = |p: &str| raw.get(p).to_owned();
    for (param, field) in [
        ("reqPathSearchReplace", "ReqPathSearchReplace"),
        ("reqPathSearch", "ReqPathSearch"),
        ("reqPathReplace", "ReqPathReplace"),
    ] {
        if !raw.get(param).is_empty() {
            out.push((field, EchoValue::Str(text(param))));
        }
    }
    if !raw.get("users").is_empty() {
        let encrypted =
            parse_flag("usersPassEncrypted", raw.get("usersPassEncrypted")).unwrap_or(false);
        let users = raw
            .get("users")
            .split(',')
            .map(|e| {
                (
                    e.split(':').next().unwrap_or_default().to_owned(),
                    encrypted,
                )
            })
            .collect();
        out.push(("Users", EchoValue::Users(users)));
    }
    if !raw.get("sessionType").is_empty() {
        out.push(("SessionType", EchoValue::Str(text("sessionType"))));
    }
    for (param, field) in [
        ("addReqHeader", "AddReqHeader"),
        ("setReqHeader", "SetReqHeader"),
        ("delReqHeader", "DelReqHeader"),
        ("addResHeader", "AddResHeader"),
        ("setResHeader", "SetResHeader"),
        ("delResHeader", "DelResHeader"),
        ("redirectFromDomain", "RedirectFromDomain"),
    ] {
        if !raw.get(param).is_empty() {
            out.push((field, EchoValue::List(split_list(raw.get(param)))));
        }
    }
    if !raw.get("serviceHeader").is_empty() {
        let map = raw
            .get("serviceHeader")
            .split(',')
            .map(|e| match e.split_once(':') {
                Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
                None => (e.trim().to_owned(), String::new()),
            })
            .collect();
        out.push(("ServiceHeader", EchoValue::Map(map)));
    }
    for (param, field) in [
        ("timeoutServer", "TimeoutServer"),
        ("timeoutTunnel", "TimeoutTunnel"),
    ] {
        if !raw.get(param).is_empty() {
            out.push((field, EchoValue::Str(text(param))));
        }
    }
    if !raw.get("isDefaultBackend").is_empty() {
        let v = parse_flag("isDefaultBackend", raw.get("isDefaultBackend")).unwrap_or(false);
        out.push(("IsDefaultBackend", EchoValue::Bool(v)));
    }
    if !raw.get("reqMode").is_empty() {
        out.push(("ReqMode", EchoValue::Str(text("reqMode"))));
    }
    if let Ok(p) = raw.get("srcPort").parse::<u16>() {
        out.push(("SrcPort", EchoValue::Int(u64::from(p))));
    }
    out
}

/// Normalizes the stored copy of the parameters so that an intent read back from KV equals
/// the one written (booleans as `true`/`false`).
pub(super) fn normalize(raw: &mut RoutingParams, options: &RoutingOptions) {
    if !raw.get("usersPassEncrypted").is_empty() {
        let encrypted = options.users.as_ref().is_some_and(|u| u.encrypted)
            || parse_flag("usersPassEncrypted", raw.get("usersPassEncrypted")).unwrap_or(false);
        raw.set("usersPassEncrypted", encrypted.to_string());
    }
    if !raw.get("isDefaultBackend").is_empty() {
        raw.set("isDefaultBackend", options.default_backend.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ServiceIntent, IntentError> {
        let mut map: BTreeMap<String, String> = [("serviceName", "s"), ("servicePath", "/")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (k, v) in pairs {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        ServiceIntent::from_params(&map)
    }

    fn refused(pairs: &[(&str, &str)], param: &str) {
        let err = parse(pairs).expect_err("must be refused").to_string();
        assert!(
            err.starts_with(&format!("invalid {param} ")),
            "{pairs:?}: {err}"
        );
    }

    #[test]
    fn path_rewrites() {
        let i = parse(&[
            ("reqPathSearchReplace", r"^/api/v1/(.*),/\1:^/a$,/b"),
            ("reqPathSearch", "^/x"),
            ("reqPathReplace", "/y"),
        ])
        .unwrap();
        let shown: Vec<String> = i
            .routing
            .path_rewrites
            .iter()
            .map(|p| format!("{} {}", p.search, p.replace))
            .collect();
        assert_eq!(shown, [r"^/api/v1/(.*) /\1", "^/a$ /b", "^/x /y"]);
        let args: Vec<(String, String)> = i
            .routing
            .path_rewrites
            .iter()
            .map(PathRewrite::haproxy_args)
            .collect();
        assert_eq!(
            args[0],
            (
                r"^(.*?)(^/api/v1/(.*))(.*)$".to_owned(),
                r"\1/\3\4".to_owned()
            )
        );
        assert_eq!(
            args[2],
            (r"^(.*?)(^/x)(.*)$".to_owned(), r"\1/y\3".to_owned())
        );
        assert_eq!(
            capture_groups("(a)(?:b)(?<n>c)(?<=d)(?P<e>f)[(](g)[]()]"),
            4
        );
        refused(
            &[("reqPathSearchReplace", r"^/(a),/\2")],
            "reqPathSearchReplace",
        );
        refused(
            &[("reqPathSearchReplace", "(a)(b)(c)(d)(e)(f)(g),/")],
            "reqPathSearchReplace",
        );
        for bad in [
            "^/a",
            "^/a,/b,/c",
            "^/a b,/b",
            "^/a,/b c",
            "^/a,/%[env(X)]",
            "^/a,",
            ",/b",
            "^/a',/b",
            "^/a,/b\n",
            "^/a#,/b",
            r"^/a\.b,/b",
            r"^/a,\x",
            "^/ä,/b",
        ] {
            refused(&[("reqPathSearchReplace", bad)], "reqPathSearchReplace");
        }
        refused(&[("reqPathSearch", "^/x")], "reqPathSearch");
        refused(&[("reqPathReplace", "/y")], "reqPathReplace");
    }

    #[test]
    fn users() {
        let i = parse(&[("users", "bob:b$1,alice:a/b.c")]).unwrap();
        let u = i.routing.users.unwrap();
        assert!(!u.encrypted);
        assert_eq!(u.users[0].name.to_string(), "alice");
        assert_eq!(format!("{:?}", u.users[0].password), "Password(***)");
        assert!(
            parse(&[("users", "a:x"), ("usersPassEncrypted", "true")])
                .unwrap()
                .routing
                .users
                .unwrap()
                .encrypted
        );
        for bad in [
            "alice", "alice:", ":pw", "a b:pw", "a:p w", "a:p'w", "a:x,a:y", "a:p\nw",
        ] {
            refused(&[("users", bad)], "users");
        }
        let err = parse(&[("users", "alice:bad pass")])
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("bad pass"),
            "a password is never echoed: {err}"
        );
        refused(
            &[("users", "a:b"), ("usersPassEncrypted", "yes")],
            "usersPassEncrypted",
        );
    }

    #[test]
    fn headers_and_flags() {
        let i = parse(&[
            ("addReqHeader", "X-A one two,X-B b"),
            ("delResHeader", "Server"),
            ("serviceHeader", "X-Version:3"),
            ("sessionType", "sticky-server"),
            ("timeoutServer", "60"),
            ("isDefaultBackend", "true"),
        ])
        .unwrap();
        let r = &i.routing;
        assert_eq!(r.request_headers.len(), 2);
        assert_eq!(
            r.request_headers[0].value.as_ref().unwrap().to_string(),
            "one two"
        );
        assert_eq!(r.response_headers[0].op, HeaderOp::Del);
        assert!(r.sticky && r.default_backend);
        assert_eq!(r.timeout_server, Some(60));
        for (param, bad) in [
            ("addReqHeader", "X-A"),
            ("addReqHeader", "X:A b"),
            ("setReqHeader", "X-A 'b'"),
            ("setResHeader", "X-A %[env(CONSUL_HTTP_TOKEN)]"),
            ("setResHeader", "X-A a\\b"),
            ("addResHeader", "X-A a\nhttp-request deny"),
            ("delReqHeader", "X-A b"),
            ("serviceHeader", "X-Version"),
            ("serviceHeader", "X-Version:a b"),
            ("sessionType", "sticky"),
            ("timeoutServer", "0"),
            ("timeoutTunnel", "1s"),
            ("isDefaultBackend", "maybe"),
            ("redirectFromDomain", "old.example.com"),
            ("srcPort", "5432"),
            ("reqMode", "udp"),
        ] {
            refused(&[(param, bad)], param);
        }
    }

    #[test]
    fn tcp_modes_and_conflicts() {
        let tcp = |name: &str, mode: &str, port: &str| {
            let map = [
                ("serviceName", name),
                ("reqMode", mode),
                ("srcPort", port),
                ("serviceDomain", "a.example.com"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
            ServiceIntent::from_params(&map)
        };
        let db = tcp("db", "tcp", "5432").unwrap();
        assert!(db.paths.is_empty() && db.routing.is_tcp());
        assert!(tcp("db", "tcp", "").is_err());
        refused(
            &[("reqMode", "tcp"), ("srcPort", "1"), ("users", "a:b")],
            "users",
        );
        let a = tcp("a", "sni", "8443").unwrap();
        let b = tcp("b", "sni", "8443").unwrap();
        assert!(check_conflicts(&b, [&a, &db], &[80, 443]).is_ok());
        let db2 = tcp("db2", "tcp", "5432").unwrap();
        let err = check_conflicts(&db2, [&db], &[80]).unwrap_err().to_string();
        assert!(err.contains("already used by the service db"), "{err}");
        let clash = tcp("c", "sni", "5432").unwrap();
        assert!(check_conflicts(&clash, [&db], &[80]).is_err());
        let http = tcp("h", "tcp", "80").unwrap();
        assert!(check_conflicts(&http, [], &[80, 443]).is_err());
        // Replacing a service by itself is no clash.
        assert!(check_conflicts(&db, [&db], &[80]).is_ok());
        let d1 = parse(&[("isDefaultBackend", "true")]).unwrap();
        let mut d2 = d1.clone();
        d2.name = crate::domain::ServiceName::new("other").unwrap();
        assert!(check_conflicts(&d2, [&d1], &[]).is_err());
    }

    #[test]
    fn kv_round_trip_and_echo() {
        let i = parse(&[
            ("users", "a:b"),
            ("usersPassEncrypted", "1"),
            ("reqPathSearchReplace", "^/a,/b"),
            ("srcPort", ""),
        ])
        .unwrap();
        let pairs: BTreeMap<String, String> = i.to_kv_pairs().into_iter().collect();
        assert_eq!(pairs["userspassencrypted"], "true");
        assert!(
            !pairs.contains_key("srcport"),
            "unset parameters are not written"
        );
        let back = ServiceIntent::from_kv("s", &pairs).unwrap();
        assert_eq!(back, i);
        let echo = routing_echo(&i.raw.routing);
        let fields: Vec<&str> = echo.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["ReqPathSearchReplace", "Users"]);
        assert_eq!(echo[1].1, EchoValue::Users(vec![("a".into(), true)]));
    }
}
