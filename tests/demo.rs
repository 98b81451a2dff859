//! `make demo`'s script runs to completion against the real HAProxy, on ports picked at run
//! time, and tells the README's story: routed, scaled, failed over, removed.

mod support;

use support::{free_port, haproxy_available};

#[test]
fn the_demo_script_runs_to_completion() {
    if !haproxy_available() {
        return;
    }
    let backends = [free_port(), free_port(), free_port()]
        .map(|p| p.to_string())
        .join(" ");
    let output = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .env("FLOW_PROXY_BIN", env!("CARGO_BIN_EXE_flow-proxy"))
        .env("DEMO_REGISTRY_PORT", free_port().to_string())
        .env("DEMO_API_PORT", free_port().to_string())
        .env("DEMO_HTTP_PORT", free_port().to_string())
        .env("DEMO_HTTPS_PORT", free_port().to_string())
        .env("DEMO_BACKEND_PORTS", backends)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for needle in [
        "hello, world!",
        "answered by go-demo-1",
        "answered by go-demo-2",
        "answered by go-demo-3",
        "(connection refused)",
        "503 Service Unavailable",
        "demo finished",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
}
