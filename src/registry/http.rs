//! The HTTP API (warp 0.4): routing, parameter parsing, status codes, headers and
//! plain-text error bodies, exactly as Consul answers them.
//!
//! A single catch-all filter takes the path first and dispatches by hand, so unknown
//! `/v1/...` paths answer 404 `Invalid URL path: not a recognized HTTP API endpoint` and
//! known paths with the wrong method answer 405 with an `Allow` header.
//! Owns: the mapping from requests to store reads/commands and back to responses.
//! Must not: change state except through [`Core::write_async`], or hold the store lock
//! across an await.

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use warp::Filter;
use warp::http::{HeaderMap, Method, Response, StatusCode};

use super::blocking::{self, BlockingError};
use super::catalog::{Invalid, parse_check_registration, parse_service_registration};
use super::checks::{touch_session, touch_ttl, truncate_output};
use super::kv::{TxnOp, TxnOutcome};
use super::session::parse_session_create;
use super::store::{ApplyError, CRITICAL, Command, Outcome, PASSING, Store, WARNING, non_zero};
use super::{Core, WriteError};

/// Largest KV value (Consul's `kv_max_value_size` default).
pub const MAX_KV_VALUE: usize = 512 * 1024;
/// Largest transaction.
pub const MAX_TXN_OPS: usize = 128;

/// A response under construction.
struct Resp {
    status: StatusCode,
    body: Bytes,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
}

impl Resp {
    fn new(status: StatusCode, body: impl Into<Bytes>, content_type: Option<&'static str>) -> Resp {
        Resp {
            status,
            body: body.into(),
            content_type,
            headers: Vec::new(),
        }
    }
    fn empty() -> Resp {
        Resp::new(StatusCode::OK, Bytes::new(), None)
    }
    fn text(status: StatusCode, body: impl Into<String>) -> Resp {
        Resp::new(status, body.into(), Some("text/plain; charset=utf-8"))
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Resp {
        self.headers.push((name, value.into()));
        self
    }
}

/// An error answer.
struct ApiError(Resp);

impl ApiError {
    fn new(status: StatusCode, body: impl Into<String>) -> ApiError {
        ApiError(Resp::text(status, body))
    }
    fn bad(body: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, body)
    }
    fn internal(body: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, body)
    }
    fn not_found(body: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, body)
    }
}

