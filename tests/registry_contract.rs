//! Contract tests for the embedded registry, over raw HTTP, on the real clock.
//! Test names follow the Consul tests they restate (consul-http-api.md section 17).

use std::time::{Duration, Instant};

use base64::Engine;
use flow_proxy::registry::{RegistryConfig, RunningRegistry, spawn};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

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
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {:?}", self.text))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn index(&self) -> u64 {
        self.header("X-Consul-Index")
            .expect("X-Consul-Index")
            .parse()
            .unwrap()
    }
}

fn config() -> RegistryConfig {
    RegistryConfig {
        node_name: "node1".into(),
        ..RegistryConfig::default()
    }
}

async fn start() -> Reg {
    start_with(config()).await
}

async fn start_with(cfg: RegistryConfig) -> Reg {
    flow_proxy::tls::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reg = spawn(listener, cfg).await.unwrap();
    let base = format!("http://{}", reg.local_addr());
    Reg {
        reg: Some(reg),
        base,
        client: reqwest::Client::new(),
    }
}

impl Reg {
    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Answer {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .timeout(Duration::from_secs(30));
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
    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }
    async fn put(&self, path: &str, body: &str) -> Answer {
        self.call(Method::PUT, path, Some(body.as_bytes().to_vec()))
            .await
    }
    async fn put_json(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body.to_string().into_bytes()))
            .await
    }
    async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }
    async fn register(&self, body: Value) {
        let a = self.put_json("/v1/agent/service/register", body).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.text, "");
    }
    async fn stop(mut self) {
        if let Some(r) = self.reg.take() {
            r.shutdown().await.unwrap();
        }
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

// ---------------------------------------------------------------- 17.1 KV

#[tokio::test]
async fn test_client_put_get_delete() {
    let r = start().await;
    let a = r.get("/v1/kv/test/key").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.text, "");
    assert!(a.index() >= 1);
    let a = r.put("/v1/kv/test/key?flags=42", "test").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text, "true");
    let a = r.get("/v1/kv/test/key").await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v[0]["Flags"], 42);
    assert_eq!(v[0]["Value"], b64("test"));
    assert_eq!(v[0]["Key"], "test/key");
    assert!(v[0].get("Session").is_none());
    assert!(a.index() > 0);
    assert_eq!(a.header("Content-Type"), Some("application/json"));
    let a = r.delete("/v1/kv/test/key").await;
    assert_eq!(a.text, "true");
    assert_eq!(r.get("/v1/kv/test/key").await.status, 404);
    r.stop().await;
}

#[tokio::test]
async fn test_client_list_delete_recurse() {
    let r = start().await;
    for i in 0..100 {
        assert_eq!(
            r.put(&format!("/v1/kv/prefix/k{i:03}"), "v").await.text,
            "true"
        );
    }
    let a = r.get("/v1/kv/prefix/?recurse").await;
    assert_eq!(a.json().as_array().unwrap().len(), 100);
    assert_eq!(r.delete("/v1/kv/prefix/?recurse").await.text, "true");
    let a = r.get("/v1/kv/prefix/?recurse").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.text, "");
    r.stop().await;
}

#[tokio::test]
async fn test_client_cas() {
    let r = start().await;
    assert_eq!(r.put("/v1/kv/cas?cas=0", "a").await.text, "true");
    assert_eq!(r.put("/v1/kv/cas?cas=0", "b").await.text, "false");
    assert_eq!(r.put("/v1/kv/cas?cas=1", "b").await.text, "false");
    let idx = r.get("/v1/kv/cas").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        r.put(&format!("/v1/kv/cas?cas={idx}"), "c").await.text,
        "true"
    );
    assert_eq!(r.get("/v1/kv/cas").await.json()[0]["Value"], b64("c"));
    r.stop().await;
}

#[tokio::test]
async fn test_client_delete_cas() {
    let r = start().await;
    r.put("/v1/kv/dc", "a").await;
    let idx = r.get("/v1/kv/dc").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        r.delete(&format!("/v1/kv/dc?cas={}", idx + 100)).await.text,
        "false"
    );
    assert_eq!(r.get("/v1/kv/dc").await.status, 200);
    assert_eq!(r.delete(&format!("/v1/kv/dc?cas={idx}")).await.text, "true");
    assert_eq!(r.get("/v1/kv/dc").await.status, 404);
    r.stop().await;
}

#[tokio::test]
async fn test_client_watch_get() {
    let r = start().await;
    let a = r.get("/v1/kv/watched").await;
    assert_eq!(a.status, 404);
    let index1 = a.index();
    assert!(index1 >= 1);
    let base = r.base.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reqwest::Client::new()
            .put(format!("{base}/v1/kv/watched"))
            .body("hello")
            .send()
            .await
            .unwrap();
    });
    let t = Instant::now();
    let a = r
        .get(&format!("/v1/kv/watched?index={index1}&wait=5s"))
        .await;
    assert!(t.elapsed() < Duration::from_secs(4));
    assert_eq!(a.status, 200);
    assert_eq!(a.json()[0]["Value"], b64("hello"));
    assert!(a.index() > index1);
    writer.await.unwrap();
    r.stop().await;
}

#[tokio::test]
async fn test_client_watch_list() {
    let r = start().await;
    let a = r.get("/v1/kv/wl/?recurse").await;
    assert_eq!(a.status, 404);
    let index1 = a.index();
    let base = r.base.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reqwest::Client::new()
            .put(format!("{base}/v1/kv/wl/a"))
            .body("x")
            .send()
            .await
            .unwrap();
    });
    let t = Instant::now();
    let a = r
        .get(&format!("/v1/kv/wl/?recurse&index={index1}&wait=5s"))
        .await;
    assert!(t.elapsed() < Duration::from_secs(4));
    assert_eq!(a.status, 200);
    assert_eq!(a.json().as_array().unwrap().len(), 1);
    assert!(a.index() > index1);
    writer.await.unwrap();
    r.stop().await;
}

#[tokio::test]
async fn test_client_keys_delete_recurse() {
    let r = start().await;
    for i in 0..100 {
        r.put(&format!("/v1/kv/keys/k{i:03}"), "v").await;
    }
    let a = r.get("/v1/kv/keys/?keys").await;
    assert_eq!(a.json().as_array().unwrap().len(), 100);
    r.delete("/v1/kv/keys/?recurse").await;
    let a = r.get("/v1/kv/keys/?keys").await;
    assert_eq!(a.status, 404);
    let a = r.get("/v1/kv/?keys").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), json!([]));
    r.stop().await;
}

