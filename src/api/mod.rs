//! The control API, compatible with Docker Flow: Proxy 1.0.3.
//!
//! Owns: the routes (`/v1/docker-flow-proxy/{reconfigure,remove,reload,ping,config,cert,certs}`,
//! `/v1/test`, `/v2/test`, `/metrics` and its alias `/v1/docker-flow-proxy/metrics`; any HTTP
//! method; unknown paths 404 with an empty body), query
//! parsing (first value of each parameter, as DFP), the response bodies (DFP's 1.0.3 fields in
//! their order) and the single mapping of errors to status codes ([`ApiError`]).
//!
//! A `reconfigure` is validated (400 on bad input, nothing changed; custom template paths must
//! resolve inside `TEMPLATES_ROOT` and the templates must parse), persisted in Consul KV in
//! one transaction (503 when Consul fails, nothing half-written), handed to the reconciler, and
//! answered once it is live in HAProxy (500 with the reason otherwise, after restoring the
//! previous intent).
//!
//! Every route sits behind the gate (`gate`): size limits (`limits`), then authentication
//! (`auth`, `API_TOKEN` / `API_USERS`), so a route added to [`routes`] is covered by default.
//!
//! Must not: talk to HAProxy or build configuration; it only calls the intent store and the
//! reconciler.

pub mod auth;
mod certs;
mod gate;
pub mod limits;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::domain::{ReconfigureEcho, ServiceIntent, ServiceName};
use crate::intent_store::IntentStore;
use crate::reconcile::{ApplyError, ReconcilerHandle, chain};

mod routing;

/// DFP's message for `remove` without `serviceName`.
pub const REMOVE_MANDATORY_MESSAGE: &str = "The serviceName query is mandatory";

/// What the handlers need.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Where intents are persisted.
    pub store: IntentStore,
    /// The reconciler.
    pub reconciler: ReconcilerHandle,
    /// The live `haproxy.cfg`.
    pub config_path: PathBuf,
    /// `TEMPLATES_ROOT`: custom templates are checked against it before they are persisted.
    pub templates_root: PathBuf,
    /// TLS certificates (`cert` and `certs`).
    pub certs: crate::certs::CertStore,
    /// Ports no TCP or SNI service may take (`HTTP_PORT`, `HTTPS_PORT`).
    pub reserved_ports: Vec<u16>,
    /// The credentials every route but `ping` and the health checks requires.
    pub auth: auth::ApiAuth,
}

/// Every way a request can fail, mapped to a status code in one place.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: nothing was changed.
    #[error("{0}")]
    BadRequest(String),
    /// Consul or the proxy is not available: nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// The change could not go live.
    #[error("{0}")]
    Failed(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Stopped | ApplyError::NotReady => ApiError::Unavailable(e.to_string()),
            ApplyError::Failed(m) => ApiError::Failed(m),
        }
    }
}

/// DFP's response body: `Status, Message, ServiceName, ServiceColor, ServicePath,
/// ServiceDomain, ConsulTemplateFePath, ConsulTemplateBePath, PathType, SkipCheck`.
#[derive(Debug, Serialize)]
pub struct ResponseBody {
    #[serde(rename = "Status")]
    status: String,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "ServiceName")]
    service_name: String,
    #[serde(rename = "ServiceColor")]
    service_color: String,
    #[serde(rename = "ServicePath")]
    service_path: Option<Vec<String>>,
    #[serde(rename = "ServiceDomain")]
    service_domain: String,
    #[serde(rename = "ConsulTemplateFePath")]
    consul_template_fe_path: String,
    #[serde(rename = "ConsulTemplateBePath")]
    consul_template_be_path: String,
    #[serde(rename = "PathType")]
    path_type: String,
    #[serde(rename = "SkipCheck")]
    skip_check: bool,
    /// Only when set, so a request of DFP 1.0.3 gets 1.0.3's exact body.
    #[serde(rename = "HttpsOnly", skip_serializing_if = "std::ops::Not::not")]
    https_only: bool,
    #[serde(rename = "HttpsRedirectCode", skip_serializing_if = "String::is_empty")]
    https_redirect_code: String,
    /// The routing parameters that were given (`Users`, `ReqMode`, ...), after `SkipCheck`.
    #[serde(flatten)]
    routing: serde_json::Map<String, serde_json::Value>,
}

