//! The Consul HTTP client: address failover, token, TLS, timeouts and status handling.
//!
//! Owns the `reqwest` client and how requests are built and answered. Typed endpoints live in
//! `kv.rs`, `txn.rs`, `catalog.rs` and `agent.rs`. It must not loop, retry or interpret indexes;
//! that is the watchers' job.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, Url};

use super::config::{ConfigError, ConsulAddress, ConsulConfig, read_bytes};
use super::error::ConsulError;
use super::transport::{Blocking, GetRequest, RawResponse, Transport};

/// Header carrying the ACL token.
const TOKEN_HEADER: &str = "X-Consul-Token";
/// Header carrying the blocking index.
const INDEX_HEADER: &str = "X-Consul-Index";
/// Longest error body kept in [`ConsulError::Status`].
const MAX_ERROR_BODY: usize = 512;

/// Told about every request the client finishes (metrics): `kind` is `read` or `write`,
/// `blocking` whether it was a blocking query, `ok` whether it got an answer.
pub trait RequestObserver: Send + Sync {
    /// One finished request.
    fn observe(&self, kind: &'static str, blocking: bool, elapsed: Duration, ok: bool);
}

/// A Consul HTTP client. Cheap to clone: clones share connections and the remembered address.
#[derive(Clone)]
pub struct ConsulClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    addresses: Vec<ConsulAddress>,
    /// Index into `addresses` of the address that last worked.
    current: AtomicUsize,
    datacenter: Option<String>,
    stale: bool,
    request_timeout: Duration,
    blocking_margin: Duration,
    observer: std::sync::OnceLock<Arc<dyn RequestObserver>>,
}

impl std::fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulClient")
            .field("addresses", &self.inner.addresses)
            .field("datacenter", &self.inner.datacenter)
            .field("stale", &self.inner.stale)
            .finish_non_exhaustive()
    }
}

/// What kind of request is being sent (decides `?stale` and address failover).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