async fn create_session(r: &Reg, body: Value) -> String {
    let a = r.put_json("/v1/session/create", body).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json()["ID"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn test_client_acquire_release() {
    let r = start().await;
    let id = create_session(&r, json!({})).await;
    let a = r
        .put(&format!("/v1/kv/test/lock?acquire={id}"), "locked")
        .await;
    assert_eq!(a.text, "true");
    let v = r.get("/v1/kv/test/lock").await.json();
    assert_eq!(v[0]["LockIndex"], 1);
    assert_eq!(v[0]["Session"], id.as_str());
    // another session cannot take it
    let other = create_session(&r, json!({"Name": "other"})).await;
    assert_eq!(
        r.put(&format!("/v1/kv/test/lock?acquire={other}"), "x")
            .await
            .text,
        "false"
    );
    assert_eq!(
        r.put(&format!("/v1/kv/test/lock?release={other}"), "x")
            .await
            .text,
        "false"
    );
    let a = r
        .put(&format!("/v1/kv/test/lock?release={id}"), "released")
        .await;
    assert_eq!(a.text, "true");
    let v = r.get("/v1/kv/test/lock").await.json();
    assert_eq!(v[0]["LockIndex"], 1);
    assert!(v[0].get("Session").is_none());
    // an unknown session is a 500, as in Consul
    let a = r.put("/v1/kv/test/lock?acquire=1234", "x").await;
    assert_eq!(a.status, 500);
    assert_eq!(a.text, "invalid session \"1234\"");
    r.stop().await;
}

#[tokio::test]
async fn test_client_txn() {
    let r = start().await;
    let a = r
        .put_json(
            "/v1/txn",
            json!([
                {"KV": {"Verb": "lock", "Key": "test/lock", "Value": b64("hello")}},
                {"KV": {"Verb": "get", "Key": "test/key"}}
            ]),
        )
        .await;
    assert_eq!(a.status, 409);
    let v = a.json();
    assert_eq!(v["Results"], Value::Null);
    let errs = v["Errors"].as_array().unwrap();
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0]["OpIndex"], 0);
    assert_eq!(errs[0]["What"], "missing session");
    assert!(errs[1]["What"].as_str().unwrap().contains("doesn't exist"));
    // with a session both succeed
    let id = create_session(&r, json!({})).await;
    let a = r
        .put_json(
            "/v1/txn",
            json!([
                {"KV": {"Verb": "lock", "Key": "test/key", "Value": b64("hello"), "Session": id}},
                {"KV": {"Verb": "get", "Key": "test/key"}}
            ]),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    let results = v["Results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["KV"]["Value"], Value::Null);
    assert_eq!(results[1]["KV"]["Value"], b64("hello"));
    for res in results {
        assert_eq!(res["KV"]["LockIndex"], 1);
        assert_eq!(res["KV"]["Session"], id.as_str());
    }
    r.stop().await;
}

#[tokio::test]
async fn sessions_create_info_list_destroy_and_behaviours() {
    let r = start().await;
    let a = r.get("/v1/session/list").await;
    assert_eq!(a.json(), json!([]));
    let idx = a.index();
    let release = create_session(&r, json!({"Name": "rel", "LockDelay": "1s"})).await;
    let delete = create_session(&r, json!({"Name": "del", "Behavior": "delete"})).await;
    let info = r.get(&format!("/v1/session/info/{release}")).await;
    assert!(info.index() > idx);
    let v = info.json();
    assert_eq!(v[0]["Name"], "rel");
    assert_eq!(v[0]["Node"], "node1");
    assert_eq!(v[0]["Behavior"], "release");
    assert_eq!(v[0]["LockDelay"], 1_000_000_000u64);
    assert_eq!(v[0]["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(
        r.get("/v1/session/list")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        r.get("/v1/session/node/node1")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(r.get("/v1/session/info/nope").await.json(), json!([]));
    r.put(&format!("/v1/kv/s/rel?acquire={release}"), "a").await;
    r.put(&format!("/v1/kv/s/del?acquire={delete}"), "b").await;
    assert_eq!(
        r.put(&format!("/v1/session/destroy/{release}"), "")
            .await
            .text,
        "true"
    );
    assert_eq!(
        r.put(&format!("/v1/session/destroy/{delete}"), "")
            .await
            .text,
        "true"
    );
    assert_eq!(r.put("/v1/session/destroy/unknown", "").await.text, "true");
    let v = r.get("/v1/kv/s/rel").await.json();
    assert!(v[0].get("Session").is_none(), "release behaviour unlocks");
    assert_eq!(
        r.get("/v1/kv/s/del").await.status,
        404,
        "delete behaviour deletes"
    );
    let a = r
        .put_json("/v1/session/create", json!({"Behavior": "bogus"}))
        .await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (400, "Invalid Behavior setting 'bogus'")
    );
    let a = r.put_json("/v1/session/create", json!({"TTL": "1s"})).await;
    assert_eq!(a.status, 400);
    assert!(a.text.starts_with("Invalid Session TTL"));
    let a = r
        .put_json("/v1/session/create", json!({"Node": "elsewhere"}))
        .await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (500, "Missing node registration")
    );
    let a = r.put("/v1/session/renew/nope", "").await;
    assert_eq!(a.status, 404);
    r.stop().await;
}

#[tokio::test]
async fn session_ttl_expiry_releases_locks_unless_renewed() {
    let r = start_with(RegistryConfig {
        min_session_ttl: Duration::from_millis(100),
        ..config()
    })
    .await;
    let kept = create_session(&r, json!({"TTL": "300ms"})).await;
    let lost = create_session(&r, json!({"TTL": "300ms"})).await;
    r.put(&format!("/v1/kv/ttl/lost?acquire={lost}"), "x").await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let a = r.put(&format!("/v1/session/renew/{kept}"), "").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json()[0]["ID"], kept.as_str());
    }
    let v = r.get("/v1/session/list").await.json();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [kept.as_str()]);
    assert!(
        r.get("/v1/kv/ttl/lost").await.json()[0]
            .get("Session")
            .is_none()
    );
    r.stop().await;
}

#[tokio::test]
async fn txn_kv_verbs_are_atomic_and_consume_one_index() {
    let r = start().await;
    r.put("/v1/kv/t/a", "1").await;
    let a_idx = r.get("/v1/kv/t/a").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    // a failing check rolls everything back
    let a = r
        .put_json(
            "/v1/txn",
            json!([
                {"KV": {"Verb": "set", "Key": "t/b", "Value": b64("2")}},
                {"KV": {"Verb": "check-index", "Key": "t/a", "Index": a_idx + 1}}
            ]),
        )
        .await;
    assert_eq!(a.status, 409);
    assert!(
        a.json()["Errors"][0]["What"]
            .as_str()
            .unwrap()
            .contains("failed index check")
    );
    assert_eq!(r.get("/v1/kv/t/b").await.status, 404);
    let a = r
        .put_json(
            "/v1/txn",
            json!([
                {"KV": {"Verb": "check-index", "Key": "t/a", "Index": a_idx}},
                {"KV": {"Verb": "check-not-exists", "Key": "t/c"}},
                {"KV": {"Verb": "set", "Key": "t/b", "Value": b64("2")}},
                {"KV": {"Verb": "cas", "Key": "t/a", "Value": b64("3"), "Index": a_idx}},
                {"KV": {"Verb": "get", "Key": "t/b"}},
                {"KV": {"Verb": "get-or-empty", "Key": "t/none"}},
                {"KV": {"Verb": "get-tree", "Key": "t/"}},
                {"KV": {"Verb": "delete", "Key": "t/zz"}},
                {"KV": {"Verb": "delete-tree", "Key": "u/"}},
                {"KV": {"Verb": "delete-cas", "Key": "t/missing", "Index": 5}}
            ]),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["Errors"], Value::Null);
    let results = v["Results"].as_array().unwrap();
    // check-index, set, cas, get, get-or-empty, 2 x get-tree
    assert_eq!(results.len(), 7, "{results:?}");
    assert_eq!(results[1]["KV"]["Value"], Value::Null);
    assert_eq!(results[3]["KV"]["Value"], b64("2"));
    let ia = r.get("/v1/kv/t/a").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    let ib = r.get("/v1/kv/t/b").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(ia, ib);
    // read-only transactions send no index
    let a = r
        .put_json("/v1/txn", json!([{"KV": {"Verb": "get", "Key": "t/a"}}]))
        .await;
    assert_eq!(a.status, 200);
    assert!(a.header("X-Consul-Index").is_none());
    assert_eq!(a.json()["Results"][0]["KV"]["Value"], b64("3"));
    r.stop().await;
}

