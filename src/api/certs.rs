//! DFP's certificate endpoints: `PUT /v1/docker-flow-proxy/cert?certName=...` (body: a PEM
//! bundle) and `GET /v1/docker-flow-proxy/certs`.
//!
//! Owns: the request checks (a missing `certName` or an empty body is a 400 before anything
//! else, a body larger than [`MAX_CERT_BODY`] too), the mapping of upload errors to status codes
//! and DFP's answer shapes (`{Status, Message}` for the upload, `{Status, Message, Certs:
//! [{ServicePort, ProxyServiceName, CertsDir, CertContent}]}` for the list). Must not store or
//! validate certificates itself (`certs` does).

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tracing::warn;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::{ApiError, ApiState, Params};
use crate::certs::PutError;
use crate::domain::CertName;

/// The largest accepted certificate body, in bytes.
pub const MAX_CERT_BODY: usize = 256 * 1024;

/// DFP's message when `certName` or the body is missing.
pub const CERT_MANDATORY_MESSAGE: &str =
    "certName query and the certificate in the request body are mandatory";

#[derive(Serialize)]
struct CertAnswer {
    #[serde(rename = "Status")]
    status: &'static str,
    #[serde(rename = "Message")]
    message: String,
}

#[derive(Serialize)]
struct CertJson {
    #[serde(rename = "ServicePort")]
    service_port: String,
    #[serde(rename = "ProxyServiceName")]
    proxy_service_name: String,
    #[serde(rename = "CertsDir")]
    certs_dir: String,
    #[serde(rename = "CertContent")]
    cert_content: String,
}

#[derive(Serialize)]
struct CertsAnswer {
    #[serde(rename = "Status")]
    status: &'static str,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "Certs")]
    certs: Vec<CertJson>,
}

fn answer(status: StatusCode, message: String) -> Response {
    let body = CertAnswer {
        status: if status == StatusCode::OK {
            "OK"
        } else {
            "NOK"
        },
        message,
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// Reads at most [`MAX_CERT_BODY`] bytes of a request body; `None` when it is larger.
pub async fn read_body<S, B>(mut stream: S) -> Result<Option<Vec<u8>>, warp::Error>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk?;
        if out.len() + chunk.remaining() > MAX_CERT_BODY {
            return Ok(None);
        }
        let bytes: Bytes = chunk.copy_to_bytes(chunk.remaining());
        out.extend_from_slice(&bytes);
    }
    Ok(Some(out))
}

/// `PUT /v1/docker-flow-proxy/cert`.
pub async fn put(
    params: &Params,
    body: Result<Option<Vec<u8>>, warp::Error>,
    state: &ApiState,
) -> Response {
    match put_inner(params, body, state).await {
        Ok(name) => answer(
            StatusCode::OK,
            format!("certificate {name} is stored and served"),
        ),
        Err(e) => {
            if !matches!(e, ApiError::BadRequest(_)) {
                warn!(error = %e, "certificate upload failed");
            }
            answer(e.status(), e.to_string())
        }
    }
}

async fn put_inner(
    params: &Params,
    body: Result<Option<Vec<u8>>, warp::Error>,
    state: &ApiState,
) -> Result<CertName, ApiError> {
    let raw = params.get("certName").map(String::as_str).unwrap_or("");
    let body = body.map_err(|e| ApiError::BadRequest(format!("cannot read the body: {e}")))?;
    let Some(body) = body else {
        return Err(ApiError::BadRequest(format!(
            "the certificate body is larger than {MAX_CERT_BODY} bytes"
        )));
    };
    if raw.is_empty() || body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(CERT_MANDATORY_MESSAGE.to_owned()));
    }
    let name = CertName::new(raw).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    state
        .certs
        .put(&name, &body, &state.reconciler)
        .await
        .map_err(|e| match e {
            PutError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            PutError::Consul(_) => ApiError::Unavailable(e.to_string()),
            PutError::NotReady(a) => ApiError::from(a),
            PutError::Failed(_) => ApiError::Failed(e.to_string()),
        })?;
    Ok(name)
}

/// `GET /v1/docker-flow-proxy/certs`: every served certificate (the generated default left
/// out), its PEM bundle included as DFP did (replicas fetched it from their peers).
pub async fn list(state: &ApiState) -> Response {
    let certs = state
        .certs
        .list()
        .await
        .into_iter()
        .map(|c| CertJson {
            service_port: String::new(),
            proxy_service_name: c.name.to_string(),
            certs_dir: c.dir.display().to_string(),
            cert_content: c.pem,
        })
        .collect();
    warp::reply::json(&CertsAnswer {
        status: "OK",
        message: String::new(),
        certs,
    })
    .into_response()
}
