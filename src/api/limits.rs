//! Size limits of control API requests.
//!
//! Owns: the limits (request target, headers, body) and the check of a request's head against
//! them, with the status each one answers (414, 431, 413), plus [`body`], the only way a route
//! reads a request body.
//!
//! Must not: authenticate or route; the gate (`gate`) runs this check in front of every route.

use bytes::Bytes;
use warp::Filter;
use warp::http::{HeaderMap, StatusCode, header};

/// Longest request target (path and query string), in bytes: 414 above.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// Largest sum of header names and values, in bytes: 431 above.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body (a PEM bundle fits easily), in bytes: 413 above.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// A request over one of the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The path and query string are too long.
    #[error("the request target is {0} bytes long; at most {MAX_TARGET_BYTES} are accepted")]
    TargetTooLong(usize),
    /// The headers are too large.
    #[error("the request headers take {0} bytes; at most {MAX_HEADER_BYTES} are accepted")]
    HeadersTooLarge(usize),
    /// The announced body is too large.
    #[error("the request body is {0} bytes long; at most {MAX_BODY_BYTES} are accepted")]
    BodyTooLarge(u64),
}

impl LimitError {
    /// The status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            LimitError::TargetTooLong(_) => StatusCode::URI_TOO_LONG,
            LimitError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            LimitError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// Checks the head of a request: its path, raw query string and headers.
pub fn check(path: &str, query: &str, headers: &HeaderMap) -> Result<(), LimitError> {
    let target = path.len() + query.len();
    if target > MAX_TARGET_BYTES {
        return Err(LimitError::TargetTooLong(target));
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(LimitError::HeadersTooLarge(header_bytes));
    }
    // An announced length above the limit is refused before any byte is read; a body without
    // a length is bounded by `body` (411 there).
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        && length > MAX_BODY_BYTES
    {
        return Err(LimitError::BodyTooLarge(length));
    }
    Ok(())
}

/// The body of a request, at most [`MAX_BODY_BYTES`] (a `Content-Length` is required). Routes
/// that take a body read it through this filter.
pub fn body() -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(MAX_BODY_BYTES).and(warp::body::bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    #[test]
    fn target_header_and_body_limits() {
        let headers = HeaderMap::new();
        assert!(check("/v1/x", "a=b", &headers).is_ok());
        let long = "a".repeat(MAX_TARGET_BYTES);
        let e = check("/v1/x", &long, &headers).unwrap_err();
        assert_eq!(e.status(), 414);

        let mut big = HeaderMap::new();
        big.insert(
            "x-big",
            HeaderValue::from_str(&"b".repeat(MAX_HEADER_BYTES)).unwrap(),
        );
        assert_eq!(check("/", "", &big).unwrap_err().status(), 431);

        let mut body = HeaderMap::new();
        body.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(MAX_BODY_BYTES + 1),
        );
        assert_eq!(check("/", "", &body).unwrap_err().status(), 413);
        body.insert(header::CONTENT_LENGTH, HeaderValue::from(MAX_BODY_BYTES));
        assert!(check("/", "", &body).is_ok());
    }
}