#[tokio::test]
async fn test_kvs_endpoint_recurse() {
    let r = start().await;
    for k in ["bar", "baz", "foo/sub1", "foo/sub2", "zip"] {
        r.put(&format!("/v1/kv/{k}"), "x").await;
    }
    let a = r.get("/v1/kv/?recurse").await;
    let keys: Vec<String> = a
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["bar", "baz", "foo/sub1", "foo/sub2", "zip"]);
    r.delete("/v1/kv/?recurse").await;
    assert_eq!(r.get("/v1/kv/?recurse").await.status, 404);
    r.stop().await;
}

#[tokio::test]
async fn test_kvs_endpoint_list_keys() {
    let r = start().await;
    for k in ["bar", "baz", "foo/sub1", "foo/sub2", "zip"] {
        r.put(&format!("/v1/kv/{k}"), "x").await;
    }
    for spelling in ["seperator", "separator"] {
        let a = r.get(&format!("/v1/kv/?keys&{spelling}=/")).await;
        assert_eq!(a.json(), json!(["bar", "baz", "foo/", "zip"]), "{spelling}");
    }
    r.stop().await;
}

#[tokio::test]
async fn test_kvs_endpoint_get_raw() {
    let r = start().await;
    r.put("/v1/kv/raw", "test").await;
    let a = r.get("/v1/kv/raw?raw").await;
    assert_eq!(a.text, "test");
    assert_eq!(a.header("Content-Type"), Some("text/plain"));
    assert_eq!(a.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(a.header("Content-Security-Policy"), Some("sandbox"));
    assert!(a.index() > 1);
    let a = r.get("/v1/kv/raw").await;
    assert!(a.header("X-Content-Type-Options").is_none());
    assert!(a.header("Content-Security-Policy").is_none());
    r.stop().await;
}

#[tokio::test]
async fn test_kvs_endpoint_put_and_delete_conflicting_flags() {
    let r = start().await;
    let a = r.put("/v1/kv/test?cas=0&acquire=xxx", "x").await;
    assert_eq!(a.status, 400);
    assert!(a.text.contains("Conflicting"));
    let a = r.delete("/v1/kv/test?recurse&cas=0").await;
    assert_eq!(a.status, 400);
    assert!(a.text.contains("Conflicting"));
    r.stop().await;
}

#[tokio::test]
async fn kv_extra_cases_from_the_source() {
    let r = start().await;
    // too large
    let big = vec![b'x'; 512 * 1024 + 1];
    let a = r.call(Method::PUT, "/v1/kv/big", Some(big)).await;
    assert_eq!(a.status, 413);
    let ok = vec![b'x'; 512 * 1024];
    assert_eq!(
        r.call(Method::PUT, "/v1/kv/big", Some(ok)).await.status,
        200
    );
    // identical re-PUT leaves ModifyIndex unchanged, still consumes an index
    r.put("/v1/kv/same", "v").await;
    let m1 = r.get("/v1/kv/same").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    r.put("/v1/kv/same", "v").await;
    let m2 = r.get("/v1/kv/same").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(m1, m2);
    // 404 carries the meta headers
    let a = r.get("/v1/kv/absent").await;
    assert_eq!(a.status, 404);
    assert!(a.index() >= 1);
    assert_eq!(a.header("X-Consul-KnownLeader"), Some("true"));
    assert_eq!(a.header("X-Consul-LastContact"), Some("0"));
    assert_eq!(a.header("X-Consul-Effective-Consistency"), Some("leader"));
    // empty value reads back as null
    r.put("/v1/kv/empty", "").await;
    assert_eq!(r.get("/v1/kv/empty").await.json()[0]["Value"], Value::Null);
    // missing key name
    let a = r.get("/v1/kv/").await;
    assert_eq!(a.status, 400);
    assert_eq!(a.text, "Missing key name");
    let a = r.put("/v1/kv/", "x").await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (400, "Missing key name")
    );
    r.stop().await;
}

#[tokio::test]
async fn kv_tombstones_keep_list_index_until_reaped() {
    let r = start_with(RegistryConfig {
        tombstone_ttl: Duration::from_millis(300),
        ..config()
    })
    .await;
    r.put("/v1/kv/ts/a", "1").await;
    r.put("/v1/kv/ts/b", "1").await;
    r.put("/v1/kv/other", "1").await;
    let a_idx = r.get("/v1/kv/ts/a").await.index();
    r.delete("/v1/kv/ts/b").await;
    let after_delete = r.get("/v1/kv/ts/?recurse").await.index();
    assert!(after_delete > a_idx);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after_reap = r.get("/v1/kv/ts/?recurse").await.index();
    assert_eq!(
        after_reap, a_idx,
        "index goes back once the tombstone is reaped"
    );
    r.stop().await;
}

// ---------------------------------------------------------------- 17.2 health and catalog

#[tokio::test]
async fn test_api_health_checks() {
    let r = start().await;
    r.register(json!({"Name": "foo", "Tags": ["bar"], "Check": {"TTL": "15s"}}))
        .await;
    let a = r.get("/v1/health/checks/foo").await;
    assert!(a.index() > 0);
    let v = a.json();
    let c = &v[0];
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(c["Node"], "node1");
    assert_eq!(c["CheckID"], "service:foo");
    assert_eq!(c["Name"], "Service 'foo' check");
    assert_eq!(c["Status"], "critical");
    assert_eq!(c["ServiceID"], "foo");
    assert_eq!(c["ServiceName"], "foo");
    assert_eq!(c["ServiceTags"], json!(["bar"]));
    assert_eq!(c["Type"], "ttl");
    assert!(c["CreateIndex"].as_u64().unwrap() > 0);
    assert!(c["ModifyIndex"].as_u64().unwrap() > 0);
    r.stop().await;
}

#[tokio::test]
async fn test_api_health_service_single_and_multiple_tags() {
    let r = start().await;
    r.register(json!({"ID": "foo1", "Name": "foo", "Tags": ["bar"],
        "Check": {"TTL": "15s", "Status": "passing"}}))
        .await;
    r.register(json!({"ID": "foo2", "Name": "foo", "Tags": ["bar", "v2"],
        "Check": {"TTL": "15s", "Status": "passing"}}))
        .await;
    let a = r.get("/v1/health/service/foo?tag=bar&passing").await;
    assert_eq!(a.json().as_array().unwrap().len(), 2);
    let a = r.get("/v1/health/service/foo?tag=bar&tag=v2&passing").await;
    let v = a.json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["Service"]["ID"], "foo2");
    // entry shape: node checks first, node has dc and tagged addresses
    assert_eq!(v[0]["Checks"][0]["CheckID"], "serfHealth");
    assert_eq!(v[0]["Checks"][1]["CheckID"], "service:foo2");
    assert_eq!(v[0]["Node"]["Datacenter"], "dc1");
    assert!(v[0]["Node"]["TaggedAddresses"]["wan"].is_string());
    assert_eq!(
        v[0]["Service"]["Weights"],
        json!({"Passing": 1, "Warning": 1})
    );
    // the accepted spellings of ?passing
    for p in [
        "passing",
        "passing=",
        "passing=true",
        "passing=1",
        "passing=T",
    ] {
        let a = r.get(&format!("/v1/health/service/foo?{p}")).await;
        assert_eq!(a.status, 200, "{p}");
        assert_eq!(a.json().as_array().unwrap().len(), 2, "{p}");
    }
    r.put("/v1/agent/check/fail/service:foo1", "").await;
    assert_eq!(
        r.get("/v1/health/service/foo?passing=1")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for p in ["passing=false", "passing=0"] {
        let a = r.get(&format!("/v1/health/service/foo?{p}")).await;
        assert_eq!(a.json().as_array().unwrap().len(), 2, "{p}");
    }
    let a = r.get("/v1/health/service/foo?passing=maybe").await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (400, "Invalid value for ?passing")
    );
    r.stop().await;
}