impl From<BlockingError> for ApiError {
    fn from(e: BlockingError) -> Self {
        ApiError::bad(e.to_string())
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::bad(e.0)
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Rejected(
                a @ (ApplyError::UnknownService(_) | ApplyError::UnknownCheck(_)),
            ) => ApiError::not_found(a.to_string()),
            WriteError::Rejected(a @ ApplyError::CheckServiceMissing(_)) => {
                ApiError::bad(a.to_string())
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

type ApiResult = Result<Resp, ApiError>;

/// A parsed request.
struct Req {
    method: Method,
    /// Path after `/v1/`, percent-decoded.
    path: String,
    raw_query: String,
    query: Vec<(String, String)>,
    body: Bytes,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    fn has(&self, k: &str) -> bool {
        self.query.iter().any(|(key, _)| key == k)
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn pretty(&self) -> bool {
        self.has("pretty")
    }
    fn consistency(&self) -> &'static str {
        if self.has("stale") {
            "stale"
        } else if self.has("consistent") {
            "consistent"
        } else {
            "leader"
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The registry's routes: one filter that never rejects.
pub(crate) fn routes(
    core: Arc<Core>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    warp::path::full()
        .and(warp::method())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes().or(warp::any().map(Bytes::new)).unify())
        .and(warp::any().map(move || Arc::clone(&core)))
        .then(
            |full: warp::path::FullPath,
             method: Method,
             raw_query: String,
             headers: HeaderMap,
             body: Bytes,
             core: Arc<Core>| async move {
                handle(
                    core,
                    full.as_str().to_string(),
                    method,
                    raw_query,
                    headers,
                    body,
                )
                .await
            },
        )
}

fn finish(resp: Resp, pretty: bool) -> warp::reply::Response {
    let mut body = resp.body;
    if pretty
        && resp.content_type == Some("application/json")
        && let Ok(v) = serde_json::from_slice::<Value>(&body)
        && let Ok(s) = serde_json::to_vec_pretty(&v)
    {
        body = Bytes::from(s);
    }
    let mut builder = Response::builder()
        .status(resp.status)
        .header("X-Consul-Default-ACL-Policy", "allow");
    if let Some(ct) = resp.content_type {
        builder = builder.header("Content-Type", ct);
    }
    for (k, v) in resp.headers {
        builder = builder.header(k, v);
    }
    match builder.body(body) {
        Ok(r) => r.map(Into::into),
        Err(e) => {
            let mut r = warp::reply::Response::new(Bytes::from(e.to_string()).into());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

async fn handle(
    core: Arc<Core>,
    full_path: String,
    method: Method,
    raw_query: String,
    headers: HeaderMap,
    body: Bytes,
) -> warp::reply::Response {
    let query: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let path = full_path.strip_prefix("/v1/").map(percent_decode);
    if let Some(required) = &core.config.acl_token {
        let token = super::acl::request_token(&query, &headers);
        let mut resp = match super::acl::check(required, path.as_deref().unwrap_or(""), token) {
            Ok(()) => handle_allowed(core, path, method, raw_query, query, body).await,
            Err(denied) => finish(Resp::text(StatusCode::FORBIDDEN, denied.body()), false),
        };
        resp.headers_mut().insert(
            "X-Consul-Default-ACL-Policy",
            warp::http::HeaderValue::from_static("deny"),
        );
        return resp;
    }
    handle_allowed(core, path, method, raw_query, query, body).await
}

async fn handle_allowed(
    core: Arc<Core>,
    path: Option<String>,
    method: Method,
    raw_query: String,
    query: Vec<(String, String)>,
    body: Bytes,
) -> warp::reply::Response {
    let Some(path) = path else {
        return finish(Resp::new(StatusCode::NOT_FOUND, Bytes::new(), None), false);
    };
    let req = Req {
        method,
        path,
        raw_query,
        query,
        body,
    };
    let pretty = req.pretty();
    let resp = match route(&core, &req).await {
        Ok(r) => r,
        Err(ApiError(r)) => r,
    };
    finish(resp, pretty)
}

fn json_resp(v: &Value) -> Resp {
    Resp::new(
        StatusCode::OK,
        serde_json::to_vec(v).unwrap_or_default(),
        Some("application/json"),
    )
}

fn with_meta(resp: Resp, index: u64, consistency: &'static str) -> Resp {
    resp.header("X-Consul-Index", non_zero(index).to_string())
        .header("X-Consul-KnownLeader", "true")
        .header("X-Consul-LastContact", "0")
        .header("X-Consul-Effective-Consistency", consistency)
}

/// Checks the method; OPTIONS answers with `Allow` only.
fn allow(req: &Req, methods: &[&str]) -> Result<(), ApiError> {
    let list = format!("OPTIONS,{}", methods.join(","));
    if req.method == Method::OPTIONS {
        return Err(ApiError(Resp::empty().header("Allow", list)));
    }
    if methods.contains(&req.method.as_str()) {
        Ok(())
    } else {
        Err(ApiError(
            Resp::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {} not allowed", req.method),
            )
            .header("Allow", list),
        ))
    }
}

fn unknown_path() -> ApiError {
    ApiError::not_found("Invalid URL path: not a recognized HTTP API endpoint")
}

async fn route(core: &Arc<Core>, req: &Req) -> ApiResult {
    if req.has("stale") && req.has("consistent") {
        return Err(ApiError::bad(
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ));
    }
    if let Some(dc) = req.q("dc")
        && !dc.is_empty()
        && dc != core.config.datacenter
    {
        return Err(ApiError::internal("No path to datacenter"));
    }
    let p = req.path.as_str();
    if let Some(key) = p.strip_prefix("kv/") {
        allow(req, &["GET", "PUT", "DELETE"])?;
        return kv(core, req, key).await;
    }
    if p == "kv" {
        allow(req, &["GET", "PUT", "DELETE"])?;
        return kv(core, req, "").await;
    }
    if let Some(name) = p.strip_prefix("catalog/service/") {
        allow(req, &["GET"])?;
        if name.is_empty() {
            return Err(ApiError::bad("Missing service name"));
        }
        let tags = req.all("tag");
        let name = name.to_string();
        return blocking_read(
            core,
            req,
            |s| s.catalog_service_index(&name),
            |s| {
                let (v, i) = s.catalog_service(&name, &tags);
                (json_resp(&v), i)
            },
        )
        .await;
    }
    if let Some(node) = p.strip_prefix("catalog/node/") {
        allow(req, &["GET"])?;
        if node.is_empty() {
            return Err(ApiError::bad("Missing node name"));
        }
        let node = node.to_string();
        return blocking_read(
            core,
            req,
            |s| s.catalog_node_index(&node),
            |s| {
                let (body, i) = s.catalog_node(&node);
                (Resp::new(StatusCode::OK, body, Some("application/json")), i)
            },
        )
        .await;
    }
    if let Some(name) = p.strip_prefix("health/service/") {
        allow(req, &["GET"])?;
        if name.is_empty() {
            return Err(ApiError::bad("Missing service name"));
        }
        let passing = match req.q("passing") {
            None => false,
            Some(v) => {
                parse_go_bool(v).ok_or_else(|| ApiError::bad("Invalid value for ?passing"))?
            }
        };
        let tags = req.all("tag");
        let name = name.to_string();
        return blocking_read(
            core,
            req,
            |s| s.health_service_index(&name, &tags),
            |s| {
                let (v, i) = s.health_service(&name, &tags, passing);
                (json_resp(&v), i)
            },
        )
        .await;
    }
    if let Some(state) =
        p.strip_prefix("health/state/")
            .or(if p == "health/state" { Some("") } else { None })
    {
        allow(req, &["GET"])?;
        if state.is_empty() {
            return Err(ApiError::bad("Missing check state"));
        }
        let state = state.to_string();
        return blocking_read(
            core,
            req,
            |s| s.idx.checks,
            |s| {
                let (v, i) = s.health_state(&state);
                (json_resp(&v), i)
            },
        )
        .await;
    }
    if let Some(name) = p.strip_prefix("health/checks/") {
        allow(req, &["GET"])?;
        if name.is_empty() {
            return Err(ApiError::bad("Missing service name"));
        }
        let name = name.to_string();
        return blocking_read(
            core,
            req,
            |s| s.idx.checks,
            |s| {
                let (v, i) = s.health_checks(&name);
                (json_resp(&v), i)
            },
        )
        .await;
    }
    if let Some(node) = p.strip_prefix("health/node/") {
        allow(req, &["GET"])?;
        let node = node.to_string();
        return blocking_read(
            core,
            req,
            |s| s.idx.checks,
            |s| {
                let items: Vec<Value> = if node == s.node.name {
                    s.checks
                        .values()
                        .filter(|c| c.service_id.is_empty())
                        .map(|c| s.check_json(c))
                        .collect()
                } else {
                    Vec::new()
                };
                (json_resp(&Value::Array(items)), s.idx.checks)
            },
        )
        .await;
    }
    if let Some(rest) = p.strip_prefix("agent/") {
        return agent(core, req, rest).await;
    }
    if let Some(rest) = p.strip_prefix("session/") {
        return session(core, req, rest).await;
    }
    match p {
        "catalog/services" => {
            allow(req, &["GET"])?;
            blocking_read(
                core,
                req,
                |s| s.idx.services,
                |s| {
                    let (v, i) = s.catalog_services();
                    (json_resp(&v), i)
                },
            )
            .await
        }
        "catalog/nodes" => {
            allow(req, &["GET"])?;
            blocking_read(
                core,
                req,
                |s| s.idx.nodes,
                |s| {
                    let (v, i) = s.catalog_nodes();
                    (json_resp(&v), i)
                },
            )
            .await
        }
        "catalog/datacenters" => {
            allow(req, &["GET"])?;
            Ok(json_resp(&json!([core.config.datacenter])))
        }
        "status/leader" => {
            allow(req, &["GET"])?;
            Ok(json_resp(&json!("127.0.0.1:8300")))
        }
        "status/peers" => {
            allow(req, &["GET"])?;
            Ok(json_resp(&json!(["127.0.0.1:8300"])))
        }
        "txn" => {
            allow(req, &["PUT"])?;
            txn(core, req).await
        }
        _ => Err(unknown_path()),
    }
}

/// Go's `strconv.ParseBool`; an empty value (`?passing`) counts as true.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Serves a blocking-capable read: waits (per `index`/`wait`) until `index_of` is above
/// the client's index, re-checking only the index on each write, then renders once and
/// adds the index headers. `render` returns the body and the index it reports.
async fn blocking_read<I, F>(core: &Arc<Core>, req: &Req, index_of: I, render: F) -> ApiResult
where
    I: Fn(&Store) -> u64,
    F: Fn(&Store) -> (Resp, u64),
{
    let params = blocking::parse_params(req.q("index"), req.q("wait"))?;
    if params.index > 0 {
        let timeout = blocking::with_jitter(params.wait);
        let rx = core.subscribe();
        blocking::block_until(rx, true, timeout, &core.cancel, || {
            ((), non_zero(core.read(&index_of)) > params.index)
        })
        .await;
    }
    let (resp, index) = core.read(&render);
    Ok(with_meta(resp, index, req.consistency()))
}

fn parse_u64_param(req: &Req, name: &str) -> Result<Option<u64>, ApiError> {
    match req.q(name) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            ApiError::internal(format!("strconv.ParseUint: parsing {v:?}: invalid syntax"))
        }),
    }
}

async fn kv(core: &Arc<Core>, req: &Req, key: &str) -> ApiResult {
    match req.method {
        Method::GET => kv_get(core, req, key).await,
        Method::PUT => kv_put(core, req, key).await,
        _ => kv_delete(core, req, key).await,
    }
}

async fn kv_get(core: &Arc<Core>, req: &Req, key: &str) -> ApiResult {
    let recurse = req.has("recurse");
    let keys = req.has("keys");
    if key.is_empty() && !recurse && !keys {
        return Err(ApiError::bad("Missing key name"));
    }
    let key = key.to_string();
    if keys {
        let sep = req
            .q("separator")
            .or_else(|| req.q("seperator"))
            .map(str::to_string);
        return blocking_read(
            core,
            req,
            |s| s.kv.list_index(&key),
            |s| {
                let list = s.kv.keys(&key, sep.as_deref());
                let idx = s.kv.list_index(&key);
                if list.is_empty() && !key.is_empty() {
                    (Resp::new(StatusCode::NOT_FOUND, Bytes::new(), None), idx)
                } else {
                    (json_resp(&json!(list)), idx)
                }
            },
        )
        .await;
    }
    if recurse {
        return blocking_read(
            core,
            req,
            |s| s.kv.list_index(&key),
            |s| {
                let list = s.kv.list(&key);
                let idx = s.kv.list_index(&key);
                if list.is_empty() {
                    (Resp::new(StatusCode::NOT_FOUND, Bytes::new(), None), idx)
                } else {
                    let items: Vec<Value> = list.iter().map(|e| e.to_json(true)).collect();
                    (json_resp(&Value::Array(items)), idx)
                }
            },
        )
        .await;
    }
    let raw = req.has("raw");
    blocking_read(
        core,
        req,
        |s| s.kv.get_index(&key),
        |s| {
            let idx = s.kv.get_index(&key);
            match s.kv.entries.get(&key) {
                None => (Resp::new(StatusCode::NOT_FOUND, Bytes::new(), None), idx),
                Some(e) if raw => (
                    Resp::new(StatusCode::OK, e.value.clone(), Some("text/plain"))
                        .header("X-Content-Type-Options", "nosniff")
                        .header("Content-Security-Policy", "sandbox"),
                    idx,
                ),
                Some(e) => (json_resp(&json!([e.to_json(true)])), idx),
            }
        },
    )
    .await
}

fn bool_resp(b: bool) -> Resp {
    json_resp(&Value::Bool(b))
}

async fn kv_put(core: &Arc<Core>, req: &Req, key: &str) -> ApiResult {
    if key.is_empty() {
        return Err(ApiError::bad("Missing key name"));
    }
    let flagged = ["cas", "acquire", "release"]
        .iter()
        .filter(|f| req.has(f))
        .count();
    if flagged > 1 {
        return Err(ApiError::bad(format!(
            "Conflicting flags: {}",
            req.raw_query
        )));
    }
    let flags = parse_u64_param(req, "flags")?.unwrap_or(0);
    let cas = parse_u64_param(req, "cas")?;
    if req.body.len() > MAX_KV_VALUE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body({} bytes) too large, max size: {MAX_KV_VALUE} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
                req.body.len()
            ),
        ));
    }
    let cmd = if let Some(session) = req.q("acquire") {
        if session.is_empty() {
            return Err(ApiError::internal("missing session"));
        }
        Command::KvAcquire {
            key: key.to_string(),
            value: req.body.to_vec(),
            flags,
            session: session.to_string(),
        }
    } else if let Some(session) = req.q("release") {
        if session.is_empty() {
            return Err(ApiError::internal("missing session"));
        }
        Command::KvRelease {
            key: key.to_string(),
            value: req.body.to_vec(),
            flags,
            session: session.to_string(),
        }
    } else {
        Command::KvSet {
            key: key.to_string(),
            value: req.body.to_vec(),
            flags,
            cas,
        }
    };
    outcome_bool(core.write_async(cmd).await?.outcome)
}

