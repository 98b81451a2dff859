//! flow-proxy as its own process, under traffic: `kill -9` leaves HAProxy serving and the next
//! flow-proxy adopts it and converges; SIGTERM stops flow-proxy in bounded time even while
//! Consul hangs, leaving HAProxy serving in its own session, or stopping it gracefully with
//! `--stop-haproxy-on-exit`.

mod support;

use std::time::{Duration, Instant};

use support::chaos::{Chaos, Mode};
use support::faults::{
    ProxyProcess, Traffic, group_and_session, master_pid, pid_alive, show_proc, signal,
    slow_backend, stop_haproxy, tmp,
};
use support::{Registry, backend, free_port, haproxy_available, http, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_flow_proxy_leaves_haproxy_serving_and_its_successor_adopts_it() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let consul = format!("http://{}", registry.addr);
    let dir = tmp();
    let port = free_port();
    let mut first = ProxyProcess::start(&consul, "edge", dir.path(), port, &[]).await;
    registry.register("app", 1, backend("app").await).await;
    let b1 = registry.register("b", 1, backend("b1").await).await;
    for path in [
        "/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app",
        "/v1/docker-flow-proxy/reconfigure?serviceName=b&servicePath=/b",
    ] {
        let (status, body) = first.call(path).await;
        assert_eq!(status, 200, "{body}");
    }
    let master = master_pid(dir.path());
    let traffic = Traffic::start(port, "localhost", "/app", "app\n");

    first.kill().await;
    // No controller: HAProxy serves on, and the catalog changes meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    registry.register("b", 2, backend("b2").await).await;
    registry.deregister(&b1).await;
    assert_eq!(
        http(port, "GET", "localhost", "/b").await,
        (200, "b1\n".to_owned())
    );

    let mut second = ProxyProcess::start(&consul, "edge", dir.path(), port, &[]).await;
    assert_eq!(
        master_pid(dir.path()),
        master,
        "the running master was adopted"
    );
    assert!(pid_alive(master));
    let procs = show_proc(dir.path()).await;
    assert!(
        procs.lines().filter(|l| l.contains("master")).count() == 1,
        "one master: {procs}"
    );
    let log = second.log();
    assert!(log.contains("adopted running HAProxy master"), "{log}");
    assert!(!log.contains("cannot start HAProxy"), "{log}");
    wait_until(
        "the change made while flow-proxy was down is live",
        || async { http(port, "GET", "localhost", "/b").await == (200, "b2\n".to_owned()) },
    )
    .await;
    // And it is in control: a new route goes live.
    registry.register("c", 1, backend("c").await).await;
    let (status, body) = second
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=c&servicePath=/c")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        http(port, "GET", "localhost", "/c").await,
        (200, "c\n".to_owned())
    );

    let counts = traffic.stop().await;
    eprintln!("traffic across kill -9 and adoption: {counts:?}");
    assert!(counts.ok > 50, "{counts:?}");
    assert_eq!(counts.failures(), 0, "failed requests: {counts:?}");
    second.terminate().await;
    stop_haproxy(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_flow_proxy_in_bounded_time_and_leaves_haproxy_serving() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let chaos = Chaos::start(registry.addr).await;
    let dir = tmp();
    let port = free_port();
    let mut proxy = ProxyProcess::start(&chaos.url(), "edge", dir.path(), port, &[]).await;
    registry.register("app", 1, backend("app").await).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");
    let master = master_pid(dir.path());
    // HAProxy runs in its own session and process group, apart from flow-proxy's.
    let (group, session) = group_and_session(master);
    let (own_group, own_session) = group_and_session(proxy.pid());
    assert_eq!(
        (group, session),
        (master, master),
        "HAProxy leads its own session"
    );
    assert_ne!(group, own_group);
    assert_ne!(session, own_session);
    let traffic = Traffic::start(port, "localhost", "/app", "app\n");

    // Consul hangs: the long-polls in flight must not hold the shutdown up.
    chaos.set(Mode::Hang);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let took = proxy.terminate().await;
    eprintln!("flow-proxy exited {took:?} after SIGTERM");
    assert_eq!(
        proxy.call("/v1/docker-flow-proxy/ping").await.0,
        0,
        "API closed"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = traffic.stop().await;
    eprintln!("traffic across SIGTERM: {counts:?}");
    assert!(counts.ok > 20, "{counts:?}");
    assert_eq!(counts.failures(), 0, "failed requests: {counts:?}");
    assert!(pid_alive(master), "HAProxy keeps running");
    assert_eq!(
        http(port, "GET", "localhost", "/app").await,
        (200, "app\n".to_owned())
    );
    stop_haproxy(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_haproxy_on_exit_stops_it_gracefully() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let dir = tmp();
    let port = free_port();
    let consul = format!("http://{}", registry.addr);
    let mut proxy = ProxyProcess::start(
        &consul,
        "edge",
        dir.path(),
        port,
        &["--stop-haproxy-on-exit"],
    )
    .await;
    registry
        .register(
            "slow",
            1,
            slow_backend("slow", Duration::from_secs(3)).await,
        )
        .await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=slow&servicePath=/slow")
        .await;
    assert_eq!(status, 200, "{body}");
    let master = master_pid(dir.path());
    // A request in flight when SIGTERM arrives is still answered.
    let in_flight = tokio::spawn(async move { http(port, "GET", "localhost", "/slow").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    signal(proxy.pid(), "TERM");
    let took = proxy.terminate_signalled().await;
    eprintln!(
        "flow-proxy and HAProxy stopped {:?} after SIGTERM",
        started.elapsed().max(took)
    );
    assert_eq!(in_flight.await.unwrap(), (200, "slow\n".to_owned()));
    assert!(!pid_alive(master), "HAProxy was stopped");
    assert_eq!(
        http(port, "GET", "localhost", "/slow").await.0,
        0,
        "nothing listens"
    );
}
