//! The benchmark suite: real HAProxy, the embedded registry, small backends, all on 127.0.0.1.
//!
//! Owns: the scenarios (rescale-to-routable against a validated full reload of the same
//! change; reconfigure-to-routable against a raw master-CLI reload of the same configuration),
//! their statistics and the BENCHMARKS.md report. Every figure has its baseline measured in
//! the same run, against the same HAProxy.
//!
//! Must not: run as part of the test suite, assert timings, or send load anywhere but
//! 127.0.0.1. Run with `make bench` (see README.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use flow_proxy::consul::{ConsulClient, ConsulConfig, ServiceRegistration};
use flow_proxy::domain::ServiceIntent;
use flow_proxy::haproxy::{MasterCli, process};
use flow_proxy::intent_store::IntentStore;
use flow_proxy::registry::{self, RegistryConfig, RunningRegistry};
use flow_proxy::settings::{Cli, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

mod churn;
mod counting_proxy;

/// Command line of the suite.
#[derive(Debug, Parser)]
#[command(name = "flow-proxy-bench", about = "flow-proxy's benchmark suite")]
struct Args {
    /// Samples per scenario and per baseline.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Pause between rescale samples, in milliseconds. The catalog watcher allows one sweep
    /// (the read of every node's instance list that finds a silent registration) per 500 ms
    /// to 2 s (growing with the number of instances) after a burst of two, and each sample
    /// registers and deregisters; a shorter gap measures that limiter instead.
    #[arg(long, default_value_t = 4500)]
    gap_ms: u64,
    /// Pause between the samples of the rescale-under-churn row, in milliseconds.
    #[arg(long, default_value_t = 500)]
    churn_gap_ms: u64,
    /// Sizes of the scale scenario, in services of 10 instances each (repeatable), e.g.
    /// `--scale 10 --scale 1000 --scale 2000`.
    #[arg(long, default_values_t = [10])]
    scale: Vec<usize>,
    /// Where to write the report (Markdown); printed only when absent.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Length of the errors-under-churn run (`wrk`), in seconds.
    #[arg(long, default_value_t = 30)]
    churn_secs: u64,
    /// Reconfigures (each a new service) during the errors-under-churn run.
    #[arg(long, default_value_t = 100)]
    churn_reconfigures: usize,
    /// Instance registrations plus deregistrations during the errors-under-churn run.
    #[arg(long, default_value_t = 500)]
    churn_events: usize,
    /// How long the scale scenario watches the requests sent to the registry while idle, in
    /// seconds.
    #[arg(long, default_value_t = 15)]
    idle_secs: u64,
    /// Runs one scenario only (`rescale`, `reconfigure` or `scale`) and prints its figures
    /// instead of writing the report: for quick measurements while working on one path.
    #[arg(long, value_parser = ["rescale", "reconfigure", "scale"])]
    only: Option<String>,
}

/// How long an API call may take.
const API_DEADLINE: Duration = Duration::from_secs(120);

/// How long one sample may take before the run is abandoned.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let load_at_start = load_average();
    flow_proxy::tls::install_crypto_provider();
    if let Some(only) = &args.only {
        return run_only(only, &args).await;
    }
    let env = Env::start(Reg::start().await?).await?;
    let app = backend("app").await?;

    eprintln!("1. rescale-to-routable");
    let rescale = rescale(&env, app, &args).await?;
    eprintln!("2. reconfigure-to-routable");
    let reconfigure = reconfigure(&env, app, &args).await?;
    eprintln!("3. errors under churn");
    let other = backend("other").await?;
    let churn = churn::run(
        &env,
        app,
        other,
        &churn::Plan {
            duration: Duration::from_secs(args.churn_secs),
            reconfigures: args.churn_reconfigures,
            events: args.churn_events,
        },
    )
    .await?;
    let old_workers = env.master()?.show_proc(Duration::from_secs(5)).await?;
    let rss = rss_kib();
    env.stop().await?;
    let mut scales = Vec::new();
    let mut failed_scales = Vec::new();
    for n in &args.scale {
        eprintln!("scale: {n} services");
        match scale(*n, app, &args).await {
            Ok(s) => scales.push(s),
            Err(e) => {
                eprintln!("scale {n} failed: {e:#}");
                failed_scales.push((*n, format!("{e:#}")));
            }
        }
    }
    let report = Report {
        scales,
        failed_scales: failed_scales.clone(),
        samples: args.samples,
        rescale,
        reconfigure,
        churn,
        churn_secs: args.churn_secs,
        old_workers: old_workers.old_worker_count(),
        rss_kib: rss,
    }
    .markdown(&format!(
        "{} Load average (1, 5, 15 min) at the start of the run: {}; at the end: {}. A load \
         above the number of CPUs means other work shared the machine: every figure, flow-proxy's \
         and the baselines' alike, is then slower and noisier than on an idle machine.",
        machine().await,
        load_at_start,
        load_average()
    ));
    println!("{report}");
    if let Some(out) = &args.out {
        tokio::fs::write(out, &report)
            .await
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    if let Some((n, e)) = failed_scales.first() {
        bail!("the scale scenario failed at {n} services: {e}");
    }
    Ok(())
}

/// Runs one scenario and prints its figures (`--only`).
async fn run_only(only: &str, args: &Args) -> Result<()> {
    let app = backend("app").await?;
    if only == "scale" {
        for n in &args.scale {
            let s = scale(*n, app, args).await?;
            println!(
                "scale {}: first live {} ms, reconfigure {} ms, rescale {:?}, reloads {}, \
                 RSS {:?} KiB, idle {:.2} req/s, blocking {:?}",
                s.services,
                s.first_live.as_millis(),
                s.reconfigure.as_millis(),
                s.rescale,
                s.reloads_during_rescale,
                s.rss_kib,
                s.idle_requests_per_s,
                s.idle_blocking
            );
        }
        return Ok(());
    }
    let env = Env::start(Reg::start().await?).await?;
    if only == "rescale" {
        let r = rescale(&env, app, args).await?;
        println!(
            "rescale {:?}\nunder churn {:?}\nreload baseline {:?}\nreloads {}",
            r.runtime, r.churn, r.reload, r.reloads_during_runtime
        );
    } else {
        let r = reconfigure(&env, app, args).await?;
        println!(
            "reconfigure {:?}\nraw reload {:?}\nhaproxy -c {:?}\nratio of medians {:.2}",
            r.api,
            r.raw,
            r.check,
            r.api.median / r.raw.median
        );
    }
    env.stop().await
}

/// The embedded registry, in memory.
struct Reg {
    running: RunningRegistry,
    client: ConsulClient,
    addr: SocketAddr,
}

impl Reg {
    async fn start() -> Result<Reg> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let config = RegistryConfig {
            data_dir: None,
            node_name: "node1".into(),
            ..RegistryConfig::default()
        };
        let running = registry::spawn(listener, config).await?;
        let addr = running.local_addr();
        let client = ConsulClient::new(&ConsulConfig::new(&format!("http://{addr}"))?)?;
        Ok(Reg {
            running,
            client,
            addr,
        })
    }
}