impl From<ReconfigureEcho> for ResponseBody {
    fn from(e: ReconfigureEcho) -> Self {
        ResponseBody {
            status: e.status,
            message: e.message,
            service_name: e.service_name,
            service_color: e.service_color,
            service_path: e.service_path,
            service_domain: e.service_domain,
            consul_template_fe_path: e.consul_template_fe_path,
            consul_template_be_path: e.consul_template_be_path,
            path_type: e.path_type,
            skip_check: e.skip_check,
            https_only: e.https_only,
            https_redirect_code: e.https_redirect_code,
            routing: routing::echo_fields(e.routing),
        }
    }
}

type Params = BTreeMap<String, String>;

fn json(status: StatusCode, echo: ReconfigureEcho) -> Response {
    warp::reply::with_status(warp::reply::json(&ResponseBody::from(echo)), status).into_response()
}

fn ok(params: &Params) -> Response {
    json(
        StatusCode::OK,
        ReconfigureEcho::from_params(params, "OK", ""),
    )
}

fn error(params: &Params, e: &ApiError) -> Response {
    if matches!(e, ApiError::Failed(_) | ApiError::Unavailable(_)) {
        warn!(error = %e, "API request failed");
    }
    json(
        e.status(),
        ReconfigureEcho::from_params(params, "NOK", &e.to_string()),
    )
}