#[tokio::test]
async fn test_api_health_service_consul_service_option() {
    let r = start_with(RegistryConfig {
        register_consul_service: true,
        ..config()
    })
    .await;
    let v = r.get("/v1/health/service/consul").await.json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert!(v[0]["Node"]["TaggedAddresses"]["wan"].is_string());
    assert_eq!(v[0]["Node"]["Datacenter"], "dc1");
    assert_eq!(v[0]["Service"]["Port"], 8300);
    let services = r.get("/v1/catalog/services").await;
    assert_eq!(services.json(), json!({"consul": []}));
    // the agent does not own it
    assert_eq!(r.get("/v1/agent/services").await.json(), json!({}));
    assert_eq!(
        r.put("/v1/agent/service/deregister/consul", "")
            .await
            .status,
        404
    );
    r.stop().await;
    // without the option it is absent
    let r = start().await;
    assert_eq!(r.get("/v1/health/service/consul").await.json(), json!([]));
    r.stop().await;
}

#[tokio::test]
async fn test_api_health_state() {
    let r = start().await;
    let a = r.get("/v1/health/state/any").await;
    assert!(a.index() > 0);
    let v = a.json();
    assert_eq!(v[0]["CheckID"], "serfHealth");
    assert_eq!(v[0]["Status"], "passing");
    assert_eq!(r.get("/v1/health/state/critical").await.json(), json!([]));
    assert_eq!(r.get("/v1/health/state/bogus").await.json(), json!([]));
    let a = r.get("/v1/health/state/").await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (400, "Missing check state")
    );
    r.stop().await;
}

#[tokio::test]
async fn test_api_catalog() {
    let r = start().await;
    let a = r.get("/v1/catalog/services").await;
    assert_eq!(a.json(), json!({}));
    assert!(a.index() >= 1);
    r.register(json!({"ID": "web1", "Name": "web", "Tags": ["Prod", "x"]}))
        .await;
    r.register(json!({"ID": "web2", "Name": "web", "Tags": ["x", "y"]}))
        .await;
    let v = r.get("/v1/catalog/services").await.json();
    let mut tags: Vec<String> = v["web"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    assert_eq!(tags, ["Prod", "x", "y"]);
    let v = r.get("/v1/catalog/service/web?tag=prod").await.json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["ServiceID"], "web1");
    assert_eq!(v[0]["Node"], "node1");
    assert_eq!(v[0]["Address"], "127.0.0.1");
    assert_eq!(v[0]["ServiceTags"], json!(["Prod", "x"]));
    assert_eq!(
        r.get("/v1/catalog/service/web")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let a = r.get("/v1/catalog/service/nope").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), json!([]));
    let v = r.get("/v1/catalog/nodes").await.json();
    assert_eq!(v[0]["Node"], "node1");
    r.stop().await;
}

#[tokio::test]
async fn catalog_missing_service_index_follows_extinction() {
    let r = start().await;
    r.register(json!({"ID": "a1", "Name": "a"})).await;
    r.register(json!({"ID": "b1", "Name": "b"})).await;
    let before = r.get("/v1/catalog/service/nope").await.index();
    r.put("/v1/agent/service/deregister/a1", "").await;
    let extinct = r.get("/v1/catalog/service/nope").await.index();
    assert!(extinct > before);
    assert_eq!(r.get("/v1/catalog/service/a").await.index(), extinct);
    assert_eq!(r.get("/v1/health/service/a").await.index(), extinct);
    // writes that do not extinguish a service leave it alone
    r.put("/v1/kv/x", "1").await;
    r.register(json!({"ID": "b2", "Name": "b"})).await;
    assert_eq!(r.get("/v1/catalog/service/nope").await.index(), extinct);
    r.stop().await;
}

#[tokio::test]
async fn deregistering_last_instance_wakes_blocked_query() {
    let r = start().await;
    r.register(json!({"ID": "solo", "Name": "solo"})).await;
    let idx = r.get("/v1/catalog/service/solo").await.index();
    let base = r.base.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reqwest::Client::new()
            .put(format!("{base}/v1/agent/service/deregister/solo"))
            .send()
            .await
            .unwrap();
    });
    let t = Instant::now();
    let a = r
        .get(&format!("/v1/catalog/service/solo?index={idx}&wait=5s"))
        .await;
    assert!(t.elapsed() < Duration::from_secs(4));
    assert!(a.index() > idx);
    assert_eq!(a.json(), json!([]));
    writer.await.unwrap();
    r.stop().await;
}

#[tokio::test]
async fn check_status_change_wakes_service_reads_but_not_catalog_services() {
    let r = start().await;
    r.register(json!({"ID": "w1", "Name": "w", "Check": {"TTL": "30s"}}))
        .await;
    let services_idx = r.get("/v1/catalog/services").await.index();
    let health_idx = r.get("/v1/health/service/w").await.index();
    let cat_idx = r.get("/v1/catalog/service/w").await.index();
    let base = r.base.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reqwest::Client::new()
            .put(format!("{base}/v1/agent/check/pass/service:w1"))
            .send()
            .await
            .unwrap();
    });
    let t = Instant::now();
    let h = r
        .get(&format!("/v1/health/service/w?index={health_idx}&wait=5s"))
        .await;
    assert!(t.elapsed() < Duration::from_secs(4));
    assert!(h.index() > health_idx);
    writer.await.unwrap();
    let c = r
        .get(&format!("/v1/catalog/service/w?index={cat_idx}&wait=5s"))
        .await;
    assert!(c.index() > cat_idx);
    let t = Instant::now();
    let s = r
        .get(&format!(
            "/v1/catalog/services?index={services_idx}&wait=300ms"
        ))
        .await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(s.index(), services_idx);
    r.stop().await;
}

#[tokio::test]
async fn silent_change_check_less_instance_moves_indexes() {
    let r = start().await;
    r.register(
        json!({"ID": "h:app1:80", "Name": "app", "Tags": ["t"], "Port": 80,
        "Check": null, "Checks": null}),
    )
    .await;
    let s1 = r.get("/v1/catalog/services").await;
    let h1 = r.get("/v1/health/service/app").await;
    let st1 = r.get("/v1/health/state/any").await;
    r.register(
        json!({"ID": "h:app2:80", "Name": "app", "Tags": ["t"], "Port": 81,
        "Check": null, "Checks": null}),
    )
    .await;
    let s2 = r.get("/v1/catalog/services").await;
    assert_eq!(s1.json(), s2.json(), "body unchanged");
    assert!(s2.index() > s1.index(), "index moved");
    let h2 = r.get("/v1/health/service/app").await;
    assert!(h2.index() > h1.index());
    assert_eq!(h1.json().as_array().unwrap().len(), 1);
    assert_eq!(h2.json().as_array().unwrap().len(), 2);
    let st2 = r.get("/v1/health/state/any").await;
    assert_eq!(st1.json(), st2.json());
    assert_eq!(st1.index(), st2.index());
    r.stop().await;
}

