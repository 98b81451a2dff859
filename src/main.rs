//! The `flow-proxy` binary: parses settings, sets up logging and signals, and hands over to
//! the library. Holds no logic of its own.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use flow_proxy::client;
use flow_proxy::settings::{Cli, Command, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    flow_proxy::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        match cli.command {
            Command::Server(args) => flow_proxy::server::run_server(*args, shutdown).await?,
            Command::Registry(args) => flow_proxy::server::run_registry(args, shutdown).await?,
            Command::Reconfigure(args) => {
                let query = client::reconfigure_query(&args);
                return Ok(report(
                    client::call(&args.target, "reconfigure", &query).await,
                ));
            }
            Command::Remove(args) => {
                let query = client::remove_query(&args);
                return Ok(report(client::call(&args.target, "remove", &query).await));
            }
            Command::Ping(args) => {
                return Ok(report(client::call(&args.target, "ping", &[]).await));
            }
            Command::DemoBackend(args) => flow_proxy::demo_backend::run(args, shutdown).await?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Prints a client call's answer on stdout (the reason of a failure on stderr) and turns it
/// into the exit status: success only for a 2xx answer.
fn report(result: Result<client::Answer, client::ClientError>) -> ExitCode {
    match result {
        Ok(answer) => {
            if !answer.body.is_empty() {
                println!("{}", answer.body.trim_end());
            }
            if answer.is_success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("flow-proxy: {} answered HTTP {}", answer.url, answer.status);
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("flow-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    // warp reports every client that hangs up on a long-poll as a server error; that is
    // normal for blocking queries, so it is silenced unless RUST_LOG asks for it.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,warp::server=off"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM (what containers and systemd send).
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops flow-proxy");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
    shutdown.cancel();
}