struct Env {
    _registry: RunningRegistry,
    client: ConsulClient,
    api: SocketAddr,
    http_port: u16,
    data_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), flow_proxy::server::ServerError>>>,
}

impl Drop for Env {
    /// A run that failed before [`Env::stop`] must not leave its HAProxy behind.
    fn drop(&mut self) {
        self.shutdown.cancel();
        if self.task.is_some() {
            let pid_file = self.data_dir.path().join("haproxy.pid");
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                let _ = process::send_signal(pid, process::Signal::Term);
            }
        }
    }
}

impl Env {
    async fn start(reg: Reg) -> Result<Env> {
        let raddr = reg.addr;
        Env::start_via(reg, raddr).await
    }

    /// Like [`Env::start`], with flow-proxy talking to the registry through `consul`.
    async fn start_via(reg: Reg, consul: SocketAddr) -> Result<Env> {
        let Reg {
            running,
            client,
            addr: _,
        } = reg;
        let data_dir = tempfile::Builder::new().prefix("fpb").tempdir_in("/tmp")?;
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let api_listener = TcpListener::bind("127.0.0.1:0").await?;
        let api = api_listener.local_addr()?;
        let argv = [
            "flow-proxy".to_owned(),
            "server".to_owned(),
            "--consul-address".to_owned(),
            format!("http://{consul}"),
            "--bind-address".to_owned(),
            "127.0.0.1".to_owned(),
            "--http-port".to_owned(),
            http_port.to_string(),
            "--https-port".to_owned(),
            "0".to_owned(),
            "--data-dir".to_owned(),
            data_dir.path().display().to_string(),
            "--stop-haproxy-on-exit".to_owned(),
        ];
        let Command::Server(server_args) = Cli::try_parse_from(argv)?.command else {
            bail!("expected the server command");
        };
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            flow_proxy::server::run_server_on(*server_args, api_listener, stop).await
        });
        let env = Env {
            _registry: running,
            client,
            api,
            http_port,
            data_dir,
            shutdown,
            task: Some(task),
        };
        wait_for("flow-proxy is ready", || async {
            env.call("/v1/docker-flow-proxy/ping").await.0 == 200
        })
        .await?;
        Ok(env)
    }

    /// An API call; a `reconfigure` answers once its change is live, which takes long at scale.
    async fn call(&self, path: &str) -> (u16, String) {
        http_within(self.api.port(), "localhost", path, API_DEADLINE).await
    }

    async fn api_ok(&self, path: &str) -> Result<()> {
        let (status, body) = self.call(path).await;
        if status != 200 {
            bail!("{path}: {status} {body}");
        }
        Ok(())
    }

    async fn get(&self, path: &str) -> (u16, String) {
        http(self.http_port, "localhost", path).await
    }

    async fn register(&self, service: &str, id: &str, port: u16) -> Result<()> {
        self.client
            .agent_register(&ServiceRegistration {
                id: id.into(),
                name: service.into(),
                address: "127.0.0.1".into(),
                port,
                ..ServiceRegistration::default()
            })
            .await?;
        Ok(())
    }

    async fn reloads(&self) -> Result<u64> {
        self.counter("flow_proxy_haproxy_reloads_total").await
    }

    /// A counter from `/metrics`.
    async fn counter(&self, name: &str) -> Result<u64> {
        let (_, text) = self.call("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("no {name} in /metrics: {text}"))
    }

    fn config_path(&self) -> PathBuf {
        self.data_dir.path().join("haproxy.cfg")
    }

    fn master(&self) -> Result<MasterCli> {
        Ok(MasterCli::new(self.data_dir.path().join("master.sock")))
    }

    /// A raw hitless reload through the master CLI, confirmed by a fresh worker in `show proc`.
    async fn raw_reload(&self) -> Result<()> {
        let master = self.master()?;
        let before = master
            .show_proc(Duration::from_secs(5))
            .await?
            .fresh_workers();
        // One attempt, never retried: the master closes the connection while it re-executes.
        let mut cli = tokio::net::UnixStream::connect(master.path()).await?;
        cli.write_all(b"reload\n").await?;
        let mut answer = Vec::new();
        let _ = cli.read_to_end(&mut answer).await;
        wait_for("the reload is confirmed", || async {
            match master.try_show_proc().await {
                Ok(procs) => {
                    let fresh = procs.fresh_workers();
                    !fresh.is_empty() && fresh.iter().all(|p| !before.contains(p))
                }
                Err(_) => false,
            }
        })
        .await
    }

    async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(90), task).await???;
        }
        Ok(())
    }
}