/// Parses a query string keeping the first value of each parameter, URL-decoded.
pub fn parse_query(raw: &str) -> Params {
    let mut out = Params::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// All routes, behind the gate (size limits, then authentication; `gate`). Path filters come
/// first and no method filter is used, so every method is accepted and unknown paths answer
/// 404 with an empty body.
pub fn routes(
    state: ApiState,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let auth = Arc::new(state.auth.clone());
    let state = Arc::new(state);
    let with_state = warp::any().map(move || Arc::clone(&state));
    let query = warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|raw: String| parse_query(&raw));
    let dfp = warp::path("v1").and(warp::path("docker-flow-proxy"));

    let reconfigure = dfp
        .and(warp::path("reconfigure"))
        .and(warp::path::end())
        .and(query)
        .and(with_state.clone())
        .then(|params: Params, state: Arc<ApiState>| async move {
            match reconfigure(&params, &state).await {
                Ok(echo) => json(StatusCode::OK, echo),
                Err(e) => error(&params, &e),
            }
        });
    let remove = dfp
        .and(warp::path("remove"))
        .and(warp::path::end())
        .and(query)
        .and(with_state.clone())
        .then(|params: Params, state: Arc<ApiState>| async move {
            match remove(&params, &state).await {
                Ok(()) => ok(&params),
                Err(e) => error(&params, &e),
            }
        });
    let reload = dfp
        .and(warp::path("reload"))
        .and(warp::path::end())
        .and(with_state.clone())
        .then(|state: Arc<ApiState>| async move {
            let result = match not_ready(&state) {
                Ok(()) => state.reconciler.reload().await.map_err(ApiError::from),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => ok(&Params::new()),
                Err(e) => error(&Params::new(), &e),
            }
        });
    let ping = dfp
        .and(warp::path("ping"))
        .and(warp::path::end())
        .and(with_state.clone())
        .map(|state: Arc<ApiState>| {
            if state.reconciler.status().ready {
                ok(&Params::new())
            } else {
                error(&Params::new(), &ApiError::from(ApplyError::NotReady))
            }
        });
    let config = dfp
        .and(warp::path("config"))
        .and(warp::path::end())
        .and(query)
        .and(with_state.clone())
        .then(|params: Params, state: Arc<ApiState>| async move { config(&params, &state).await });
    let test = warp::path("v1")
        .or(warp::path("v2"))
        .unify()
        .and(warp::path("test"))
        .and(warp::path::end())
        .map(|| ok(&Params::new()));
    let cert = dfp
        .and(warp::path("cert"))
        .and(warp::path::end())
        .and(query)
        .and(warp::body::stream().then(certs::read_body))
        .and(with_state.clone())
        .then(|params: Params, body, state: Arc<ApiState>| async move {
            certs::put(&params, body, &state).await
        });
    let cert_list = dfp
        .and(warp::path("certs"))
        .and(warp::path::end())
        .and(with_state.clone())
        .then(|state: Arc<ApiState>| async move { certs::list(&state).await });
    // DFP's `/v1/docker-flow-proxy/metrics` is an alias.
    let metrics = warp::path("metrics")
        .or(dfp.and(warp::path("metrics")))
        .unify()
        .and(warp::path::end())
        .and(with_state.clone())
        .map(|state: Arc<ApiState>| crate::metrics::reply(state.reconciler.metrics()));

    let all = reconfigure
        .or(remove)
        .unify()
        .or(reload)
        .unify()
        .or(ping)
        .unify()
        .or(config)
        .unify()
        .or(test)
        .unify()
        .or(metrics)
        .unify()
        .or(cert)
        .unify()
        .or(cert_list)
        .unify();
    gate::gate(auth, all)
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

fn not_ready(state: &ApiState) -> Result<(), ApiError> {
    if state.reconciler.status().ready {
        Ok(())
    } else {
        Err(ApplyError::NotReady.into())
    }
}

async fn reconfigure(params: &Params, state: &ApiState) -> Result<ReconfigureEcho, ApiError> {
    let intent = ServiceIntent::from_params(params).map_err(bad)?;
    if let Some(spec) = &intent.templates {
        // Refused before anything is written: a path outside TEMPLATES_ROOT, a missing file or
        // a template that does not parse.
        crate::custom::load(&state.templates_root, spec)
            .await
            .map_err(bad)?;
    }
    not_ready(state)?;
    // A route declared by tags is not the API's: a failed reconfigure removes the API intent
    // and the tags apply again.
    let status = state.reconciler.status();
    crate::domain::check_conflicts(&intent, status.intents.values(), &state.reserved_ports)
        .map_err(bad)?;
    let previous = (!status.tag_routed.contains(&intent.name))
        .then(|| status.intents.get(&intent.name).cloned())
        .flatten();
    state.store.put(&intent).await.map_err(|e| {
        ApiError::Unavailable(format!("Could not send data to Consul: {}", chain(&e)))
    })?;
    info!(service = %intent.name, "reconfigure: intent persisted");
    match state.reconciler.put(intent.clone()).await {
        Ok(()) => Ok(ReconfigureEcho::ok(&intent)),
        Err(e) => {
            restore(state, &intent.name, previous).await;
            Err(e.into())
        }
    }
}

/// Puts back the intent a failed reconfigure replaced, in KV and in the reconciler.
async fn restore(state: &ApiState, name: &ServiceName, previous: Option<ServiceIntent>) {
    let result = match &previous {
        Some(intent) => state.store.put(intent).await,
        None => state.store.remove(name).await,
    };
    if let Err(e) = result {
        warn!(service = %name, error = %chain(&e), "cannot restore the previous intent in Consul KV");
        return;
    }
    let applied = match previous {
        Some(intent) => state.reconciler.put(intent).await,
        None => state.reconciler.remove(name.clone()).await,
    };
    if let Err(e) = applied {
        warn!(service = %name, error = %e, "cannot restore the previous intent");
    }
}

async fn remove(params: &Params, state: &ApiState) -> Result<(), ApiError> {
    let raw = params.get("serviceName").map(String::as_str).unwrap_or("");
    if raw.is_empty() {
        return Err(ApiError::BadRequest(REMOVE_MANDATORY_MESSAGE.to_owned()));
    }
    let name = ServiceName::new(raw)
        .map_err(|e| ApiError::BadRequest(format!("invalid serviceName {raw:?}: {e}")))?;
    not_ready(state)?;
    state.store.remove(&name).await.map_err(|e| {
        ApiError::Unavailable(format!("Could not remove data from Consul: {}", chain(&e)))
    })?;
    info!(service = %name, "remove: intent deleted");
    state.reconciler.remove(name).await?;
    Ok(())
}

#[derive(Serialize)]
struct ConfigJson {
    #[serde(rename = "Services")]
    services: Vec<ServiceJson>,
}

#[derive(Serialize)]
struct ServiceJson {
    #[serde(rename = "ServiceName")]
    service_name: String,
    #[serde(rename = "ServiceColor")]
    service_color: String,
    #[serde(rename = "CatalogService")]
    catalog_service: String,
    #[serde(rename = "Backend")]
    backend: String,
    #[serde(rename = "SkipCheck")]
    skip_check: bool,
    #[serde(rename = "Servers")]
    servers: usize,
    #[serde(rename = "Routes")]
    routes: Vec<RouteJson>,
    /// `api` (reconfigure, kept in Consul KV) or `tags` (declared by the service's tags).
    #[serde(rename = "Source")]
    source: &'static str,
    /// Custom templates only: the paths, and every backend the rendered templates define.
    #[serde(rename = "ConsulTemplatePath", skip_serializing_if = "Option::is_none")]
    consul_template_path: Option<String>,
    #[serde(
        rename = "ConsulTemplateFePath",
        skip_serializing_if = "Option::is_none"
    )]
    consul_template_fe_path: Option<String>,
    #[serde(
        rename = "ConsulTemplateBePath",
        skip_serializing_if = "Option::is_none"
    )]
    consul_template_be_path: Option<String>,
    #[serde(rename = "Backends", skip_serializing_if = "Option::is_none")]
    backends: Option<Vec<BackendJson>>,
}