fn outcome_bool(o: Outcome) -> ApiResult {
    match o {
        Outcome::Bool(b) => Ok(bool_resp(b)),
        _ => Ok(bool_resp(true)),
    }
}

async fn kv_delete(core: &Arc<Core>, req: &Req, key: &str) -> ApiResult {
    let recurse = req.has("recurse");
    if recurse && req.has("cas") {
        return Err(ApiError::bad(format!(
            "Conflicting flags: {}",
            req.raw_query
        )));
    }
    if key.is_empty() && !recurse {
        return Err(ApiError::bad("Missing key name"));
    }
    let cmd = if recurse {
        Command::KvDeleteTree {
            prefix: key.to_string(),
        }
    } else {
        Command::KvDelete {
            key: key.to_string(),
            cas: parse_u64_param(req, "cas")?,
        }
    };
    outcome_bool(core.write_async(cmd).await?.outcome)
}

fn parse_txn(body: &[u8]) -> Result<Vec<TxnOp>, ApiError> {
    use base64::Engine;
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("Failed to parse body: {e}")))?;
    let Value::Array(items) = v else {
        return Err(ApiError::bad(
            "Failed to parse body: expected a JSON array of operations",
        ));
    };
    if items.len() > MAX_TXN_OPS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
                items.len()
            ),
        ));
    }
    let mut ops = Vec::with_capacity(items.len());
    for item in items {
        let kv = item
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("kv")))
            .map(|(_, v)| v)
            .and_then(Value::as_object)
            .ok_or_else(|| {
                ApiError::bad("Failed to parse body: only KV operations are supported")
            })?;
        let get = |name: &str| {
            kv.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let s = |name: &str| get(name).and_then(Value::as_str).unwrap_or("").to_string();
        let n = |name: &str| get(name).and_then(Value::as_u64).unwrap_or(0);
        let value = match get("Value") {
            Some(Value::String(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map_err(|e| ApiError::bad(format!("Failed to parse body: {e}")))?,
            _ => Vec::new(),
        };
        ops.push(TxnOp {
            verb: s("Verb"),
            key: s("Key"),
            value,
            flags: n("Flags"),
            index: n("Index"),
            session: s("Session"),
        });
    }
    Ok(ops)
}

fn txn_resp(outcome: TxnOutcome) -> Resp {
    match outcome {
        TxnOutcome::Committed(results) => {
            json_resp(&json!({"Results": results, "Errors": Value::Null}))
        }
        TxnOutcome::RolledBack(errors) => {
            let errs: Vec<Value> = errors
                .into_iter()
                .map(|(i, what)| json!({"OpIndex": i, "What": what}))
                .collect();
            let mut r = json_resp(&json!({"Results": Value::Null, "Errors": errs}));
            r.status = StatusCode::CONFLICT;
            r
        }
    }
}

async fn txn(core: &Arc<Core>, req: &Req) -> ApiResult {
    if req.body.len() > MAX_KV_VALUE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body too large, max size: {MAX_KV_VALUE} bytes"),
        ));
    }
    let ops = parse_txn(&req.body)?;
    if !ops.iter().any(TxnOp::is_write) {
        // Read-only: no raft write, no index header.
        let outcome = core.read(|s| {
            let sessions = s.sessions.keys().cloned().collect();
            s.kv.clone().txn(s.raft_index, &ops, &sessions)
        });
        return Ok(txn_resp(outcome)
            .header("X-Consul-KnownLeader", "true")
            .header("X-Consul-LastContact", "0"));
    }
    let applied = core.write_async(Command::Txn { ops }).await?;
    match applied.outcome {
        Outcome::Txn(t) => Ok(txn_resp(t)),
        _ => Err(ApiError::internal("unexpected transaction outcome")),
    }
}