/// min / median / p95 / max of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Stats {
    min: f64,
    median: f64,
    p95: f64,
    max: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if ms.is_empty() {
                return f64::NAN;
            }
            let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
            ms[i.min(ms.len() - 1)]
        };
        Stats {
            min: at(0.0),
            median: at(0.5),
            p95: at(0.95),
            max: at(1.0),
        }
    }

    fn row(&self, what: &str) -> String {
        format!(
            "| {what} | {:.1} | {:.1} | {:.1} | {:.1} |",
            self.min, self.median, self.p95, self.max
        )
    }
}

struct Rescale {
    runtime: Stats,
    churn: Stats,
    churn_gap: Duration,
    reload: Stats,
    reloads_during_runtime: u64,
}

/// Rescale-to-routable: a service with no instance (503) gets one; the clock runs from the
/// registration until the first 200 through HAProxy. Baseline: the same change written into
/// the configuration by hand, checked with `haproxy -c` and applied with a confirmed reload.
async fn rescale(env: &Env, app: u16, args: &Args) -> Result<Rescale> {
    let gap = Duration::from_millis(args.gap_ms);
    let (runtime, reloads_during_runtime) =
        runtime_rescale(env, app, "rs", args.samples, gap).await?;
    let churn_gap = Duration::from_millis(args.churn_gap_ms);
    let (churn, churn_reloads) = runtime_rescale(env, app, "rsc", args.samples, churn_gap).await?;

    // Baseline: the parked first slot of rs-be filled in the file, validated and reloaded.
    tokio::time::sleep(gap).await;
    // A reload-based controller keeps no server state: without this line the state saved by
    // flow-proxy's own last reload (the slot parked) would beat the edited file.
    let parked = tokio::fs::read_to_string(env.config_path())
        .await?
        .replace("    load-server-state-from-file global\n", "");
    let filled = fill_first_slot(&parked, "rs-be", app)?;
    let mut reload = Vec::new();
    for _ in 0..args.samples {
        let started = Instant::now();
        install_validated(env, &filled).await?;
        env.raw_reload().await?;
        wait_for("the reloaded instance serves", || async {
            env.get("/rs").await.0 == 200
        })
        .await?;
        reload.push(started.elapsed());
        install_validated(env, &parked).await?;
        env.raw_reload().await?;
        wait_for("/rs is empty again", || async {
            env.get("/rs").await.0 == 503
        })
        .await?;
    }
    Ok(Rescale {
        runtime: Stats::of(&runtime),
        churn: Stats::of(&churn),
        churn_gap,
        reload: Stats::of(&reload),
        reloads_during_runtime: reloads_during_runtime + churn_reloads,
    })
}