/// `GET /v1/catalog/node/:node` (`CatalogNodeServices`): the node and its instances keyed by
/// ID, with the `NodeServices` index max(nodes, services); `null` for an unknown node.
#[tokio::test]
async fn catalog_node_lists_its_services_by_id_with_the_catalog_index() {
    let r = start().await;
    r.register(json!({"ID": "h:web1:80", "Name": "web", "Tags": ["a"], "Port": 80}))
        .await;
    r.register(json!({"ID": "db1", "Name": "db", "Port": 5432, "Check": {"TTL": "30s"}}))
        .await;
    let a = r.get("/v1/catalog/node/node1").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["Node"]["Node"], "node1");
    assert_eq!(v["Node"]["Address"], "127.0.0.1");
    let services = v["Services"].as_object().unwrap();
    assert_eq!(
        services.keys().collect::<Vec<_>>(),
        ["db1", "h:web1:80"],
        "keyed by instance ID"
    );
    let web = &v["Services"]["h:web1:80"];
    assert_eq!(web["ID"], "h:web1:80");
    assert_eq!(web["Service"], "web");
    assert_eq!(web["Tags"], json!(["a"]));
    assert_eq!(web["Port"], 80);
    let db_modify = v["Services"]["db1"]["ModifyIndex"].as_u64().unwrap();
    assert!(web["ModifyIndex"].as_u64().unwrap() < db_modify);
    let services_idx = r.get("/v1/catalog/services").await.index();
    let nodes_idx = r.get("/v1/catalog/nodes").await.index();
    assert_eq!(a.index(), services_idx.max(nodes_idx));
    assert_eq!(a.index(), db_modify);

    // A check change moves neither entry, so neither the index nor the body.
    let a = r.put("/v1/agent/check/pass/service:db1", "").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let after_check = r.get("/v1/catalog/node/node1").await;
    assert_eq!(after_check.index(), services_idx.max(nodes_idx));
    assert_eq!(after_check.json(), v);

    // Unknown node: 200 and `null`; no name: 400.
    let a = r.get("/v1/catalog/node/elsewhere").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text.trim(), "null");
    assert_eq!(a.index(), 1);
    let a = r.get("/v1/catalog/node/").await;
    assert_eq!(a.status, 400);
    assert_eq!(a.text, "Missing node name");
    r.stop().await;
}

#[tokio::test]
async fn catalog_node_blocks_until_a_service_on_it_changes() {
    let r = start().await;
    r.register(json!({"ID": "w1", "Name": "w", "Port": 80}))
        .await;
    let idx = r.get("/v1/catalog/node/node1").await.index();
    // A KV write consumes a raft index but moves neither entry: the read times out unchanged.
    r.put("/v1/kv/x", "1").await;
    let a = r
        .get(&format!("/v1/catalog/node/node1?index={idx}&wait=300ms"))
        .await;
    assert_eq!(a.index(), idx);
    // A silent registration (no checks, same tags) wakes it with the new instance.
    let base = r.base.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let a = reqwest::Client::new()
            .put(format!("{base}/v1/agent/service/register"))
            .body(json!({"ID": "w2", "Name": "w", "Port": 81}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(a.status(), 200);
    });
    let a = r
        .get(&format!("/v1/catalog/node/node1?index={idx}&wait=10s"))
        .await;
    assert!(a.index() > idx);
    assert_eq!(a.json()["Services"]["w2"]["Service"], "w");
    writer.await.unwrap();
    // So does a deregistration.
    let idx = a.index();
    r.put("/v1/agent/service/deregister/w1", "").await;
    let a = r
        .get(&format!("/v1/catalog/node/node1?index={idx}&wait=10s"))
        .await;
    assert!(a.index() > idx);
    assert!(a.json()["Services"].get("w1").is_none());
    r.stop().await;
}

// ---------------------------------------------------------------- 17.3 agent

#[tokio::test]
async fn test_api_agent_services() {
    let r = start().await;
    r.register(
        json!({"Name": "foo", "ID": "foo", "Tags": ["bar", "baz"], "Port": 8000,
        "Check": {"TTL": "15s"}}),
    )
    .await;
    let v = r.get("/v1/agent/services").await.json();
    assert_eq!(v["foo"]["Service"], "foo");
    assert_eq!(v["foo"]["Port"], 8000);
    let v = r.get("/v1/agent/checks").await.json();
    assert_eq!(v["service:foo"]["Status"], "critical");
    assert!(v.get("serfHealth").is_none());
    let a = r.get("/v1/agent/health/service/id/foo2").await;
    assert_eq!(a.status, 404);
    let a = r.get("/v1/agent/health/service/id/foo").await;
    assert_eq!(a.status, 503);
    let v = a.json();
    assert_eq!(v["AggregatedStatus"], "critical");
    assert_eq!(v["Service"]["Port"], 8000);
    let a = r.get("/v1/agent/health/service/id/foo?format=text").await;
    assert_eq!((a.status.as_u16(), a.text.as_str()), (503, "critical"));
    r.stop().await;
}

#[tokio::test]
async fn test_api_agent_services_check_passing_bad_status_check_id_multiple() {
    let r = start().await;
    r.register(json!({"Name": "p", "Check": {"TTL": "15s", "Status": "passing"}}))
        .await;
    assert_eq!(
        r.get("/v1/agent/checks").await.json()["service:p"]["Status"],
        "passing"
    );
    assert_eq!(r.get("/v1/agent/health/service/id/p").await.status, 200);
    let a = r
        .put_json(
            "/v1/agent/service/register",
            json!({"Name": "b", "Check": {"TTL": "15s", "Status": "fluffy"}}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.text,
        "Status for checks must 'passing', 'warning', 'critical'"
    );
    r.register(json!({"Name": "c", "Check": {"CheckID": "my-id", "TTL": "15s"}}))
        .await;
    let checks = r.get("/v1/agent/checks").await.json();
    assert!(checks.get("my-id").is_some());
    r.register(json!({"Name": "foo", "Checks": [{"TTL": "15s"}, {"TTL": "30s"}]}))
        .await;
    let checks = r.get("/v1/agent/checks").await.json();
    assert!(checks.get("service:foo:1").is_some());
    assert!(checks.get("service:foo:2").is_some());
    r.stop().await;
}

#[tokio::test]
async fn test_api_agent_service_and_replace_checks() {
    let r = start().await;
    r.register(json!({"Name": "foo", "Port": 8000, "Check": {"TTL": "15s"}}))
        .await;
    assert_eq!(r.get("/v1/agent/health/service/id/foo").await.status, 503);
    let a = r
        .put_json(
            "/v1/agent/service/register?replace-existing-checks",
            json!({"Name": "foo", "Port": 9000}),
        )
        .await;
    assert_eq!(a.status, 200);
    let a = r.get("/v1/agent/health/service/id/foo").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["Service"]["Port"], 9000);
    assert!(
        r.get("/v1/agent/checks")
            .await
            .json()
            .get("service:foo")
            .is_none()
    );
    r.stop().await;
}

#[tokio::test]
async fn test_api_agent_set_ttl_status() {
    let r = start().await;
    r.register(json!({"Name": "foo", "Check": {"TTL": "15s"}}))
        .await;
    for (verb, status) in [
        ("warn", "warning"),
        ("pass", "passing"),
        ("fail", "critical"),
    ] {
        let a = r
            .put(
                &format!("/v1/agent/check/{verb}/service:foo?note={verb}-note"),
                "",
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.text, "");
        let c = &r.get("/v1/agent/checks").await.json()["service:foo"];
        assert_eq!(c["Status"], status);
        assert_eq!(c["Output"], format!("{verb}-note"));
    }
    let a = r
        .put_json(
            "/v1/agent/check/update/service:foo",
            json!({"Status": "passing", "Output": "foo"}),
        )
        .await;
    assert_eq!(a.status, 200);
    let c = &r.get("/v1/agent/checks").await.json()["service:foo"];
    assert_eq!(
        (c["Status"].as_str(), c["Output"].as_str()),
        (Some("passing"), Some("foo"))
    );
    let a = r
        .put_json(
            "/v1/agent/check/update/service:foo",
            json!({"Status": "pass"}),
        )
        .await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (400, "Invalid check status: 'pass'")
    );
    r.stop().await;
}

