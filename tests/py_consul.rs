//! Runs `tests/py/test_py_consul.py` (PyPI's py-consul client) against the registry.
//! The interpreter is `$FLOW_PROXY_PYTHON` when set (the Makefile points it at the virtual
//! environment that `scripts/install-test-deps.sh` creates), else `python3`. Without it or
//! without the `consul` module the test is skipped, unless `CI=true`.

use std::time::Duration;

use flow_proxy::registry::{RegistryConfig, spawn};

fn python() -> String {
    std::env::var("FLOW_PROXY_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

fn python_with_consul() -> Result<(), String> {
    let out = std::process::Command::new(python())
        .args(["-c", "import consul"])
        .output()
        .map_err(|e| format!("{} not runnable: {e}", python()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python module `consul` missing (pip install py-consul): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_consul_client_works_against_the_registry() {
    if let Err(why) = python_with_consul() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        eprintln!("SKIPPED py_consul_client_works_against_the_registry: {why}");
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reg = spawn(
        listener,
        RegistryConfig {
            node_name: "py-node".into(),
            ..RegistryConfig::default()
        },
    )
    .await
    .unwrap();
    let addr = reg.local_addr().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/test_py_consul.py");
    let child = tokio::process::Command::new(python())
        .arg(script)
        .arg(&addr)
        .env("CONSUL_HTTP_ADDR", &addr)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("py-consul script timed out")
        .expect("python3 runs");
    reg.shutdown().await.unwrap();
    assert!(
        out.status.success(),
        "py-consul script failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