/// `samples` times: register one instance of `service` (routed, otherwise empty), time until
/// it serves, deregister it and wait for the 503. Returns the times and the reloads counted.
async fn runtime_rescale(
    env: &Env,
    app: u16,
    service: &str,
    samples: usize,
    gap: Duration,
) -> Result<(Vec<Duration>, u64)> {
    let path = format!("/{service}");
    env.api_ok(&format!(
        "/v1/docker-flow-proxy/reconfigure?serviceName={service}&servicePath={path}"
    ))
    .await?;
    wait_for("the path answers 503", || async {
        env.get(&path).await.0 == 503
    })
    .await?;
    let reloads_before = env.reloads().await?;
    let mut times = Vec::new();
    for i in 0..samples {
        tokio::time::sleep(gap).await;
        let id = format!("{service}-{i}");
        let started = Instant::now();
        env.register(service, &id, app).await?;
        wait_for("the new instance serves", || async {
            env.get(&path).await.0 == 200
        })
        .await?;
        times.push(started.elapsed());
        env.client.agent_deregister(&id).await?;
        wait_for("the path is empty again", || async {
            env.get(&path).await.0 == 503
        })
        .await?;
    }
    Ok((times, env.reloads().await? - reloads_before))
}

/// `text` with the first slot of `backend` pointing at the local backend and enabled.
fn fill_first_slot(text: &str, backend: &str, port: u16) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut in_backend = false;
    let mut done = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with("backend ") {
            in_backend = line.trim_end() == format!("backend {backend}");
        }
        let body = line.trim_start();
        if in_backend && !done && body.starts_with("server ") {
            let name = body.split(' ').nth(1).unwrap_or("s1");
            out.push_str(&format!("    server {name} 127.0.0.1:{port} weight 1\n"));
            done = true;
        } else {
            out.push_str(line);
        }
    }
    if !done {
        bail!("no server slot in backend {backend}");
    }
    Ok(out)
}

