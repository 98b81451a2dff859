//! The small transport seam between watchers and HTTP.
//!
//! Owns the [`Transport`] trait (one GET, possibly blocking) and its request/response types, so
//! watcher logic can run against a scripted fake. It must not interpret bodies or indexes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::error::ConsulError;

/// A GET request to Consul.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRequest {
    /// Unencoded path segments, e.g. `["v1", "health", "service", "web"]`. A trailing empty
    /// segment produces a trailing `/`.
    pub segments: Vec<String>,
    /// Extra query parameters (`("recurse", "")` is sent as a bare `recurse`).
    pub query: Vec<(String, String)>,
    /// Blocking parameters, or `None` for a plain read.
    pub blocking: Option<Blocking>,
}

/// Blocking-query parameters of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// The index to wait beyond; 0 means "answer at once".
    pub index: u64,
    /// The server-side wait.
    pub wait: Duration,
}

impl GetRequest {
    /// A plain read of `segments`.
    pub fn new<S: Into<String>>(segments: impl IntoIterator<Item = S>) -> Self {
        GetRequest {
            segments: segments.into_iter().map(Into::into).collect(),
            query: Vec::new(),
            blocking: None,
        }
    }

    /// Adds a query parameter.
    pub fn with_query(mut self, key: &str, value: &str) -> Self {
        self.query.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The path, joined with `/` (for logs and fakes).
    pub fn path(&self) -> String {
        format!("/{}", self.segments.join("/"))
    }
}

/// A response that reached the application: any 2xx, or a 404 (which carries index headers for
/// KV reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// `X-Consul-Index`, if present and numeric.
    pub index: Option<u64>,
    /// The body.
    pub body: Bytes,
}

/// One GET against Consul. Other status codes than 2xx and 404 are errors.
pub trait Transport: Send + Sync + 'static {
    /// Performs the request. A blocking request must be given a timeout above
    /// `wait + wait/16`; its expiry is reported as [`ConsulError::Timeout`].
    fn get(&self, request: GetRequest) -> BoxFuture<'_, Result<RawResponse, ConsulError>>;
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn get(&self, request: GetRequest) -> BoxFuture<'_, Result<RawResponse, ConsulError>> {
        (**self).get(request)
    }
}
