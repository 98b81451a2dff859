//! Tests of configuration validation: HAProxy's verdicts on edge cases, and that a
//! validation which takes too long is killed rather than leaked.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use flow_proxy::haproxy::process::pid_alive;
use flow_proxy::haproxy::{HaproxyPaths, Supervisor, SupervisorOptions, ValidationError, validate};

mod support;
use support::haproxy_available;

#[tokio::test]
async fn validation_verdicts() {
    if !haproxy_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let paths = HaproxyPaths::new(dir.path().join("hp")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let good = format!(
        "global\n{}defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    \
         timeout server 1s\n{}frontend fe\n    bind 127.0.0.1:{port}\n    \
         http-request return status 200\n",
        paths.global_lines(&Default::default()),
        paths.defaults_lines()
    );
    validate(&paths, &good).await.unwrap();

    // Valid, but HAProxy would not start without a listener: exit code 2.
    let no_listener = "defaults\n    mode http\n";
    match validate(&paths, no_listener).await {
        Err(ValidationError::Rejected { exit_code, alerts }) => {
            assert_eq!(exit_code, Some(2));
            assert!(
                alerts.iter().any(|a| a.message.contains("no listener")),
                "{alerts:?}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    // Several errors are all reported, each with its line.
    let bad = format!("{good}backend b\n    balance nonsense\n    server s1 not-an-address:x\n");
    let err = validate(&paths, &bad).await.unwrap_err();
    let lines: Vec<u32> = err.alerts().iter().filter_map(|a| a.line).collect();
    assert!(lines.len() >= 2, "{err}");
    assert!(err.to_string().contains("haproxy.cfg:"), "{err}");
    eprintln!("{err}");

    // Temporary files never stay behind in the data directory.
    let leftovers: Vec<_> = std::fs::read_dir(paths.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn slow_validation_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("fake.pid");
    let fake = dir.path().join("fake-haproxy");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 30\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let paths = HaproxyPaths::new(dir.path().join("hp")).unwrap();
    let sup = Supervisor::new(
        paths,
        SupervisorOptions {
            haproxy_binary: fake,
            validate_timeout: Duration::from_millis(500),
            ..SupervisorOptions::default()
        },
    );
    let err = sup.validate("global\n").await.unwrap_err();
    assert!(matches!(err, ValidationError::Timeout(_)), "{err:?}");

    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let start = std::time::Instant::now();
    while pid_alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "validation child {pid} was not killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