/// What a reload-based controller does for each change: check the file, then install it.
async fn install_validated(env: &Env, text: &str) -> Result<()> {
    let candidate = env.data_dir.path().join("bench-candidate.cfg");
    tokio::fs::write(&candidate, text).await?;
    let check = tokio::process::Command::new("haproxy")
        .arg("-c")
        .arg("-q")
        .arg("-f")
        .arg(&candidate)
        .output()
        .await?;
    if !check.status.success() {
        bail!(
            "haproxy -c refused the baseline configuration: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    tokio::fs::rename(&candidate, env.config_path()).await?;
    Ok(())
}

struct Reconfigure {
    api: Stats,
    raw: Stats,
    /// `haproxy -c` of the same configuration: what a check before the reload would add.
    check: Stats,
}

/// Reconfigure-to-routable: from the API call for a new service until the first 200 on its
/// path. Baseline: a raw master-CLI reload of the resulting configuration, confirmed through
/// `show proc`, until the first 200 on the same path.
async fn reconfigure(env: &Env, app: u16, args: &Args) -> Result<Reconfigure> {
    let gap = Duration::from_millis(300);
    let mut api = Vec::new();
    let mut raw = Vec::new();
    let mut checks = Vec::new();
    for i in 0..args.samples {
        let service = format!("rc{i}");
        env.register(&service, &format!("{service}-1"), app).await?;
        tokio::time::sleep(gap).await;
        let path = format!("/{service}");
        let started = Instant::now();
        env.api_ok(&format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName={service}&servicePath={path}"
        ))
        .await?;
        wait_for("the new path answers 200", || async {
            env.get(&path).await.0 == 200
        })
        .await?;
        api.push(started.elapsed());
        tokio::time::sleep(gap).await;
        let started = Instant::now();
        env.raw_reload().await?;
        wait_for("the path answers 200 after the raw reload", || async {
            env.get(&path).await.0 == 200
        })
        .await?;
        raw.push(started.elapsed());
        let started = Instant::now();
        let check = tokio::process::Command::new("haproxy")
            .arg("-c")
            .arg("-q")
            .arg("-f")
            .arg(env.config_path())
            .output()
            .await?;
        if !check.status.success() {
            bail!(
                "haproxy -c refused the live configuration: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
        checks.push(started.elapsed());
    }
    Ok(Reconfigure {
        api: Stats::of(&api),
        raw: Stats::of(&raw),
        check: Stats::of(&checks),
    })
}

struct Scale {
    services: usize,
    setup: Duration,
    first_live: Duration,
    reconfigure: Duration,
    rescale: Stats,
    reloads_during_rescale: u64,
    config_lines: usize,
    rss_kib: Option<u64>,
    idle_requests_per_s: f64,
    /// Fewest and most blocking queries open at once while idle.
    idle_blocking: (i64, i64),
    /// Most connections open to the registry at once while idle.
    idle_connections: i64,
}

/// `services` routed services of 10 instances each, their intents in KV and instances in the
/// registry before flow-proxy starts (health checks off: `skipCheck`). Measures the time to the
/// first live configuration, one more service's reconfigure-to-routable and a rescale.
async fn scale(services: usize, app: u16, args: &Args) -> Result<Scale> {
    use futures_util::StreamExt as _;
    let reg = Reg::start().await?;
    let setup_started = Instant::now();
    let store = IntentStore::new(reg.client.clone(), "docker-flow")?;
    let client = &reg.client;
    let store = &store;
    let mut jobs = futures_util::stream::iter(0..services)
        .map(|i| async move {
            let name = format!("sc{i}");
            let params: BTreeMap<String, String> = [
                ("serviceName", name.clone()),
                ("servicePath", format!("/{name}")),
                ("skipCheck", "true".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            store.put(&ServiceIntent::from_params(&params)?).await?;
            for j in 0..10 {
                client
                    .agent_register(&ServiceRegistration {
                        id: format!("{name}-{j}"),
                        name: name.clone(),
                        address: "127.0.0.1".into(),
                        port: app,
                        ..ServiceRegistration::default()
                    })
                    .await?;
            }
            anyhow::Ok(())
        })
        .buffer_unordered(8);
    while let Some(done) = jobs.next().await {
        done?;
    }
    drop(jobs);
    let setup = setup_started.elapsed();
    let relay = counting_proxy::CountingProxy::start(reg.addr).await?;
    let started = Instant::now();
    let env = Env::start_via(reg, relay.addr).await?;
    wait_for("the first service is routed", || async {
        env.get("/sc0").await.0 == 200
    })
    .await?;
    let first_live = started.elapsed();

    env.register("scx", "scx-1", app).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    env.api_ok("/v1/docker-flow-proxy/reconfigure?serviceName=scx&servicePath=/scx&skipCheck=true")
        .await?;
    wait_for("the new service answers 200", || async {
        env.get("/scx").await.0 == 200
    })
    .await?;
    let reconfigure = started.elapsed();

    // Rescale: an 11th instance with its own body, timed until it serves a request.
    let fresh = backend("fresh").await?;
    let reloads_before = env.reloads().await?;
    let mut times = Vec::new();
    let samples = args.samples.min(5);
    for i in 0..samples {
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
        let id = format!("sc0-new-{i}");
        let started = Instant::now();
        env.register("sc0", &id, fresh).await?;
        wait_for("the new instance serves", || async {
            env.get("/sc0").await.1 == "fresh\n"
        })
        .await?;
        times.push(started.elapsed());
        env.client.agent_deregister(&id).await?;
        let path = env.config_path();
        let gone = format!(":{fresh} ");
        wait_for("the new instance is gone", || async {
            tokio::fs::read_to_string(&path)
                .await
                .is_ok_and(|t| !t.contains(&gone))
        })
        .await?;
    }
    let reloads_during_rescale = env.reloads().await? - reloads_before;

    // Idle: nothing changes; count what flow-proxy asks of the registry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counters = &relay.counters;
    let requests_before = counters.requests.load(Ordering::Relaxed);
    let idle_started = Instant::now();
    let mut blocking = Vec::new();
    let mut connections = Vec::new();
    while idle_started.elapsed() < Duration::from_secs(args.idle_secs) {
        blocking.push(counters.blocking_open.load(Ordering::Relaxed));
        connections.push(counters.connections_open.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle_requests_per_s = (counters.requests.load(Ordering::Relaxed) - requests_before) as f64
        / idle_started.elapsed().as_secs_f64();
    let config_lines = tokio::fs::read_to_string(env.config_path())
        .await?
        .lines()
        .count();
    let rss_kib = rss_kib();
    env.stop().await?;
    Ok(Scale {
        services,
        setup,
        first_live,
        reconfigure,
        rescale: Stats::of(&times),
        reloads_during_rescale,
        config_lines,
        rss_kib,
        idle_requests_per_s,
        idle_blocking: (
            blocking.iter().copied().min().unwrap_or(0),
            blocking.iter().copied().max().unwrap_or(0),
        ),
        idle_connections: connections.iter().copied().max().unwrap_or(0),
    })
}

struct Report {
    scales: Vec<Scale>,
    /// Sizes whose run failed, with the error (reported, and the run exits with an error).
    failed_scales: Vec<(usize, String)>,
    samples: usize,
    rescale: Rescale,
    reconfigure: Reconfigure,
    churn: churn::Outcome,
    churn_secs: u64,
    old_workers: usize,
    rss_kib: Option<u64>,
}

impl Report {
    fn markdown(&self, machine: &str) -> String {
        let mut s = String::new();
        let r = &self.rescale;
        let c = &self.reconfigure;
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "Written by `make bench` from one run of the suite (`bench/main.rs`), {} samples per row. \
             Times in milliseconds. Every baseline was measured in the same run, against the same HAProxy.\n",
            self.samples
        );
        let _ = writeln!(s, "Machine: {machine}\n");
        let _ = writeln!(s, "| Scenario | min | median | p95 | max |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "{}",
            r.runtime
                .row("1. Rescale-to-routable, flow-proxy (registration → first 200)")
        );
        let _ = writeln!(
            s,
            "{}",
            r.churn.row(&format!(
                "1. same, one registration and one deregistration every {:.1} s",
                r.churn_gap.as_secs_f64()
            ))
        );
        let _ = writeln!(
            s,
            "{}",
            r.reload
                .row("1. baseline: same change as `haproxy -c` + confirmed reload")
        );
        let _ = writeln!(
            s,
            "{}",
            c.api
                .row("2. Reconfigure-to-routable, flow-proxy (API call → first 200)")
        );
        let _ = writeln!(
            s,
            "{}",
            c.raw.row("2. baseline: raw master-CLI reload → first 200")
        );
        let _ = writeln!(
            s,
            "{}",
            c.check
                .row("2. for reference: `haproxy -c` of the same file")
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "- Rescale: median {:.1}× faster than the reload baseline (p95 {:.1}×); \
             reloads during the flow-proxy rescale runs: **{}** (target 0); p95 {:.1} ms (target ≤ 50 ms: {}).",
            r.reload.median / r.runtime.median,
            r.reload.p95 / r.runtime.p95,
            r.reloads_during_runtime,
            r.runtime.p95,
            if r.runtime.p95 <= 50.0 {
                "met"
            } else {
                "not met"
            }
        );
        let reconfigure_met = c.api.median <= 1.5 * c.raw.median;
        let _ = writeln!(
            s,
            "- Reconfigure: median {:.2}× the raw reload (target ≤ 1.5×: {}). flow-proxy's path \
             takes {:.1} ms more than the raw reload at the median: the KV transaction, the read \
             of the new service, planning and rendering, saving the server state, the confirmation \
             through `show proc` and the runtime state of the new backend. A plain service holds \
             nothing HAProxy may refuse after flow-proxy's own validation, so its reload is the \
             check (a refusal would be rolled back) and `haproxy -c`, {:.1} ms alone, is not run; \
             a change with regular expressions, templates or certificates runs it first.",
            c.api.median / c.raw.median,
            if reconfigure_met { "met" } else { "not met" },
            c.api.median - c.raw.median,
            c.check.median,
        );
        let _ = writeln!(
            s,
            "- Old HAProxy workers left after the run: {}. Resident memory of the bench process \
             (flow-proxy, the embedded registry and the bench itself, in one process): {}.",
            self.old_workers,
            self.rss_kib.map_or("unknown".to_owned(), |k| format!(
                "{:.1} MiB",
                k as f64 / 1024.0
            ))
        );
        let _ = writeln!(
            s,
            "\n## How each figure is taken\n\n\
             - **1. Rescale-to-routable**: a routed service with no instance answers 503; the clock \
             starts before the registration call to the embedded registry and stops at the first \
             200 through HAProxy (polled every millisecond with new connections). The instance is \
             then deregistered and the 503 awaited before the next sample. Reloads are read from \
             `/metrics` before and after. **Baseline**: the same change made the way a \
             reload-based controller (DFP, consul-template) makes it, timed from the moment the \
             change is known: the parked slot filled in the file, `haproxy -c`, a master-CLI \
             reload confirmed through `show proc`, then the first 200. It leaves out the \
             baseline's own change detection, which flow-proxy's figure includes.\n\
             - The row with a registration and a deregistration every 0.5 s shows the catalog \
             watcher's sweep limiter (after a burst of two, one sweep per 500 ms to 2 s, \
             growing with the number of instances the node reads list): silent registrations \
             closer together than that wait for the next sweep.\n\
             - **2. Reconfigure-to-routable**: from the `reconfigure` call for a new service (its \
             instance already registered) to the first 200 on its path; flow-proxy persists the \
             intent in KV, reads the service, renders, reloads (the master's parse is the check \
             for such a service) and confirms. **Baseline**: a raw master-CLI reload of the resulting file, confirmed \
             through `show proc`, to the first 200 on the same path.\n\
             - **3. Errors under churn**: `wrk` on a routed path served by two stable instances \
             while reconfigures (each a new service, so each a reload) and instance registrations \
             and deregistrations (instances of the routed service, on live backends) are spread \
             evenly over the run, its last second left quiet. Socket errors and non-2xx answers \
             are `wrk`'s own counts; the old workers and their resident memory are read from \
             `show proc` and `/proc` right after `wrk` ends.\n\
             - **Scale, idle**: flow-proxy talks to the registry through a counting TCP relay in \
             the bench; requests are HTTP request lines, blocking queries those with `index=` \
             still waiting for their answer, sampled every 100 ms over the idle window."
        );
        let ch = &self.churn;
        let met = |ok: bool| if ok { "met" } else { "not met" };
        let _ = writeln!(
            s,
            "\n## 3. Errors under churn\n\n\
             `{}` for {} s while {} reconfigures ({} answered 200, {} not) and {} instance \
             registrations and deregistrations happened.\n\n\
             | figure | value | target |\n|---|---|---|\n\
             | requests served | {} | |\n\
             | socket errors (connect / read / write / timeout) | {} ({} / {} / {} / {}) | 0: {} |\n\
             | non-2xx answers | {} | 0: {} |\n\
             | reloads during the run | {} | the reconfigures and any slot growth |\n\
             | runtime updates during the run | {} | |\n\
             | old workers right after the run | {} | |\n\
             | their resident memory | {:.1} MiB | |",
            ch.wrk_args,
            self.churn_secs,
            ch.reconfigures_ok + ch.reconfigures_failed,
            ch.reconfigures_ok,
            ch.reconfigures_failed,
            ch.events_done,
            ch.requests,
            ch.socket_errors.total(),
            ch.socket_errors.connect,
            ch.socket_errors.read,
            ch.socket_errors.write,
            ch.socket_errors.timeout,
            met(ch.socket_errors.total() == 0),
            ch.non_2xx,
            met(ch.non_2xx == 0),
            ch.reloads,
            ch.runtime_updates,
            ch.old_workers,
            ch.old_workers_rss_kib as f64 / 1024.0,
        );
        if !self.scales.is_empty() || !self.failed_scales.is_empty() {
            let _ = writeln!(
                s,
                "\n## Scale\n\nServices of 10 instances each (health checks off), intents in KV and \
                 instances registered before start. Rescale: an 11th instance of one service \
                 until it serves (min/median/p95/max over {} samples).\n",
                self.samples.min(5)
            );
            let _ = writeln!(
                s,
                "| services | servers | config lines | setup (registry) s | start → first live config ms | reconfigure one more → 200 ms | rescale ms | reloads during rescale | RSS of bench process | registry requests/s while idle | blocking queries open while idle (min–max) | connections to the registry while idle (max) |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
            for c in &self.scales {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.1} / {:.1} / {:.1} / {:.1} | {} | {} | {:.2} | {}–{} | {} |",
                    c.services,
                    c.services * 10,
                    c.config_lines,
                    c.setup.as_secs_f64(),
                    c.first_live.as_secs_f64() * 1e3,
                    c.reconfigure.as_secs_f64() * 1e3,
                    c.rescale.min,
                    c.rescale.median,
                    c.rescale.p95,
                    c.rescale.max,
                    c.reloads_during_rescale,
                    c.rss_kib.map_or("unknown".to_owned(), |k| format!(
                        "{:.1} MiB",
                        k as f64 / 1024.0
                    )),
                    c.idle_requests_per_s,
                    c.idle_blocking.0,
                    c.idle_blocking.1,
                    c.idle_connections,
                );
            }
            for (n, e) in &self.failed_scales {
                let _ = writeln!(
                    s,
                    "| {n} | {} | failed: {} |||||||||",
                    n * 10,
                    e.replace('|', "/")
                );
            }
            // flow-proxy keeps three catalog feeds, the watch of its intents and the watch of
            // uploaded certificates, whatever the number of services; a watch between two of
            // its requests shows as one less.
            let constant = self.scales.iter().all(|c| c.idle_blocking.1 <= 5);
            let _ = writeln!(
                s,
                "\n- Blocking queries open on the registry while idle: {} at the sizes measured (target: constant; flow-proxy holds at most five: three catalog \
                 feeds, the watch of its intents and that of uploaded certificates, fewer while one is between two requests): {}.",
                self.scales
                    .iter()
                    .map(|c| format!("{}–{}", c.idle_blocking.0, c.idle_blocking.1))
                    .collect::<Vec<_>>()
                    .join(", "),
                if constant { "met" } else { "not met" }
            );
            let _ = writeln!(
                s,
                "- Instance churn reloads at no size (reloads during rescale above), and only \
                 the service that moved is re-read. Not yet proportional to the change (target \
                 not met): every apply plans and renders the whole configuration and compares \
                 whole texts, a structural change reloads the whole file (HAProxy parses all of \
                 it), and a registration without checks costs one sweep that reads every node's \
                 instance list (`/v1/catalog/node/<node>`; here one node listing every instance) \
                 to find the service that moved: that is why the rescale time still grows with \
                 the number of instances."
            );
        }
        s
    }
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" / "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

async fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let haproxy = tokio::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .await
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    format!(
        "{cpus} CPUs, Linux {}, {}; everything on 127.0.0.1 in one process except HAProxy.",
        kernel.trim(),
        haproxy.trim()
    )
}

/// Polls `cond` every millisecond until it holds, for at most [`SAMPLE_DEADLINE`].
async fn wait_for<F, Fut>(what: &str, mut cond: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + SAMPLE_DEADLINE;
    while !cond().await {
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// One raw HTTP/1.1 GET; (status, body). Status 0 when the connection failed or no answer
/// came within 10 s.
async fn http(port: u16, host: &str, path: &str) -> (u16, String) {
    http_within(port, host, path, Duration::from_secs(10)).await
}

/// [`http`] with its own deadline.
async fn http_within(port: u16, host: &str, path: &str, deadline: Duration) -> (u16, String) {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    };
    match tokio::time::timeout(deadline, attempt).await {
        Ok(Some(r)) => r,
        _ => (0, String::new()),
    }
}

/// A tiny HTTP backend answering every request with `body`.
async fn backend(body: &str) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let body = format!("{body}\n");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(port)
}