#[tokio::test]
async fn test_api_agent_checks_and_service_bound() {
    let r = start().await;
    let a = r
        .put_json(
            "/v1/agent/check/register",
            json!({"Name": "foo", "TTL": "15s"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let c = &r.get("/v1/agent/checks").await.json()["foo"];
    assert_eq!(c["CheckID"], "foo");
    assert_eq!(c["Status"], "critical");
    assert_eq!(c["Type"], "ttl");
    // a node-level check shows in health/state and node-level lists
    assert_eq!(
        r.get("/v1/health/state/critical").await.json()[0]["CheckID"],
        "foo"
    );
    let a = r
        .put_json("/v1/agent/check/register", json!({"TTL": "15s"}))
        .await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (400, "Missing check name")
    );
    r.register(json!({"Name": "svc"})).await;
    let a = r
        .put_json(
            "/v1/agent/check/register",
            json!({"Name": "bound", "ServiceID": "svc",
            "TTL": "15s", "DeregisterCriticalServiceAfter": "nope"}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(a.text.contains("invalid duration"), "{}", a.text);
    let a = r
        .put_json(
            "/v1/agent/check/register",
            json!({"Name": "bound", "ServiceID": "svc",
            "TTL": "15s"}),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        r.get("/v1/agent/checks").await.json()["bound"]["ServiceName"],
        "svc"
    );
    assert_eq!(
        r.put("/v1/agent/check/deregister/bound", "").await.status,
        200
    );
    assert_eq!(
        r.put("/v1/agent/check/deregister/bound", "").await.status,
        404
    );
    r.stop().await;
}

#[tokio::test]
async fn test_api_agent_service_hash_blocking() {
    let r = start().await;
    r.register(json!({"Name": "foo", "Port": 8000})).await;
    let a = r.get("/v1/agent/service/foo").await;
    assert_eq!(a.status, 200);
    let hash = a.header("X-Consul-ContentHash").unwrap().to_string();
    assert_eq!(a.json()["ContentHash"], hash.as_str());
    let t = Instant::now();
    let b = r
        .get(&format!("/v1/agent/service/foo?hash={hash}&wait=100ms"))
        .await;
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(b.header("X-Consul-ContentHash"), Some(hash.as_str()));
    assert!(b.header("X-Consul-Index").is_none());
    // a change returns early with a new hash
    let base = r.base.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reqwest::Client::new()
            .put(format!("{base}/v1/agent/service/register"))
            .body(json!({"Name": "foo", "Port": 8001}).to_string())
            .send()
            .await
            .unwrap();
    });
    let t = Instant::now();
    let c = r
        .get(&format!("/v1/agent/service/foo?hash={hash}&wait=5s"))
        .await;
    assert!(t.elapsed() < Duration::from_secs(4));
    assert_ne!(c.header("X-Consul-ContentHash"), Some(hash.as_str()));
    assert_eq!(c.json()["Port"], 8001);
    writer.await.unwrap();
    assert_eq!(r.get("/v1/agent/service/nope").await.status, 404);
    r.stop().await;
}

#[tokio::test]
async fn test_api_agent_service_address() {
    let r = start().await;
    r.register(json!({"Name": "a1", "Address": "192.168.0.42",
        "TaggedAddresses": {"lan": {"Address": "192.168.0.43", "Port": 1}}}))
        .await;
    r.register(json!({"Name": "a2"})).await;
    let v = r.get("/v1/agent/services").await.json();
    assert_eq!(v["a1"]["Address"], "192.168.0.42");
    assert_eq!(
        v["a1"]["TaggedAddresses"]["lan"],
        json!({"Address": "192.168.0.43", "Port": 1})
    );
    assert_eq!(v["a2"]["Address"], "");
    let a = r
        .put_json(
            "/v1/agent/service/register",
            json!({"Name": "z", "Address": "0.0.0.0"}),
        )
        .await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (400, "Invalid service address")
    );
    let a = r
        .put_json("/v1/agent/service/register", json!({"Port": 1}))
        .await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (400, "Missing service name")
    );
    let a = r
        .put_json(
            "/v1/agent/service/register",
            json!({"Name": "m", "Meta": {"bad.key": "v"}}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(a.text.starts_with("Invalid Service Meta"));
    r.stop().await;
}

#[tokio::test]
async fn test_api_service_maintenance_opts() {
    let r = start().await;
    r.register(json!({"Name": "redis"})).await;
    let a = r
        .put(
            "/v1/agent/service/maintenance/redis?enable=true&reason=broken",
            "",
        )
        .await;
    assert_eq!(a.status, 200);
    let c = &r.get("/v1/agent/checks").await.json()["_service_maintenance:redis"];
    assert_eq!(c["Status"], "critical");
    assert_eq!(c["Notes"], "broken");
    assert_eq!(c["Type"], "maintenance");
    let a = r.get("/v1/agent/health/service/id/redis").await;
    assert_eq!(a.json()["AggregatedStatus"], "maintenance");
    r.put("/v1/agent/service/maintenance/redis?enable=false", "")
        .await;
    assert!(
        r.get("/v1/agent/checks")
            .await
            .json()
            .get("_service_maintenance:redis")
            .is_none()
    );
    let a = r.put("/v1/agent/service/maintenance/redis", "").await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (400, "Missing value for enable")
    );
    r.stop().await;
}

#[tokio::test]
async fn agent_unknown_ids_and_non_ttl_checks() {
    let r = start().await;
    let a = r.put("/v1/agent/service/deregister/nope", "").await;
    assert_eq!(a.status, 404);
    assert_eq!(
        a.text,
        "Unknown service ID \"nope\". Ensure that the service ID is passed, not the service name."
    );
    let a = r.put("/v1/agent/check/pass/nope", "").await;
    assert_eq!(a.status, 404);
    assert!(a.text.starts_with("Unknown check ID \"nope\""));
    r.register(json!({"Name": "h", "Check": {"HTTP": "http://127.0.0.1:1/", "Interval": "10s"}}))
        .await;
    let a = r.put("/v1/agent/check/pass/service:h", "").await;
    assert_eq!(a.status, 500);
    assert_eq!(a.text, "CheckID \"service:h\" does not have associated TTL");
    r.stop().await;
}

#[tokio::test]
async fn registrator_payload_and_snake_case_are_accepted() {
    let r = start().await;
    r.register(
        json!({"ID": "host:redis.0:6379", "Name": "redis", "Port": 32768,
        "Tags": ["a"], "Address": "10.0.0.2",
        "Meta": {"check_http": "/health", "check_interval": "15s", "region": "us2"},
        "Check": null, "Checks": null}),
    )
    .await;
    r.register(json!({"name": "snake", "port": 1,
        "check": {"script_args": ["/bin/true"], "interval": "10s", "status": "passing"}}))
        .await;
    let v = r.get("/v1/agent/services").await.json();
    assert_eq!(v["host:redis.0:6379"]["Meta"]["check_http"], "/health");
    assert_eq!(v["snake"]["Port"], 1);
    let c = &r.get("/v1/agent/checks").await.json()["service:snake"];
    assert_eq!(c["Type"], "script");
    assert_eq!(c["Status"], "passing");
    r.stop().await;
}

#[tokio::test]
async fn ttl_expiry_turns_check_critical_and_moves_health_index() {
    let r = start().await;
    r.register(json!({"Name": "t", "Check": {"TTL": "300ms", "Status": "passing"}}))
        .await;
    let a = r.get("/v1/health/service/t").await;
    assert_eq!(a.json()[0]["Checks"][1]["Status"], "passing");
    let idx = a.index();
    let t = Instant::now();
    let b = r
        .get(&format!("/v1/health/service/t?index={idx}&wait=5s"))
        .await;
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(b.index() > idx);
    let c = &b.json()[0]["Checks"][1];
    assert_eq!(c["Status"], "critical");
    assert!(c["Output"].as_str().unwrap().starts_with("TTL expired"));
    // a refresh keeps it alive
    r.put("/v1/agent/check/pass/service:t", "").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    r.put("/v1/agent/check/pass/service:t", "").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    r.put("/v1/agent/check/pass/service:t", "").await;
    assert_eq!(
        r.get("/v1/agent/checks").await.json()["service:t"]["Status"],
        "passing"
    );
    r.stop().await;
}

async fn tiny_http_server() -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    use warp::Filter;
    let token = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = warp::path("health").map(|| "ok");
    let busy = warp::path("busy")
        .map(|| warp::reply::with_status("slow down", warp::http::StatusCode::TOO_MANY_REQUESTS));
    let broken = warp::path("broken")
        .map(|| warp::reply::with_status("oops", warp::http::StatusCode::INTERNAL_SERVER_ERROR));
    let route = health.or(busy).or(broken);
    let server = warp::serve(route)
        .incoming(listener)
        .graceful(token.clone().cancelled_owned());
    tokio::spawn(server.run());
    (addr, token)
}

