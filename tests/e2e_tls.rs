//! End to end through a real HAProxy: TLS termination on HTTPS_PORT (the generated default
//! certificate, certificates from CERTS_DIR picked by SNI, certificates uploaded through
//! `PUT /v1/docker-flow-proxy/cert` and shared through Consul KV) and per-service `httpsOnly`.
//! Certificates are generated at test time.

mod support;

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Accepts any server certificate: the tests compare the one served with the one expected.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector(alpn: &[&[u8]]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(port: u16, sni: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    connector(&[b"http/1.1"])
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap()
}

/// The end-entity certificate the server presented.
fn served_cert(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The first certificate of a PEM bundle, DER.
fn cert_der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// One keep-alive HTTP/1.1 request on an open stream; (status, headers, body).
async fn request<S>(stream: &mut S, host: &str, path: &str) -> (u16, String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = header(&head, "content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    (status, head, body)
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// A fresh HTTPS request: (status, body, served certificate). Status 0 on failure.
async fn https_get(port: u16, sni: &str, path: &str) -> (u16, String, Vec<u8>) {
    let attempt = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut stream = connector(&[b"http/1.1"])
            .connect(ServerName::try_from(sni.to_owned()).ok()?, tcp)
            .await
            .ok()?;
        let cert = served_cert(&stream);
        let (status, _, body) = request(&mut stream, sni, path).await;
        Some((status, body, cert))
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A raw request with a body to the API; (status, body).
async fn api_send(
    api: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(api).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap();
    (status, body)
}

/// A certificate for `host` with its key, as one PEM bundle.
fn bundle(host: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

/// Starts a proxy with HTTPS on a port of its own and `certs_dir`.
async fn start_tls(
    registry: &Registry,
    instance: &str,
    certs_dir: &std::path::Path,
) -> (Proxy, u16) {
    let https_port = free_port();
    let proxy = Proxy::start_with(
        registry,
        instance,
        &[
            "--https-port".to_owned(),
            https_port.to_string(),
            "--certs-dir".to_owned(),
            certs_dir.display().to_string(),
        ],
    )
    .await;
    (proxy, https_port)
}

async fn route_web(registry: &Registry, proxy: &Proxy, extra: &str) {
    let port = backend("tls-ok").await;
    registry.register("web", 1, port).await;
    let (status, body) = proxy
        .call(&format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=web&servicePath=/web{extra}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
}

fn default_cert(proxy: &Proxy) -> Vec<u8> {
    let pem = std::fs::read_to_string(proxy.data_dir.path().join("tls/default.pem")).unwrap();
    cert_der(&pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_with_the_generated_default_certificate() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let certs = tempfile::tempdir().unwrap();
    let (mut proxy, https_port) = start_tls(&registry, "tls-default", certs.path()).await;
    route_web(&registry, &proxy, "").await;

    let (status, body, cert) = https_get(https_port, "anything.example.test", "/web").await;
    assert_eq!((status, body.as_str()), (200, "tls-ok\n"));
    assert_eq!(cert, default_cert(&proxy));
    // Plain HTTP still works on HTTP_PORT.
    assert_eq!(proxy.get("localhost", "/web").await.0, 200);
    // HTTP/2 is offered through ALPN.
    let tcp = TcpStream::connect(("127.0.0.1", https_port)).await.unwrap();
    let tls = connector(&[b"h2", b"http/1.1"])
        .connect(ServerName::try_from("h2.example.test").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // No operator certificate: the list is empty.
    let (status, body) = proxy.call("/v1/docker-flow-proxy/certs").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["Status"], "OK");
    assert_eq!(json["Certs"].as_array().unwrap().len(), 0, "{body}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_certs_dir_is_picked_by_sni() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let certs = tempfile::tempdir().unwrap();
    let a = bundle("a.example.test");
    std::fs::write(certs.path().join("a.example.test.pem"), &a).unwrap();
    // Files that are not servable bundles are skipped, not fatal.
    std::fs::write(certs.path().join("README"), "not a certificate").unwrap();
    let (mut proxy, https_port) = start_tls(&registry, "tls-dir", certs.path()).await;
    route_web(&registry, &proxy, "").await;

    let (status, _, cert) = https_get(https_port, "a.example.test", "/web").await;
    assert_eq!(status, 200);
    assert_eq!(cert, cert_der(&a));
    let (status, _, cert) = https_get(https_port, "other.example.test", "/web").await;
    assert_eq!(status, 200);
    assert_eq!(cert, default_cert(&proxy));

    // A certificate added to the directory later is picked up.
    let c = bundle("c.example.test");
    std::fs::write(certs.path().join("c.pem"), &c).unwrap();
    wait_until("the new CERTS_DIR certificate is served", || async {
        https_get(https_port, "c.example.test", "/web").await.2 == cert_der(&c)
    })
    .await;
    let (_, body) = proxy.call("/v1/docker-flow-proxy/certs").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = json["Certs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ProxyServiceName"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a.example.test.pem", "c.pem"]);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_certificate_is_served_hitlessly_by_every_replica_and_after_a_restart() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let certs = tempfile::tempdir().unwrap();
    let (mut one, one_https) = start_tls(&registry, "tls-shared", certs.path()).await;
    let (mut two, two_https) = start_tls(&registry, "tls-shared", certs.path()).await;
    route_web(&registry, &one, "").await;
    wait_until("the second replica routes web", || async {
        two.get("localhost", "/web").await.0 == 200
    })
    .await;

    // A connection opened before the upload keeps working across the reload.
    let mut open = tls_connect(one_https, "b.example.test").await;
    assert_eq!(served_cert(&open), default_cert(&one));
    assert_eq!(request(&mut open, "b.example.test", "/web").await.0, 200);
    let worker = one.worker_pid().await;

    let b = bundle("b.example.test");
    let (status, body) = api_send(
        one.api,
        "PUT",
        "/v1/docker-flow-proxy/cert?certName=b.example.test",
        b.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(
        one.worker_pid().await,
        worker,
        "a reload applies the certificate"
    );
    let (status, _, body) = request(&mut open, "b.example.test", "/web").await;
    assert_eq!((status, body.as_str()), (200, "tls-ok\n"));

    // Served by SNI at once, listed, and kept in KV under the reserved folder.
    let (status, _, cert) = https_get(one_https, "b.example.test", "/web").await;
    assert_eq!(status, 200);
    assert_eq!(cert, cert_der(&b));
    let (_, body) = one.call("/v1/docker-flow-proxy/certs").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["Certs"][0]["ProxyServiceName"], "b.example.test");
    assert_eq!(
        cert_der(json["Certs"][0]["CertContent"].as_str().unwrap()),
        cert_der(&b)
    );
    assert_eq!(
        registry.kv_keys("tls-shared/_certs/").await,
        vec!["tls-shared/_certs/b.example.test"]
    );
    // The reserved folder is not a service.
    let (_, config) = one.call("/v1/docker-flow-proxy/config?type=json").await;
    assert!(!config.contains("_certs"), "{config}");

    // The other replica follows through its KV watch.
    wait_until(
        "the second replica serves the uploaded certificate",
        || async { https_get(two_https, "b.example.test", "/web").await.2 == cert_der(&b) },
    )
    .await;

    // A new flow-proxy on a fresh data directory recovers it from KV at start.
    one.stop().await;
    let (mut three, three_https) = start_tls(&registry, "tls-shared", certs.path()).await;
    let (status, _, cert) = https_get(three_https, "b.example.test", "/web").await;
    assert_eq!(status, 200);
    assert_eq!(cert, cert_der(&b));
    three.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_uploads_are_refused_with_the_reason_and_change_nothing() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let certs = tempfile::tempdir().unwrap();
    let (mut proxy, https_port) = start_tls(&registry, "tls-invalid", certs.path()).await;
    route_web(&registry, &proxy, "").await;
    let worker = proxy.worker_pid().await;

    let good = bundle("d.example.test");
    let other = bundle("e.example.test");
    let (cert_only, _) = good.split_at(good.find("-----BEGIN PRIVATE KEY").unwrap());
    let other_key = &other[other.find("-----BEGIN PRIVATE KEY").unwrap()..];
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (
            "?certName=d".into(),
            b"not a certificate".to_vec(),
            "no certificate",
        ),
        (
            "?certName=d".into(),
            cert_only.as_bytes().to_vec(),
            "no unencrypted private key",
        ),
        (
            "?certName=d".into(),
            format!("{cert_only}{other_key}").into_bytes(),
            "does not match",
        ),
        ("?certName=d".into(), Vec::new(), "mandatory"),
        (String::new(), good.as_bytes().to_vec(), "mandatory"),
        (
            "?certName=../x".into(),
            good.as_bytes().to_vec(),
            "invalid certName",
        ),
        (
            "?certName=_x".into(),
            good.as_bytes().to_vec(),
            "invalid certName",
        ),
    ];
    for (query, body, reason) in cases {
        let (status, answer) = api_send(
            proxy.api,
            "PUT",
            &format!("/v1/docker-flow-proxy/cert{query}"),
            &body,
        )
        .await;
        assert_eq!(status, 400, "{query}: {answer}");
        let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(json["Status"], "NOK");
        assert!(
            json["Message"].as_str().unwrap().contains(reason),
            "{query}: {answer}"
        );
    }
    assert!(registry.kv_keys("tls-invalid/_certs/").await.is_empty());
    assert_eq!(proxy.worker_pid().await, worker, "nothing was reloaded");
    let (_, body) = proxy.call("/v1/docker-flow-proxy/certs").await;
    assert!(body.contains(r#""Certs":[]"#), "{body}");
    let (status, _, cert) = https_get(https_port, "d.example.test", "/web").await;
    assert_eq!(status, 200);
    assert_eq!(cert, default_cert(&proxy));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_only_redirects_plain_http_and_serves_https() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let certs = tempfile::tempdir().unwrap();
    let (mut proxy, https_port) = start_tls(&registry, "tls-only", certs.path()).await;
    route_web(&registry, &proxy, "&httpsOnly=true&httpsRedirectCode=301").await;
    let plain = backend("plain-ok").await;
    registry.register("plain", 1, plain).await;
    let (status, body) = proxy
        .call(
            "/v1/docker-flow-proxy/reconfigure?serviceName=plain&servicePath=/plain&httpsOnly=true",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["HttpsOnly"], true);
    assert!(json.get("HttpsRedirectCode").is_none(), "{json}");

    let mut tcp = TcpStream::connect(("127.0.0.1", proxy.http_port))
        .await
        .unwrap();
    // The redirect names HTTPS_PORT, whatever port the Host header carried.
    let host = format!("app.example.test:{}", proxy.http_port);
    let (status, head, _) = request(&mut tcp, &host, "/web/page?x=1").await;
    assert_eq!(status, 301, "{head}");
    assert_eq!(
        header(&head, "location"),
        Some(format!(
            "https://app.example.test:{https_port}/web/page?x=1"
        ))
    );
    let (status, body, _) = https_get(https_port, "app.example.test", "/web/page").await;
    assert_eq!((status, body.as_str()), (200, "tls-ok\n"));
    // The default code is HAProxy's (and DFP's) 302.
    assert_eq!(proxy.get("localhost", "/plain").await.0, 302);

    // Turned off again: plain HTTP is served.
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=plain&servicePath=/plain")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("localhost", "/plain").await,
        (200, "plain-ok\n".to_owned())
    );
    // A bad code is refused and the live redirect stays.
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=web&servicePath=/web&httpsOnly=true&httpsRedirectCode=200")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("httpsRedirectCode"), "{body}");
    assert_eq!(proxy.get("localhost", "/web").await.0, 301);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_haproxy_is_reloaded_for_certificates_uploaded_while_flow_proxy_was_down() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let certs = tempfile::tempdir().unwrap();
    let (http_port, https_port) = (free_port(), free_port());
    let args = vec![
        "--https-port".to_owned(),
        https_port.to_string(),
        "--certs-dir".to_owned(),
        certs.path().display().to_string(),
    ];
    let dir = tempfile::Builder::new()
        .prefix("fp")
        .tempdir_in("/tmp")
        .unwrap();
    let mut first = Proxy::start_in(&registry, "tls-adopt", &args, dir, http_port).await;
    route_web(&registry, &first, "").await;
    let default = default_cert(&first);
    // HAProxy outlives flow-proxy.
    first.stop().await;
    let dir = std::mem::replace(&mut first.data_dir, tempfile::tempdir_in("/tmp").unwrap());

    let (mut replica, _) = start_tls(&registry, "tls-adopt", certs.path()).await;
    let f = bundle("f.example.test");
    let (status, body) = api_send(
        replica.api,
        "PUT",
        "/v1/docker-flow-proxy/cert?certName=f",
        f.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The orphaned HAProxy still serves what it loaded.
    assert_eq!(
        https_get(https_port, "f.example.test", "/web").await.2,
        default
    );

    let mut args = args;
    args.push("--stop-haproxy-on-exit".to_owned());
    let mut second = Proxy::start_in(&registry, "tls-adopt", &args, dir, http_port).await;
    wait_until(
        "the adopted HAProxy serves the uploaded certificate",
        || async { https_get(https_port, "f.example.test", "/web").await.2 == cert_der(&f) },
    )
    .await;
    second.stop().await;
    replica.stop().await;
}
