//! A tiny HTTP service in the manner of Docker Flow: Proxy's go-demo, for `make demo` and for
//! trying flow-proxy without Docker: `GET /demo/hello` answers `hello, world!` with an
//! `X-Demo-Instance` header naming the instance, so a demo can show which one served.
//!
//! Owns: that one service. Must not: know about flow-proxy's configuration, Consul or HAProxy
//! (the demo registers it in the registry itself).

use std::net::{IpAddr, SocketAddr};

use clap::Args;
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::reply::Reply;

/// The header naming the instance that answered.
pub const INSTANCE_HEADER: &str = "X-Demo-Instance";

/// Settings of the hidden `flow-proxy demo-backend` subcommand.
#[derive(Debug, Clone, Args)]
pub struct DemoBackendArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,

    /// Port to listen on.
    #[arg(long)]
    pub port: u16,

    /// The instance's name, sent in `X-Demo-Instance` (defaults to `demo-<port>`).
    #[arg(long)]
    pub instance: Option<String>,
}

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoBackendError {
    /// The port could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The routes: `/demo/hello` (any method) and 404 with an empty body elsewhere.
pub fn routes(
    instance: String,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    warp::path!("demo" / "hello").map(move || {
        let reply = warp::reply::with_header(
            "hello, world!\n",
            "content-type",
            "text/plain; charset=utf-8",
        );
        warp::reply::with_header(reply, INSTANCE_HEADER, instance.as_str()).into_response()
    })
}

/// Serves until `shutdown` is cancelled.
pub async fn run(
    args: DemoBackendArgs,
    shutdown: CancellationToken,
) -> Result<(), DemoBackendError> {
    let address = SocketAddr::new(args.address, args.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| DemoBackendError::Bind { address, source })?;
    let instance = args
        .instance
        .unwrap_or_else(|| format!("demo-{}", args.port));
    tracing::info!(%address, %instance, "demo backend listening");
    warp::serve(routes(instance))
        .incoming(listener)
        .graceful(shutdown.cancelled_owned())
        .run()
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hello_names_its_instance_and_other_paths_are_404() {
        let reply = warp::test::request()
            .path("/demo/hello")
            .reply(&routes("one".into()))
            .await;
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.body().as_ref(), b"hello, world!\n");
        assert_eq!(reply.headers()[INSTANCE_HEADER], "one");
        let reply = warp::test::request()
            .path("/other")
            .reply(&routes("one".into()))
            .await;
        assert_eq!(reply.status(), 404);
    }
}