fn parse_body(req: &Req) -> Result<Value, ApiError> {
    if req.body.is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad(format!("Request decode failed: {e}")))
}

fn content_hash(v: &Value) -> String {
    let mut h = DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016x}", h.finish())
}

async fn agent(core: &Arc<Core>, req: &Req, p: &str) -> ApiResult {
    match p {
        "self" => {
            allow(req, &["GET"])?;
            return Ok(core.read(|s| {
                json_resp(&json!({
                    "Config": {
                        "Datacenter": s.node.datacenter,
                        "PrimaryDatacenter": s.node.datacenter,
                        "NodeName": s.node.name,
                        "NodeID": s.node.id,
                        "Server": true,
                        "Revision": "",
                        "Version": "1.21.0",
                    },
                    "Member": {
                        "Name": s.node.name,
                        "Addr": s.node.address,
                        "Port": 8301,
                        "Tags": {"dc": s.node.datacenter, "role": "consul"},
                        "Status": 1,
                    },
                    "Meta": {},
                    "Stats": {},
                }))
            }));
        }
        "services" => {
            allow(req, &["GET"])?;
            return Ok(core.read(|s| json_resp(&s.agent_services())));
        }
        "checks" => {
            allow(req, &["GET"])?;
            return Ok(core.read(|s| json_resp(&s.agent_checks())));
        }
        "service/register" => {
            allow(req, &["PUT"])?;
            let (service, checks) = parse_service_registration(&parse_body(req)?)?;
            let replace = req
                .q("replace-existing-checks")
                .is_some_and(|v| parse_go_bool(v).unwrap_or(false));
            core.write_async(Command::RegisterService {
                service: Box::new(service),
                checks,
                replace_existing_checks: replace,
            })
            .await?;
            return Ok(Resp::empty());
        }
        "check/register" => {
            allow(req, &["PUT"])?;
            let check = parse_check_registration(&parse_body(req)?)?;
            core.write_async(Command::RegisterCheck {
                check: Box::new(check),
            })
            .await?;
            return Ok(Resp::empty());
        }
        _ => {}
    }
    if let Some(id) = p.strip_prefix("service/deregister/") {
        allow(req, &["PUT"])?;
        core.write_async(Command::DeregisterService { id: id.to_string() })
            .await?;
        return Ok(Resp::empty());
    }
    if let Some(id) = p.strip_prefix("service/maintenance/") {
        allow(req, &["PUT"])?;
        let enable = match req.q("enable") {
            None | Some("") => return Err(ApiError::bad("Missing value for enable")),
            Some(v) => parse_go_bool(v)
                .ok_or_else(|| ApiError::bad(format!("Invalid value for enable: {v:?}")))?,
        };
        core.write_async(Command::ServiceMaintenance {
            id: id.to_string(),
            enable,
            reason: req.q("reason").unwrap_or("").to_string(),
        })
        .await?;
        return Ok(Resp::empty());
    }
    if let Some(id) = p.strip_prefix("service/") {
        allow(req, &["GET"])?;
        return agent_service(core, req, id).await;
    }
    if let Some(id) = p.strip_prefix("check/deregister/") {
        allow(req, &["PUT"])?;
        core.write_async(Command::DeregisterCheck { id: id.to_string() })
            .await?;
        return Ok(Resp::empty());
    }
    for (prefix, status) in [
        ("check/pass/", PASSING),
        ("check/warn/", WARNING),
        ("check/fail/", CRITICAL),
    ] {
        if let Some(id) = p.strip_prefix(prefix) {
            allow(req, &["PUT"])?;
            let note = req.q("note").unwrap_or("").to_string();
            return ttl_update(core, id, status, &note).await;
        }
    }
    if let Some(id) = p.strip_prefix("check/update/") {
        allow(req, &["PUT"])?;
        let body = parse_body(req)?;
        let get = |name: &str| {
            body.as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let status = get("Status");
        if ![PASSING, WARNING, CRITICAL].contains(&status.as_str()) {
            return Err(ApiError::bad(format!("Invalid check status: '{status}'")));
        }
        return ttl_update(core, id, &status, &get("Output")).await;
    }
    if let Some(id) = p.strip_prefix("health/service/id/") {
        allow(req, &["GET"])?;
        let text = req.q("format") == Some("text");
        let found = core.read(|s| s.agent_service_health(id));
        let Some((status, body)) = found else {
            return Err(ApiError::not_found(format!("ServiceId {id} not found")));
        };
        let code = match status.as_str() {
            PASSING => StatusCode::OK,
            WARNING => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut r = if text {
            Resp::text(code, status)
        } else {
            json_resp(&body)
        };
        r.status = code;
        return Ok(r);
    }
    Err(unknown_path())
}

fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

async fn session(core: &Arc<Core>, req: &Req, p: &str) -> ApiResult {
    if p == "create" {
        allow(req, &["PUT"])?;
        let body = parse_body(req)?;
        let node = core.read(|s| s.node.name.clone());
        let rec = parse_session_create(&body, random_uuid(), &node, core.config.min_session_ttl)?;
        let (id, ttl) = (rec.id.clone(), rec.ttl);
        core.write_async(Command::SessionCreate {
            session: Box::new(rec),
        })
        .await?;
        if let Some(ttl) = ttl {
            touch_session(core, &id, ttl);
        }
        return Ok(json_resp(&json!({"ID": id})));
    }
    if let Some(id) = p.strip_prefix("destroy/") {
        allow(req, &["PUT"])?;
        core.write_async(Command::SessionDestroy { id: id.to_string() })
            .await?;
        return Ok(bool_resp(true));
    }
    if let Some(id) = p.strip_prefix("renew/") {
        allow(req, &["PUT"])?;
        let found = core.read(|s| s.sessions.get(id).map(|r| (r.to_json(), r.ttl)));
        let Some((v, ttl)) = found else {
            return Err(ApiError::not_found(format!("Session id '{id}' not found")));
        };
        if let Some(ttl) = ttl {
            touch_session(core, id, ttl);
        }
        return Ok(json_resp(&json!([v])));
    }
    if let Some(id) = p.strip_prefix("info/") {
        allow(req, &["GET"])?;
        return blocking_read(
            core,
            req,
            |s| s.idx.sessions,
            |s| (json_resp(&s.sessions_json(|r| r.id == id)), s.idx.sessions),
        )
        .await;
    }
    if let Some(node) = p.strip_prefix("node/") {
        allow(req, &["GET"])?;
        return blocking_read(
            core,
            req,
            |s| s.idx.sessions,
            |s| {
                (
                    json_resp(&s.sessions_json(|r| r.node == node)),
                    s.idx.sessions,
                )
            },
        )
        .await;
    }
    if p == "list" {
        allow(req, &["GET"])?;
        return blocking_read(
            core,
            req,
            |s| s.idx.sessions,
            |s| (json_resp(&s.sessions_json(|_| true)), s.idx.sessions),
        )
        .await;
    }
    Err(unknown_path())
}

async fn ttl_update(core: &Arc<Core>, id: &str, status: &str, output: &str) -> ApiResult {
    let ttl = core.read(|s| s.checks.get(id).map(|c| c.def.ttl));
    let ttl = match ttl {
        None => {
            return Err(ApiError::not_found(
                ApplyError::UnknownCheck(id.to_string()).to_string(),
            ));
        }
        Some(None) => {
            return Err(ApiError::internal(format!(
                "CheckID {id:?} does not have associated TTL"
            )));
        }
        Some(Some(ttl)) => ttl,
    };
    core.write_async(Command::UpdateCheck {
        id: id.to_string(),
        status: status.to_string(),
        output: truncate_output(output),
    })
    .await?;
    touch_ttl(core, id, ttl);
    Ok(Resp::empty())
}

async fn agent_service(core: &Arc<Core>, req: &Req, id: &str) -> ApiResult {
    let params = blocking::parse_params(Some("0"), req.q("wait"))?;
    let want = req.q("hash").unwrap_or("").to_string();
    let timeout = blocking::with_jitter(params.wait);
    let rx = core.subscribe();
    let id = id.to_string();
    let found = blocking::block_until(rx, !want.is_empty(), timeout, &core.cancel, || {
        let v = core.read(|s| {
            s.services
                .get(&id)
                .filter(|r| r.on_agent())
                .map(|r| s.agent_service_json(r))
        });
        let out = v.map(|mut v| {
            let hash = content_hash(&v);
            v["ContentHash"] = Value::String(hash.clone());
            (v, hash)
        });
        let ready = match &out {
            Some((_, h)) => *h != want,
            None => true,
        };
        (out, ready)
    })
    .await;
    match found {
        Some((v, hash)) => Ok(json_resp(&v).header("X-Consul-ContentHash", hash)),
        None => Err(ApiError::not_found(format!("unknown service ID: {id}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool(""), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