#[derive(Serialize)]
struct BackendJson {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Servers")]
    servers: usize,
}

/// Fills the fields of a service with custom templates from its live rendered snippets: the
/// template paths, the backends, their servers, and the paths its `acl` lines match.
fn with_templates(
    mut json: ServiceJson,
    templates: &crate::domain::CustomTemplates,
    snippets: Option<&crate::render::CustomSnippets>,
) -> ServiceJson {
    use crate::domain::CustomTemplates as Spec;
    match templates {
        Spec::Whole(p) => json.consul_template_path = Some(p.as_str().to_owned()),
        Spec::Split { fe, be } => {
            json.consul_template_fe_path = Some(fe.as_str().to_owned());
            json.consul_template_be_path = Some(be.as_str().to_owned());
        }
    }
    let summary = snippets
        .map(crate::custom::summary::summarize)
        .unwrap_or_default();
    json.backend = summary
        .backends
        .first()
        .map(|b| b.name.clone())
        .unwrap_or_default();
    json.servers = summary.backends.iter().map(|b| b.servers).sum();
    json.routes = summary
        .routes
        .into_iter()
        .map(|r| RouteJson {
            path: r.path,
            path_type: r.path_type,
            domains: Vec::new(),
        })
        .collect();
    json.backends = Some(
        summary
            .backends
            .into_iter()
            .map(|b| BackendJson {
                name: b.name,
                servers: b.servers,
            })
            .collect(),
    );
    json
}

#[derive(Serialize)]
struct RouteJson {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "PathType")]
    path_type: String,
    #[serde(rename = "Domains")]
    domains: Vec<String>,
}