async fn wait_for_status(r: &Reg, check: &str, status: &str, within: Duration) -> Value {
    let t = Instant::now();
    loop {
        let v = r.get("/v1/agent/checks").await.json();
        if v[check]["Status"] == status {
            return v[check].clone();
        }
        assert!(t.elapsed() < within, "{check} never became {status}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn http_check_turns_critical_when_server_stops() {
    let (addr, token) = tiny_http_server().await;
    let r = start().await;
    r.register(json!({"Name": "web", "Port": addr.port(), "Check": {
        "HTTP": format!("http://{addr}/health"), "Interval": "200ms", "Timeout": "1s"}}))
        .await;
    let c = wait_for_status(&r, "service:web", "passing", Duration::from_secs(5)).await;
    assert!(c["Output"].as_str().unwrap().contains("200"), "{c}");
    token.cancel();
    let c = wait_for_status(&r, "service:web", "critical", Duration::from_secs(5)).await;
    assert_eq!(c["Type"], "http");
    r.stop().await;
}

#[tokio::test]
async fn http_check_maps_429_to_warning_and_5xx_to_critical() {
    let (addr, token) = tiny_http_server().await;
    let r = start().await;
    r.register(
        json!({"Name": "busy", "Check": {"HTTP": format!("http://{addr}/busy"),
        "Interval": "10s", "Status": "passing"}}),
    )
    .await;
    r.register(
        json!({"Name": "broken", "Check": {"HTTP": format!("http://{addr}/broken"),
        "Interval": "10s", "Status": "passing"}}),
    )
    .await;
    let c = wait_for_status(&r, "service:busy", "warning", Duration::from_secs(5)).await;
    assert!(c["Output"].as_str().unwrap().contains("429"), "{c}");
    let c = wait_for_status(&r, "service:broken", "critical", Duration::from_secs(5)).await;
    assert!(c["Output"].as_str().unwrap().contains("500"), "{c}");
    token.cancel();
    r.stop().await;
}

#[tokio::test]
async fn tcp_check_passes_while_listening() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = start().await;
    r.register(json!({"Name": "tcp", "Check": {"TCP": addr.to_string(), "Interval": "200ms"}}))
        .await;
    wait_for_status(&r, "service:tcp", "passing", Duration::from_secs(5)).await;
    drop(listener);
    wait_for_status(&r, "service:tcp", "critical", Duration::from_secs(5)).await;
    r.stop().await;
}

#[tokio::test]
async fn deregister_critical_service_after_with_short_minimum() {
    let r = start_with(RegistryConfig {
        check_reap_interval: Duration::from_millis(100),
        min_deregister_critical_after: Duration::from_millis(200),
        ..config()
    })
    .await;
    r.register(json!({"Name": "doomed", "Check": {"TTL": "30s",
        "DeregisterCriticalServiceAfter": "300ms"}}))
        .await;
    r.register(
        json!({"Name": "kept", "Check": {"TTL": "30s", "Status": "passing",
        "DeregisterCriticalServiceAfter": "300ms"}}),
    )
    .await;
    let t = Instant::now();
    loop {
        let v = r.get("/v1/agent/services").await.json();
        if v.get("doomed").is_none() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "never reaped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert!(
        r.get("/v1/agent/services")
            .await
            .json()
            .get("kept")
            .is_some()
    );
    r.stop().await;
}

// ---------------------------------------------------------------- 17.4 blocking protocol

#[tokio::test]
async fn blocking_protocol() {
    let r = start().await;
    r.put("/v1/kv/b", "1").await;
    // index=0 returns at once
    let t = Instant::now();
    let a = r.get("/v1/kv/b?index=0&wait=5s").await;
    assert!(t.elapsed() < Duration::from_secs(1));
    let current = a.index();
    // index=current waits the full wait (with at most wait/16 jitter)
    let t = Instant::now();
    let b = r.get(&format!("/v1/kv/b?index={current}&wait=200ms")).await;
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(200), "{el:?}");
    assert!(el <= Duration::from_millis(200 * 17 / 16 + 300), "{el:?}");
    assert_eq!(b.index(), current);
    assert_eq!(b.text, a.text);
    // a write in between returns early with a higher index
    let base = r.base.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reqwest::Client::new()
            .put(format!("{base}/v1/kv/b"))
            .body("2")
            .send()
            .await
            .unwrap();
    });
    let t = Instant::now();
    let c = r.get(&format!("/v1/kv/b?index={current}&wait=5s")).await;
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(c.index() > current);
    writer.await.unwrap();
    // an index far above current blocks the full wait, then returns the lower index
    let t = Instant::now();
    let d = r.get("/v1/kv/b?index=1000000&wait=200ms").await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(d.index(), c.index());
    // bad parameters
    let e = r.get("/v1/kv/b?wait=abc").await;
    assert_eq!(
        (e.status.as_u16(), e.text.as_str()),
        (400, "Invalid wait time")
    );
    let e = r.get("/v1/kv/b?wait=5").await;
    assert_eq!(
        (e.status.as_u16(), e.text.as_str()),
        (400, "Invalid wait time")
    );
    let e = r.get("/v1/kv/b?index=-1").await;
    assert_eq!((e.status.as_u16(), e.text.as_str()), (400, "Invalid index"));
    // consul-template style
    let f = r
        .get(&format!(
            "/v1/kv/b?stale&wait=60000ms&index={}",
            c.index() - 1
        ))
        .await;
    assert_eq!(f.status, 200);
    assert_eq!(f.header("X-Consul-Effective-Consistency"), Some("stale"));
    r.stop().await;
}

