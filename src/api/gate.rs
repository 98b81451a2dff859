//! The gate in front of every control API route: size limits first (414, 431, 413), then
//! authentication (401 with `WWW-Authenticate`), whatever the method and path.
//!
//! Owns: wrapping the whole route tree, so that a route added later is covered by default,
//! and the answers of refused requests (DFP's JSON body with `Status: NOK`).
//!
//! Must not: decide limits or credentials itself (`limits` and `auth` do) or know any route.

use std::sync::Arc;

use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::path::FullPath;
use warp::reply::{Reply, Response};

use super::auth::ApiAuth;
use super::limits;
use crate::domain::ReconfigureEcho;

/// The message of a 401 answer.
pub const UNAUTHORIZED_MESSAGE: &str =
    "Unauthorized: this endpoint requires the API_TOKEN bearer token or API_USERS credentials";

/// The refusal of a request, if it is refused.
fn refusal(auth: &ApiAuth, path: &str, query: &str, headers: &HeaderMap) -> Option<Response> {
    if let Err(e) = limits::check(path, query, headers) {
        return Some(nok(e.status(), &e.to_string()));
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if auth.allows(path, authorization) {
        return None;
    }
    tracing::debug!(path, "API request refused: no valid credentials");
    let mut resp = nok(StatusCode::UNAUTHORIZED, UNAUTHORIZED_MESSAGE);
    for challenge in auth.challenges() {
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
    }
    Some(resp)
}

fn nok(status: StatusCode, message: &str) -> Response {
    let body = super::ResponseBody::from(ReconfigureEcho::from_params(
        &Default::default(),
        "NOK",
        message,
    ));
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// `inner` behind the gate: a refused request is answered here and never reaches `inner`.
pub fn gate<F>(
    auth: Arc<ApiAuth>,
    inner: F,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static
where
    F: Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
{
    let refused = warp::path::full()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and_then(move |path: FullPath, query: String, headers: HeaderMap| {
            let answer = refusal(&auth, path.as_str(), &query, &headers);
            async move { answer.ok_or_else(warp::reject::not_found) }
        });
    refused.or(inner).unify()
}