async fn config(params: &Params, state: &ApiState) -> Response {
    if let Some(kind) = params.get("type").filter(|t| !t.is_empty() && *t != "json") {
        return error(
            params,
            &ApiError::BadRequest(format!(
                "invalid type {kind:?}: the only accepted value is json"
            )),
        );
    }
    if params.get("type").map(String::as_str) == Some("json") {
        let status = state.reconciler.status();
        let services = status
            .intents
            .values()
            .map(|i| {
                let backend = status.plan.as_ref().and_then(|p| p.backends.get(&i.name));
                let json = ServiceJson {
                    service_name: i.name.to_string(),
                    service_color: i
                        .color
                        .as_ref()
                        .map(|c| c.as_str().to_owned())
                        .unwrap_or_default(),
                    catalog_service: i.catalog_service.to_string(),
                    backend: backend.map(|b| b.name.to_string()).unwrap_or_default(),
                    skip_check: i.skip_check,
                    servers: backend
                        .map(|b| b.slots.iter().filter(|s| s.server.is_some()).count())
                        .unwrap_or(0),
                    routes: i
                        .paths
                        .iter()
                        .map(|p| RouteJson {
                            path: p.to_string(),
                            path_type: i.path_type.to_string(),
                            domains: i.domains.iter().map(ToString::to_string).collect(),
                        })
                        .collect(),
                    source: if status.tag_routed.contains(&i.name) {
                        "tags"
                    } else {
                        "api"
                    },
                    consul_template_path: None,
                    consul_template_fe_path: None,
                    consul_template_be_path: None,
                    backends: None,
                };
                match &i.templates {
                    Some(t) => with_templates(json, t, status.custom.get(&i.name)),
                    None => json,
                }
            })
            .collect();
        return warp::reply::json(&ConfigJson { services }).into_response();
    }
    match tokio::fs::read_to_string(&state.config_path).await {
        Ok(text) => warp::reply::with_header(text, "content-type", "text/plain; charset=utf-8")
            .into_response(),
        Err(e) => warp::reply::with_status(
            format!(
                "Could not read the file {}: {e}",
                state.config_path.display()
            ),
            StatusCode::INTERNAL_SERVER_ERROR,
        )
        .into_response(),
    }
}

/// Serves the API on `listener` until `shutdown` fires. The caller bounds the wait for the
/// returned task (open connections can hold a graceful shutdown forever).
pub fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let server = warp::serve(routes(state))
        .incoming(listener)
        .graceful(shutdown.cancelled_owned());
    tokio::spawn(server.run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_the_first_value_url_decoded() {
        let p = parse_query("serviceName=go-demo&servicePath=%2Fdemo&serviceName=other&x");
        assert_eq!(p["serviceName"], "go-demo");
        assert_eq!(p["servicePath"], "/demo");
        assert_eq!(p["x"], "");
        assert!(parse_query("").is_empty());
    }

    #[test]
    fn one_mapping_of_errors_to_status_codes() {
        assert_eq!(ApiError::BadRequest(String::new()).status(), 400);
        assert_eq!(ApiError::Unavailable(String::new()).status(), 503);
        assert_eq!(ApiError::Failed(String::new()).status(), 500);
        assert!(matches!(
            ApiError::from(ApplyError::NotReady),
            ApiError::Unavailable(_)
        ));
        assert!(matches!(
            ApiError::from(ApplyError::Failed("x".into())),
            ApiError::Failed(m) if m == "x"
        ));
    }

    #[test]
    fn response_fields_keep_dfp_order() {
        let body = ResponseBody::from(ReconfigureEcho::from_params(&Params::new(), "OK", ""));
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"Status":"OK","Message":"","ServiceName":"","ServiceColor":"","ServicePath":null,"ServiceDomain":"","ConsulTemplateFePath":"","ConsulTemplateBePath":"","PathType":"","SkipCheck":false}"#
        );
    }
}
