//! Contract tests of the embedded registry's ACL token (`EMBEDDED_REGISTRY_TOKEN`), over raw
//! HTTP: Consul's 403 bodies, the three places a token is read from, the endpoints that stay
//! open, the default-policy header, and refused writes that change nothing. The same
//! registry also drives flow-proxy's own Consul client with the token.

use std::time::Duration;

use flow_proxy::consul::{ConsulClient, ConsulConfig, KvKey};
use flow_proxy::registry::acl::AclToken;
use flow_proxy::registry::{RegistryConfig, RunningRegistry, spawn};
use reqwest::{Method, StatusCode};
use serde_json::json;

const TOKEN: &str = "9a1b-secret-token";

struct Reg {
    reg: Option<RunningRegistry>,
    base: String,
    client: reqwest::Client,
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn start(token: Option<&str>) -> Reg {
    flow_proxy::tls::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reg = spawn(
        listener,
        RegistryConfig {
            node_name: "node1".into(),
            acl_token: AclToken::new(token),
            ..RegistryConfig::default()
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", reg.local_addr());
    Reg {
        reg: Some(reg),
        base,
        client: reqwest::Client::new(),
    }
}

impl Reg {
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Answer {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .timeout(Duration::from_secs(30));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        Answer {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }
    async fn stop(mut self) {
        if let Some(r) = self.reg.take() {
            r.shutdown().await.unwrap();
        }
    }
}

/// One request per kind of endpoint the registry serves.
fn endpoints() -> Vec<(Method, &'static str, Option<String>)> {
    vec![
        (Method::GET, "/v1/kv/a", None),
        (Method::GET, "/v1/kv/?recurse", None),
        (Method::PUT, "/v1/kv/a", Some("x".into())),
        (Method::DELETE, "/v1/kv/a", None),
        (Method::GET, "/v1/catalog/services", None),
        (Method::GET, "/v1/catalog/nodes", None),
        (Method::GET, "/v1/catalog/node/node1", None),
        (Method::GET, "/v1/catalog/service/web", None),
        (Method::GET, "/v1/health/service/web", None),
        (Method::GET, "/v1/health/state/any", None),
        (Method::GET, "/v1/agent/self", None),
        (Method::GET, "/v1/agent/services", None),
        (
            Method::PUT,
            "/v1/agent/service/register",
            Some(json!({"ID": "web1", "Name": "web", "Port": 80}).to_string()),
        ),
        (Method::PUT, "/v1/agent/service/deregister/web1", None),
        (
            Method::PUT,
            "/v1/txn",
            Some(json!([{"KV": {"Verb": "set", "Key": "t", "Value": "eA=="}}]).to_string()),
        ),
        (Method::PUT, "/v1/session/create", Some("{}".into())),
        (Method::GET, "/v1/session/list", None),
        (Method::GET, "/v1/unknown/endpoint", None),
    ]
}

#[tokio::test]
async fn every_endpoint_needs_the_token_and_answers_403_as_consul() {
    let r = start(Some(TOKEN)).await;
    for (method, path, body) in endpoints() {
        let a = r.call(method.clone(), path, &[], body.clone()).await;
        assert_eq!(a.status, 403, "{method} {path}: {}", a.text);
        assert_eq!(a.text, "Permission denied", "{method} {path}");
        assert_eq!(a.header("X-Consul-Default-ACL-Policy"), Some("deny"));

        let a = r
            .call(method.clone(), path, &[("X-Consul-Token", "wrong")], body)
            .await;
        assert_eq!(a.status, 403, "{method} {path}: {}", a.text);
        assert_eq!(a.text, "ACL not found", "{method} {path}");
    }
    // Refused writes changed nothing.
    let a = r
        .call(
            Method::GET,
            "/v1/kv/?recurse",
            &[("X-Consul-Token", TOKEN)],
            None,
        )
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a = r
        .call(
            Method::GET,
            "/v1/agent/services",
            &[("X-Consul-Token", TOKEN)],
            None,
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text, "{}");
    r.stop().await;
}

#[tokio::test]
async fn token_is_read_from_query_header_and_bearer() {
    let r = start(Some(TOKEN)).await;
    let put = r
        .call(
            Method::PUT,
            &format!("/v1/kv/k1?token={TOKEN}"),
            &[],
            Some("v1".into()),
        )
        .await;
    assert_eq!((put.status.as_u16(), put.text.as_str()), (200, "true"));
    let header = r
        .call(
            Method::GET,
            "/v1/kv/k1?raw",
            &[("X-Consul-Token", TOKEN)],
            None,
        )
        .await;
    assert_eq!((header.status.as_u16(), header.text.as_str()), (200, "v1"));
    let bearer = format!("Bearer {TOKEN}");
    let a = r
        .call(
            Method::GET,
            "/v1/kv/k1?raw",
            &[("Authorization", bearer.as_str())],
            None,
        )
        .await;
    assert_eq!((a.status.as_u16(), a.text.as_str()), (200, "v1"));
    assert_eq!(a.header("X-Consul-Default-ACL-Policy"), Some("deny"));
    // The query parameter wins over the header, as in Consul.
    let a = r
        .call(
            Method::GET,
            "/v1/kv/k1?raw&token=wrong",
            &[("X-Consul-Token", TOKEN)],
            None,
        )
        .await;
    assert_eq!((a.status.as_u16(), a.text.as_str()), (403, "ACL not found"));
    // Basic credentials are no token.
    let a = r
        .call(
            Method::GET,
            "/v1/kv/k1?raw",
            &[("Authorization", "Basic dXNlcjpwYXNz")],
            None,
        )
        .await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (403, "Permission denied")
    );
    r.stop().await;
}

#[tokio::test]
async fn status_endpoints_stay_open() {
    let r = start(Some(TOKEN)).await;
    for path in ["/v1/status/leader", "/v1/status/peers"] {
        let a = r.call(Method::GET, path, &[], None).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text);
        assert!(a.text.contains(':'), "{path}: {}", a.text);
    }
    r.stop().await;
}

#[tokio::test]
async fn without_a_token_nothing_is_enforced() {
    let r = start(None).await;
    let a = r.call(Method::GET, "/v1/catalog/services", &[], None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("X-Consul-Default-ACL-Policy"), Some("allow"));
    // A token that is sent anyway is ignored, as by a Consul without ACLs.
    let a = r
        .call(
            Method::GET,
            "/v1/catalog/services",
            &[("X-Consul-Token", "anything")],
            None,
        )
        .await;
    assert_eq!(a.status, 200);
    r.stop().await;
}

#[tokio::test]
async fn flow_proxy_client_sends_the_token() {
    let r = start(Some(TOKEN)).await;
    let base = r.base.clone();
    let without = ConsulClient::new(&ConsulConfig::new(&base).unwrap()).unwrap();
    let key = KvKey::new("docker-flow/app/path").unwrap();
    let err = without.kv_get(&key).await.unwrap_err();
    assert!(
        err.to_string().contains("Permission denied"),
        "unexpected error: {err}"
    );
    let with = ConsulClient::new(
        &ConsulConfig::new(&base)
            .unwrap()
            .with_token(Some(TOKEN.to_owned())),
    )
    .unwrap();
    assert!(with.kv_get(&key).await.unwrap().is_none());
    r.stop().await;
}