#[tokio::test]
async fn many_blocked_queries_wake_only_for_their_scope() {
    let r = start().await;
    r.put("/v1/kv/hot", "0").await;
    r.register(json!({"Name": "quiet"})).await;
    let kv_idx = r.get("/v1/kv/hot").await.index();
    let svc_idx = r.get("/v1/catalog/service/quiet").await.index();
    let client = reqwest::Client::new();
    let mut kv_waiters = Vec::new();
    for _ in 0..100 {
        let url = format!("{}/v1/kv/hot?index={kv_idx}&wait=10s", r.base);
        let c = client.clone();
        kv_waiters.push(tokio::spawn(async move {
            let t = Instant::now();
            let resp = c.get(url).send().await.unwrap();
            let idx: u64 = resp.headers()["X-Consul-Index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (t.elapsed(), idx)
        }));
    }
    let quiet_url = format!(
        "{}/v1/catalog/service/quiet?index={svc_idx}&wait=1500ms",
        r.base
    );
    let quiet = tokio::spawn(client.get(quiet_url).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.put("/v1/kv/hot", "1").await;
    for w in kv_waiters {
        let (elapsed, idx) = w.await.unwrap();
        assert!(idx > kv_idx);
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }
    // the KV write did not wake the service watcher
    let t = Instant::now();
    let q = quiet.await.unwrap().unwrap();
    assert!(t.elapsed() >= Duration::from_millis(500), "returned early");
    assert_eq!(
        q.headers()["X-Consul-Index"].to_str().unwrap(),
        svc_idx.to_string()
    );
    r.stop().await;
}

#[tokio::test]
async fn fresh_registry_reports_index_at_least_one_everywhere() {
    let r = start().await;
    for p in [
        "/v1/catalog/services",
        "/v1/catalog/service/x",
        "/v1/catalog/nodes",
        "/v1/health/service/x",
        "/v1/health/state/any",
        "/v1/health/checks/x",
        "/v1/kv/x",
        "/v1/kv/x?recurse",
        "/v1/kv/?recurse",
        "/v1/kv/?keys",
    ] {
        let a = r.get(p).await;
        assert!(a.index() >= 1, "{p}");
        assert_eq!(a.header("X-Consul-KnownLeader"), Some("true"), "{p}");
        assert_eq!(
            a.header("X-Consul-Default-ACL-Policy"),
            Some("allow"),
            "{p}"
        );
    }
    r.stop().await;
}

// ---------------------------------------------------------------- conventions

#[tokio::test]
async fn conventions_paths_methods_consistency_dc_status() {
    let r = start().await;
    let a = r.get("/v1/nope/nothing").await;
    assert_eq!(a.status, 404);
    assert_eq!(
        a.text,
        "Invalid URL path: not a recognized HTTP API endpoint"
    );
    let a = r.put("/v1/catalog/services", "").await;
    assert_eq!(a.status, 405);
    assert_eq!(a.header("Allow"), Some("OPTIONS,GET"));
    assert_eq!(a.text, "method PUT not allowed");
    let a = r.call(Method::POST, "/v1/kv/x", None).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.header("Allow"), Some("OPTIONS,GET,PUT,DELETE"));
    let a = r.get("/v1/agent/service/register").await;
    assert_eq!(a.status, 405);
    let a = r.get("/v1/kv/x?stale&consistent").await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.text,
        "Cannot specify ?stale with ?consistent, conflicting semantics."
    );
    let a = r.get("/v1/kv/x?consistent").await;
    assert_eq!(
        a.header("X-Consul-Effective-Consistency"),
        Some("consistent")
    );
    for p in [
        "/v1/catalog/service/",
        "/v1/health/service/",
        "/v1/health/checks/",
    ] {
        let a = r.get(p).await;
        assert_eq!(
            (a.status.as_u16(), a.text.as_str()),
            (400, "Missing service name"),
            "{p}"
        );
    }
    let a = r.get("/v1/catalog/services?dc=dc2").await;
    assert_eq!(
        (a.status.as_u16(), a.text.as_str()),
        (500, "No path to datacenter")
    );
    assert_eq!(r.get("/v1/catalog/services?dc=dc1").await.status, 200);
    assert_eq!(
        r.get("/v1/status/leader").await.json(),
        json!("127.0.0.1:8300")
    );
    assert_eq!(
        r.get("/v1/status/peers").await.json(),
        json!(["127.0.0.1:8300"])
    );
    let v = r.get("/v1/agent/self").await.json();
    assert_eq!(v["Config"]["NodeName"], "node1");
    assert_eq!(v["Config"]["Datacenter"], "dc1");
    let a = r.get("/v1/catalog/services?pretty").await;
    assert_eq!(a.text, "{}");
    r.register(json!({"Name": "p"})).await;
    let a = r.get("/v1/catalog/services?pretty").await;
    assert!(a.text.contains('\n'));
    let a = r
        .client
        .get(format!("{}/v1/catalog/services", r.base))
        .header("X-Consul-Token", "whatever")
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    r.stop().await;
}

// ---------------------------------------------------------------- persistence

#[tokio::test]
async fn state_survives_restart_and_index_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || RegistryConfig {
        data_dir: Some(dir.path().to_path_buf()),
        compact_after_records: 5,
        ..config()
    };
    let r = start_with(cfg()).await;
    r.put("/v1/kv/p/a?flags=7", "alpha").await;
    r.put("/v1/kv/p/b", "beta").await;
    r.delete("/v1/kv/p/b").await;
    r.register(json!({"ID": "s1", "Name": "svc", "Tags": ["t"],
        "Check": {"TTL": "60s", "Status": "passing"}}))
        .await;
    r.put("/v1/agent/check/warn/service:s1?note=meh", "").await;
    let session = create_session(&r, json!({"Name": "persisted"})).await;
    assert_eq!(
        r.put(&format!("/v1/kv/locked?acquire={session}"), "l")
            .await
            .text,
        "true"
    );
    for i in 0..7 {
        r.put(&format!("/v1/kv/many/{i}"), "x").await;
    }
    let kv_before = r.get("/v1/kv/p/?recurse").await;
    let health_before = r.get("/v1/health/service/svc").await;
    let services_idx = r.get("/v1/catalog/services").await.index();
    let top = r.get("/v1/kv/?recurse").await.index();
    r.stop().await;

    let r = start_with(cfg()).await;
    let kv_after = r.get("/v1/kv/p/?recurse").await;
    assert_eq!(kv_after.text, kv_before.text);
    assert_eq!(
        kv_after.index(),
        kv_before.index(),
        "tombstone index survives"
    );
    let health_after = r.get("/v1/health/service/svc").await;
    assert_eq!(health_after.index(), health_before.index());
    let v = health_after.json();
    assert_eq!(v[0]["Service"]["Tags"], json!(["t"]));
    assert_eq!(v[0]["Checks"][1]["Status"], "warning");
    assert_eq!(v[0]["Checks"][1]["Output"], "meh");
    assert_eq!(r.get("/v1/catalog/services").await.index(), services_idx);
    assert_eq!(
        r.get(&format!("/v1/session/info/{session}")).await.json()[0]["Name"],
        "persisted"
    );
    assert_eq!(
        r.get("/v1/kv/locked").await.json()[0]["Session"],
        session.as_str()
    );
    r.put("/v1/kv/after", "1").await;
    let next = r.get("/v1/kv/after").await.index();
    assert!(
        next > top,
        "raft index continues after restart ({next} > {top})"
    );
    r.stop().await;

    // a torn record at the end of the log does not stop startup
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("commands.log"))
        .unwrap();
    f.write_all(b"{\"index\":99999,\"cmd\":{\"KvS").unwrap();
    drop(f);
    let r = start_with(cfg()).await;
    assert_eq!(r.get("/v1/kv/after").await.index(), next);
    r.stop().await;
}