impl ConsulClient {
    /// Builds a client: reads the token and PEM files, configures TLS (rustls with ring),
    /// disables proxies, and sets a short connect timeout and a client-wide timeout for
    /// non-blocking calls.
    pub fn new(config: &ConsulConfig) -> Result<Self, ConfigError> {
        crate::tls::install_crypto_provider();
        let mut headers = HeaderMap::new();
        if let Some(token) = config.resolve_token()? {
            let mut value = HeaderValue::from_str(&token).map_err(|_| ConfigError::InvalidToken)?;
            value.set_sensitive(true);
            headers.insert(TOKEN_HEADER, value);
        }
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .tcp_keepalive(Duration::from_secs(15));
        if let Some(ca) = &config.ca_cert {
            let pem = read_bytes(ca, "CA certificate")?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| ConfigError::Tls {
                    what: "CA certificate",
                    source,
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&config.client_cert, &config.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read_bytes(cert, "client certificate")?;
                pem.push(b'\n');
                pem.extend(read_bytes(key, "client key")?);
                let identity =
                    reqwest::Identity::from_pem(&pem).map_err(|source| ConfigError::Tls {
                        what: "client certificate and key",
                        source,
                    })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err(ConfigError::IncompleteClientIdentity),
        }
        let http = builder.build().map_err(|source| ConfigError::Tls {
            what: "HTTP client",
            source,
        })?;
        Ok(ConsulClient {
            inner: Arc::new(Inner {
                http,
                addresses: config.addresses.clone(),
                current: AtomicUsize::new(0),
                datacenter: config.datacenter.clone(),
                stale: config.stale,
                request_timeout: config.request_timeout,
                blocking_margin: config.blocking_margin,
                observer: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Sets the observer told about every request of this client and its clones (only the
    /// first call counts).
    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        let _ = self.inner.observer.set(observer);
    }

    fn observed<T>(
        &self,
        kind: &'static str,
        blocking: bool,
        started: std::time::Instant,
        result: Result<T, ConsulError>,
    ) -> Result<T, ConsulError> {
        if let Some(observer) = self.inner.observer.get() {
            observer.observe(kind, blocking, started.elapsed(), result.is_ok());
        }
        result
    }

    /// The base URL currently preferred.
    pub fn current_address(&self) -> String {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.addresses.len().max(1);
        self.inner
            .addresses
            .get(i)
            .map(ConsulAddress::base_url)
            .unwrap_or_default()
    }

    /// The per-request timeout of a blocking call: `wait + wait/16 + margin`.
    pub fn blocking_timeout(&self, wait: Duration) -> Duration {
        wait + wait / 16 + self.inner.blocking_margin
    }

    fn url(
        &self,
        address: &ConsulAddress,
        segments: &[String],
        query: &[(String, String)],
        kind: Kind,
        blocking: Option<Blocking>,
    ) -> Result<Url, ConsulError> {
        let mut url =
            Url::parse(&address.base_url()).map_err(|e| ConsulError::Build(e.to_string()))?;
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| ConsulError::Build("address cannot be a base".into()))?;
            path.clear();
            path.extend(segments);
        }
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(dc) = &self.inner.datacenter {
                pairs.append_pair("dc", dc);
            }
            if kind == Kind::Read && self.inner.stale {
                pairs.append_key_only("stale");
            }
            for (k, v) in query {
                if v.is_empty() {
                    pairs.append_key_only(k);
                } else {
                    pairs.append_pair(k, v);
                }
            }
            if let Some(b) = blocking {
                pairs.append_pair("index", &b.index.to_string());
                pairs.append_pair("wait", &format!("{}ms", b.wait.as_millis()));
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }

    /// Sends a request, trying the next address on a connect failure and remembering the one
    /// that answered.
    async fn send(
        &self,
        method: Method,
        segments: &[String],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
        kind: Kind,
        blocking: Option<Blocking>,
    ) -> Result<reqwest::Response, ConsulError> {
        let n = self.inner.addresses.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let timeout = match blocking {
            Some(b) if b.index > 0 => self.blocking_timeout(b.wait),
            _ => self.inner.request_timeout,
        };
        let mut last_connect_error = None;
        for attempt in 0..n {
            let i = (start + attempt) % n;
            let Some(address) = self.inner.addresses.get(i) else {
                continue;
            };
            let url = self.url(address, segments, query, kind, blocking)?;
            let mut req = self
                .inner
                .http
                .request(method.clone(), url)
                .timeout(timeout);
            if let Some(body) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            match req.send().await {
                Ok(resp) => {
                    if attempt > 0 {
                        tracing::info!(address = %address.base_url(), "switched Consul address");
                    }
                    self.inner.current.store(i, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(e) if e.is_timeout() => return Err(ConsulError::Timeout),
                Err(e) if e.is_connect() => {
                    tracing::debug!(address = %address.base_url(), error = %e, "Consul address unreachable");
                    last_connect_error = Some((address.base_url(), e));
                }
                Err(e) => return Err(ConsulError::Transport(e)),
            }
        }
        match last_connect_error {
            Some((address, source)) => Err(ConsulError::Connect { address, source }),
            None => Err(ConsulError::Build("no Consul address configured".into())),
        }
    }

    async fn read_body(resp: reqwest::Response) -> Result<Bytes, ConsulError> {
        resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                ConsulError::Timeout
            } else {
                ConsulError::Transport(e)
            }
        })
    }

    /// Performs a GET; 2xx and 404 are answers, other statuses errors.
    pub async fn get_raw(&self, request: GetRequest) -> Result<RawResponse, ConsulError> {
        let started = std::time::Instant::now();
        let blocking = request.blocking.is_some_and(|b| b.index > 0);
        let result = self.get_unobserved(request).await;
        self.observed("read", blocking, started, result)
    }

    async fn get_unobserved(&self, request: GetRequest) -> Result<RawResponse, ConsulError> {
        let resp = self
            .send(
                Method::GET,
                &request.segments,
                &request.query,
                None,
                Kind::Read,
                request.blocking,
            )
            .await?;
        let status = resp.status().as_u16();
        let index = resp
            .headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = Self::read_body(resp).await?;
        if (200..300).contains(&status) || status == 404 {
            Ok(RawResponse {
                status,
                index,
                body,
            })
        } else {
            Err(status_error(status, &body))
        }
    }

    /// Performs a write (PUT/DELETE) and returns status and body; non-2xx statuses other than
    /// those in `accept` are errors.
    pub(crate) async fn write_raw(
        &self,
        method: Method,
        segments: &[String],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
        accept: &[u16],
    ) -> Result<(u16, Bytes), ConsulError> {
        let started = std::time::Instant::now();
        let result = self
            .write_unobserved(method, segments, query, body, accept)
            .await;
        self.observed("write", false, started, result)
    }

    async fn write_unobserved(
        &self,
        method: Method,
        segments: &[String],
        query: &[(String, String)],
        body: Option<Vec<u8>>,
        accept: &[u16],
    ) -> Result<(u16, Bytes), ConsulError> {
        let resp = self
            .send(method, segments, query, body, Kind::Write, None)
            .await?;
        let status = resp.status().as_u16();
        let body = Self::read_body(resp).await?;
        if (200..300).contains(&status) || accept.contains(&status) {
            Ok((status, body))
        } else {
            Err(status_error(status, &body))
        }
    }
}

pub(crate) fn status_error(status: u16, body: &[u8]) -> ConsulError {
    let text = String::from_utf8_lossy(body);
    let mut text = text.trim().to_owned();
    if text.len() > MAX_ERROR_BODY {
        let mut cut = MAX_ERROR_BODY;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    ConsulError::Status { status, body: text }
}

impl Transport for ConsulClient {
    fn get(&self, request: GetRequest) -> BoxFuture<'_, Result<RawResponse, ConsulError>> {
        Box::pin(self.get_raw(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(addrs: &str, f: impl FnOnce(ConsulConfig) -> ConsulConfig) -> ConsulClient {
        ConsulClient::new(&f(ConsulConfig::new(addrs).unwrap())).unwrap()
    }

    #[test]
    fn urls() {
        let c = client("http://hotel:8500", |c| {
            c.with_datacenter(Some("dc2".into()))
                .unwrap()
                .with_stale(true)
        });
        let addr = &c.inner.addresses[0];
        let segs: Vec<String> = ["v1", "kv", "a b", "c/"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let u = c
            .url(
                addr,
                &segs,
                &[("recurse".into(), String::new())],
                Kind::Read,
                Some(Blocking {
                    index: 7,
                    wait: Duration::from_secs(60),
                }),
            )
            .unwrap();
        assert_eq!(
            u.as_str(),
            "http://hotel:8500/v1/kv/a%20b/c%2F?dc=dc2&stale&recurse&index=7&wait=60000ms"
        );
        let u = c.url(addr, &segs[..2], &[], Kind::Write, None).unwrap();
        assert_eq!(u.as_str(), "http://hotel:8500/v1/kv?dc=dc2");
        assert_eq!(
            c.blocking_timeout(Duration::from_secs(160)),
            Duration::from_secs(180)
        );
    }

    #[tokio::test]
    async fn fails_over_to_the_next_address_and_remembers_it() {
        // Port 9 on loopback is closed in the test environment: connect is refused at once.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nX-Consul-Index: 5\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    )
                    .await;
            }
        });
        let c = client(&format!("127.0.0.1:9,127.0.0.1:{port}"), |c| c);
        let r = c
            .get_raw(GetRequest::new(["v1", "catalog", "services"]))
            .await
            .unwrap();
        assert_eq!((r.status, r.index), (200, Some(5)));
        assert_eq!(c.current_address(), format!("http://127.0.0.1:{port}"));
    }

    /// One request as seen by the test server.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    type Handler =
        Arc<dyn Fn(&Seen) -> (u16, Vec<(String, String)>, Vec<u8>, Duration) + Send + Sync>;

    /// A minimal HTTP/1.1 server: one request per connection, answered by `handler`.
    async fn serve(handler: Handler) -> (String, Arc<std::sync::Mutex<Vec<Seen>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let n = s.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap().split(' ');
                    let method = first.next().unwrap().to_owned();
                    let target = first.next().unwrap().to_owned();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(": "))
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .map(|(_, v)| v.parse().unwrap())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let n = s.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let req = Seen {
                        method,
                        target,
                        headers,
                        body: buf[head_end..head_end + len].to_vec(),
                    };
                    log.lock().unwrap().push(req.clone());
                    let (status, extra, body, delay) = handler(&req);
                    tokio::time::sleep(delay).await;
                    let mut out = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    for (k, v) in extra {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let _ = s.write_all(out.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        (addr, seen)
    }

    fn reply(
        status: u16,
        index: Option<u64>,
        body: &str,
    ) -> (u16, Vec<(String, String)>, Vec<u8>, Duration) {
        let headers = index
            .map(|i| vec![("X-Consul-Index".to_owned(), i.to_string())])
            .unwrap_or_default();
        (status, headers, body.as_bytes().to_vec(), Duration::ZERO)
    }

    #[tokio::test]
    async fn kv_calls_token_and_statuses() {
        let handler: Handler = Arc::new(|r: &Seen| match (r.method.as_str(), r.target.as_str()) {
            ("GET", "/v1/kv/missing") => reply(404, Some(9), ""),
            ("GET", "/v1/kv/a") => reply(
                200,
                Some(9),
                r#"[{"Key":"a","Value":"dGVzdA==","ModifyIndex":7}]"#,
            ),
            ("GET", "/v1/kv/svc/?recurse") => reply(404, Some(9), ""),
            ("GET", "/v1/kv/svc/?keys") => reply(200, Some(9), r#"["svc/a","svc/b"]"#),
            ("PUT", "/v1/kv/a?cas=0") => reply(200, None, "false"),
            ("PUT", "/v1/kv/a") => reply(200, None, "true"),
            ("DELETE", "/v1/kv/go-demo/?recurse") => reply(200, None, "true"),
            ("DELETE", "/v1/kv/a") => reply(200, None, "true"),
            ("PUT", "/v1/txn") => reply(
                409,
                None,
                r#"{"Results":null,"Errors":[{"OpIndex":1,"What":"failed index check for key \"b\""}]}"#,
            ),
            ("GET", "/v1/kv/denied") => reply(403, None, "Permission denied"),
            _ => reply(500, None, "No path to datacenter"),
        });
        let (addr, seen) = serve(handler).await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("t");
        std::fs::write(&token_file, "s3cret\n").unwrap();
        let c = client(&addr, |c| {
            c.with_token(Some("ignored".into()))
                .with_token_file(Some(token_file))
        });

        let key = super::super::KvKey::new("a").unwrap();
        let got = c.kv_get(&key).await.unwrap().unwrap();
        assert_eq!((got.value.as_slice(), got.modify_index), (&b"test"[..], 7));
        let missing = super::super::KvKey::new("missing").unwrap();
        assert_eq!(c.kv_get(&missing).await.unwrap(), None);
        let svc = super::super::KvPrefix::new("svc/").unwrap();
        assert!(c.kv_list(&svc).await.unwrap().is_empty());
        assert_eq!(c.kv_keys(&svc).await.unwrap(), ["svc/a", "svc/b"]);
        assert!(!c.kv_put(&key, b"v", Some(0)).await.unwrap());
        assert!(c.kv_put(&key, b"v", None).await.unwrap());
        assert!(c.kv_delete(&key).await.unwrap());
        let folder = super::super::KvPrefix::new("go-demo/").unwrap();
        assert!(c.kv_delete_prefix(&folder).await.unwrap());

        let ops = [
            super::super::TxnOp::Set {
                key: key.clone(),
                value: b"x".to_vec(),
            },
            super::super::TxnOp::CheckIndex {
                key: super::super::KvKey::new("b").unwrap(),
                index: 3,
            },
        ];
        match c.txn(&ops).await {
            Err(ConsulError::TxnConflict { errors }) => {
                assert_eq!(errors.len(), 1);
                assert_eq!(errors[0].op_index, 1);
                assert!(errors[0].what.contains("failed index check"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let denied = c.kv_get(&super::super::KvKey::new("denied").unwrap()).await;
        assert!(
            matches!(&denied, Err(e @ ConsulError::Status { status: 403, .. }) if !e.is_retryable())
        );
        let server_error = c.kv_get(&super::super::KvKey::new("other").unwrap()).await;
        assert!(
            matches!(&server_error, Err(e @ ConsulError::Status { status: 500, .. }) if e.is_retryable())
        );

        let seen = seen.lock().unwrap().clone();
        for r in &seen {
            let token = r
                .headers
                .iter()
                .find(|(k, _)| k == "x-consul-token")
                .map(|(_, v)| v.as_str());
            assert_eq!(token, Some("s3cret"), "{}", r.target);
        }
        let put = seen
            .iter()
            .find(|r| r.target == "/v1/kv/a" && r.method == "PUT")
            .unwrap();
        assert_eq!(put.body, b"v");
        let txn = seen.iter().find(|r| r.target == "/v1/txn").unwrap();
        assert_eq!(
            String::from_utf8_lossy(&txn.body),
            r#"[{"KV":{"Verb":"set","Key":"a","Value":"eA=="}},{"KV":{"Verb":"check-index","Key":"b","Index":3}}]"#
        );
    }

    #[tokio::test]
    async fn blocking_calls_send_index_and_wait_and_time_out_as_such() {
        let handler: Handler = Arc::new(|r: &Seen| {
            if r.target.contains("index=5") {
                let mut a = reply(200, Some(5), "{}");
                a.3 = Duration::from_secs(5);
                a
            } else {
                reply(200, Some(5), "{}")
            }
        });
        let (addr, seen) = serve(handler).await;
        let c = client(&addr, |mut c| {
            c.blocking_margin = Duration::from_millis(200);
            c
        });
        let mut req = GetRequest::new(["v1", "catalog", "services"]);
        req.blocking = Some(Blocking {
            index: 0,
            wait: Duration::from_millis(100),
        });
        let r = c.get_raw(req.clone()).await.unwrap();
        assert_eq!(r.index, Some(5));
        req.blocking = Some(Blocking {
            index: 5,
            wait: Duration::from_millis(100),
        });
        let started = std::time::Instant::now();
        assert!(matches!(c.get_raw(req).await, Err(ConsulError::Timeout)));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
        let targets: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.target.clone())
            .collect();
        assert_eq!(
            targets,
            [
                "/v1/catalog/services?index=0&wait=100ms",
                "/v1/catalog/services?index=5&wait=100ms"
            ]
        );
    }

    #[test]
    fn tls_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let cfg = ConsulConfig::new("https://consul:8501").unwrap();
        assert!(ConsulClient::new(&cfg).is_ok());
        let only_cert = cfg.clone().with_client_identity(Some(bad.clone()), None);
        assert!(matches!(
            ConsulClient::new(&only_cert),
            Err(ConfigError::IncompleteClientIdentity)
        ));
        let bad_identity = cfg
            .clone()
            .with_client_identity(Some(bad.clone()), Some(bad.clone()));
        assert!(matches!(
            ConsulClient::new(&bad_identity),
            Err(ConfigError::Tls { .. })
        ));
        let missing_ca = cfg.with_ca_cert(Some(dir.path().join("nope.pem")));
        assert!(matches!(
            ConsulClient::new(&missing_ca),
            Err(ConfigError::ReadFile { .. })
        ));
    }

    #[tokio::test]
    async fn catalog_watcher_over_http() {
        use super::super::{CatalogWatcher, CatalogWatcherOptions, Interest, WatchOptions};
        let handler: Handler = Arc::new(|r: &Seen| {
            let path = r.target.split('?').next().unwrap_or_default();
            let body = match path {
                "/v1/catalog/services" => r#"{"consul":[],"web":["flow-proxy.path=/web"]}"#,
                "/v1/catalog/nodes" => r#"[{"Node":"n1","Address":"127.0.0.1"}]"#,
                "/v1/health/state/any" => {
                    r#"[{"Node":"n1","CheckID":"serfHealth","Status":"passing","ServiceID":"","ServiceName":""}]"#
                }
                "/v1/health/service/web" => {
                    r#"[{"Node":{"Node":"n1","Address":"127.0.0.1"},"Service":{"ID":"web-1","Service":"web","Tags":["flow-proxy.path=/web"],"Address":"","Port":8080,"Meta":{"v":"1"}},"Checks":[{"Node":"n1","CheckID":"serfHealth","Status":"passing","ServiceID":"","ServiceName":""}]}]"#
                }
                _ => return reply(404, None, "Invalid URL path"),
            };
            let mut a = reply(200, Some(7), body);
            if !r.target.contains("index=0") && r.target.contains("index=") {
                a.3 = Duration::from_millis(500);
            }
            a
        });
        let (addr, seen) = serve(handler).await;
        let c = client(&format!("http://{addr}"), |c| c.with_stale(true));
        let options = CatalogWatcherOptions {
            feeds: WatchOptions {
                wait: Duration::from_millis(500),
                ..WatchOptions::default()
            },
            ..CatalogWatcherOptions::default()
        };
        let (_interest_tx, interest_rx) = tokio::sync::watch::channel(Interest::All);
        let cancel = tokio_util::sync::CancellationToken::new();
        let mut rx = CatalogWatcher::spawn(c, interest_rx, options, cancel.clone());
        let snap = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| !s.services.is_empty()),
        )
        .await
        .unwrap()
        .unwrap()
        .clone();
        cancel.cancel();
        assert_eq!(snap.services.len(), 1);
        let web = &snap.services.values().next().unwrap()[0];
        assert_eq!(
            (web.id.as_str(), web.address.to_string(), web.port),
            ("web-1", "127.0.0.1".to_owned(), 8080)
        );
        let targets: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.target.clone())
            .collect();
        assert!(
            targets.contains(&"/v1/catalog/services?stale&index=0&wait=500ms".to_owned()),
            "{targets:?}"
        );
        assert!(
            targets.contains(&"/v1/health/service/web?stale".to_owned()),
            "{targets:?}"
        );
        assert!(
            !targets
                .iter()
                .any(|t| t.contains("/v1/health/service/consul"))
        );
    }

    #[tokio::test]
    async fn agent_calls() {
        let handler: Handler = Arc::new(|r: &Seen| match (r.method.as_str(), r.target.as_str()) {
            ("PUT", "/v1/agent/service/register")
            | ("PUT", "/v1/agent/service/deregister/web-1")
            | ("PUT", "/v1/agent/check/pass/service:web-1") => reply(200, None, ""),
            _ => reply(404, None, "Unknown service ID"),
        });
        let (addr, seen) = serve(handler).await;
        let c = client(&addr, |c| c);
        let reg = super::super::ServiceRegistration {
            id: "web-1".into(),
            name: "web".into(),
            tags: vec!["flow-proxy.path=/web".into()],
            address: "10.0.0.2".into(),
            port: 8080,
            meta: [("v".to_owned(), "1".to_owned())].into(),
            ttl_check: Some(Duration::from_secs(30)),
        };
        c.agent_register(&reg).await.unwrap();
        c.agent_check_pass("service:web-1").await.unwrap();
        c.agent_deregister("web-1").await.unwrap();
        let err = c.agent_deregister("nope").await.unwrap_err();
        assert!(
            matches!(err, ConsulError::Status { status: 404, .. }),
            "{err:?}"
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            String::from_utf8_lossy(&seen[0].body),
            r#"{"ID":"web-1","Name":"web","Tags":["flow-proxy.path=/web"],"Address":"10.0.0.2","Port":8080,"Meta":{"v":"1"},"Check":{"TTL":"30000ms"}}"#
        );
    }
}
