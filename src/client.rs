//! The command-line client: `flow-proxy reconfigure`, `flow-proxy remove` and `flow-proxy ping`
//! call the control API of a running flow-proxy (or of a Docker Flow: Proxy) and print its JSON
//! answer; `ping` is the container image's health check.
//!
//! Owns: the client's flags, how they map to DFP's query parameters, the request (with
//! `API_TOKEN` sent as a bearer token) and how the answer becomes an exit status.
//!
//! Must not: validate parameter values itself (the server does and answers 400 with its
//! reason, so the client never disagrees with it) or talk to Consul or HAProxy.

use std::time::Duration;

use clap::Args;
use reqwest::Url;

/// Where the control API is and how to reach it.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The flow-proxy to talk to: `host:port` or `http(s)://host:port` of its control API.
    /// A listen address such as `0.0.0.0:8080` reaches the local instance.
    #[arg(long, env = "API_ADDRESS", default_value = "127.0.0.1:8080")]
    pub api_address: String,

    /// Token sent as `Authorization: Bearer <token>` when set.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// How long to wait for the answer, in seconds (a reconfigure answers once it is live).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// `flow-proxy reconfigure`: the named flags are DFP's common parameters; `--param` passes
/// any other one (`--param httpsOnly=true`).
#[derive(Debug, Clone, Args)]
pub struct ReconfigureArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// `serviceName`: the Consul service to route.
    #[arg(long)]
    pub service_name: String,

    /// `servicePath`: a path (repeat the flag or give a comma list for several).
    #[arg(long)]
    pub service_path: Vec<String>,

    /// `serviceDomain`: a domain (repeat the flag or give a comma list for several).
    #[arg(long)]
    pub service_domain: Vec<String>,

    /// `serviceColor`: routes to the Consul service `<name>-<color>`.
    #[arg(long)]
    pub service_color: Option<String>,

    /// `pathType`: `path_beg` (the server's default), `path`, `path_end`, `path_dir`, ...
    #[arg(long)]
    pub path_type: Option<String>,

    /// `skipCheck=true`.
    #[arg(long)]
    pub skip_check: bool,

    /// `consulTemplatePath`: one custom template holding a frontend and a backend.
    #[arg(long)]
    pub consul_template_path: Option<String>,

    /// `consulTemplateFePath`: the frontend part of a custom template.
    #[arg(long)]
    pub consul_template_fe_path: Option<String>,

    /// `consulTemplateBePath`: the backend part of a custom template.
    #[arg(long)]
    pub consul_template_be_path: Option<String>,

    /// Any other query parameter, as `name=value`; repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
}

/// `flow-proxy remove`.
#[derive(Debug, Clone, Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// `serviceName`: the service to stop routing.
    #[arg(long)]
    pub service_name: String,

    /// Any other query parameter, as `name=value`; repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
}

/// `flow-proxy ping`: succeeds once the instance serves its recovered configuration.
#[derive(Debug, Clone, Args)]
pub struct PingArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

fn parse_param(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{raw:?} is not NAME=VALUE")),
    }
}

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--api-address` is not an address.
    #[error("--api-address {address:?} is not host:port or an http(s) URL")]
    Address {
        /// What was given.
        address: String,
    },
    /// The token cannot be sent in a header.
    #[error("API_TOKEN holds characters that cannot be sent in an HTTP header")]
    Token,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// No answer: connection refused, timeout, broken connection.
    #[error("cannot reach flow-proxy at {url}: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The cause, with its sources.
        reason: String,
    },
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body (DFP's JSON).
    pub body: String,
    /// The URL called, without the query's secrets (there are none: the token is a header).
    pub url: String,
}

impl Answer {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The query of a `reconfigure`: named flags first, in DFP's order, then `--param`s.
pub fn reconfigure_query(args: &ReconfigureArgs) -> Vec<(String, String)> {
    let mut query = vec![("serviceName".to_owned(), args.service_name.clone())];
    let mut push = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            query.push((name.to_owned(), value));
        }
    };
    push("serviceColor", args.service_color.clone());
    push("servicePath", joined(&args.service_path));
    push("serviceDomain", joined(&args.service_domain));
    push("pathType", args.path_type.clone());
    push("skipCheck", args.skip_check.then(|| "true".to_owned()));
    push("consulTemplatePath", args.consul_template_path.clone());
    push("consulTemplateFePath", args.consul_template_fe_path.clone());
    push("consulTemplateBePath", args.consul_template_be_path.clone());
    query.extend(args.params.iter().cloned());
    query
}

/// The query of a `remove`.
pub fn remove_query(args: &RemoveArgs) -> Vec<(String, String)> {
    let mut query = vec![("serviceName".to_owned(), args.service_name.clone())];
    query.extend(args.params.iter().cloned());
    query
}

fn joined(values: &[String]) -> Option<String> {
    (!values.is_empty()).then(|| values.join(","))
}

/// The URL of `endpoint` (e.g. `reconfigure`) on the API at `address`, with `query`.
pub fn endpoint_url(
    address: &str,
    endpoint: &str,
    query: &[(String, String)],
) -> Result<Url, ClientError> {
    let address = address.trim();
    let bad = || ClientError::Address {
        address: address.to_owned(),
    };
    let base = if address.starts_with("http://") || address.starts_with("https://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let mut url = Url::parse(&base).map_err(|_| bad())?;
    if url.host_str().is_none_or(str::is_empty) || url.cannot_be_a_base() {
        return Err(bad());
    }
    url.set_path(&format!("/v1/docker-flow-proxy/{endpoint}"));
    url.set_query(None);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// Calls `endpoint` on the API `target` names and returns the answer, whatever its status.
/// Changes are sent with PUT, `ping` with GET (DFP accepts any method).
pub async fn call(
    target: &TargetArgs,
    endpoint: &str,
    query: &[(String, String)],
) -> Result<Answer, ClientError> {
    crate::tls::install_crypto_provider();
    let url = endpoint_url(&target.api_address, endpoint, query)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(target.timeout.max(1)))
        .build()
        .map_err(ClientError::Build)?;
    let mut request = if endpoint == "ping" {
        client.get(url.clone())
    } else {
        client.put(url.clone())
    };
    if let Some(token) = target.api_token.as_deref().filter(|t| !t.is_empty()) {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::Token)?;
        value.set_sensitive(true);
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    let shown = url.to_string();
    let unreachable = |e: reqwest::Error| ClientError::Unreachable {
        url: shown.clone(),
        reason: crate::reconcile::chain(&e),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(unreachable)?;
    Ok(Answer {
        status,
        body,
        url: shown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Reconfigure {
        #[command(flatten)]
        args: ReconfigureArgs,
    }

    fn parse(argv: &[&str]) -> ReconfigureArgs {
        let mut full = vec!["reconfigure"];
        full.extend(argv);
        Reconfigure::try_parse_from(full).unwrap().args
    }

    #[test]
    fn named_flags_become_dfp_parameters_in_order() {
        let args = parse(&[
            "--service-name",
            "go-demo",
            "--service-path",
            "/demo",
            "--service-path",
            "/other",
            "--service-domain",
            "a.example.com,b.example.com",
            "--skip-check",
            "--param",
            "httpsOnly=true",
            "--param",
            "x=a=b",
        ]);
        let query = reconfigure_query(&args);
        let pairs: Vec<(&str, &str)> = query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("serviceName", "go-demo"),
                ("servicePath", "/demo,/other"),
                ("serviceDomain", "a.example.com,b.example.com"),
                ("skipCheck", "true"),
                ("httpsOnly", "true"),
                ("x", "a=b"),
            ]
        );
    }

    #[test]
    fn a_param_without_a_name_is_refused() {
        let mut argv = vec!["reconfigure", "--service-name", "a", "--param"];
        for bad in ["novalue", "=x"] {
            argv.push(bad);
            assert!(Reconfigure::try_parse_from(&argv).is_err(), "{bad}");
            argv.pop();
        }
    }

    #[test]
    fn urls_accept_host_port_and_http_urls_and_encode_the_query() {
        let q = vec![("servicePath".to_owned(), "/a b&c".to_owned())];
        assert_eq!(
            endpoint_url("127.0.0.1:8080", "reconfigure", &q)
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/v1/docker-flow-proxy/reconfigure?servicePath=%2Fa+b%26c"
        );
        assert_eq!(
            endpoint_url("https://proxy.example.com:8443/", "remove", &[])
                .unwrap()
                .as_str(),
            "https://proxy.example.com:8443/v1/docker-flow-proxy/remove"
        );
        for bad in ["", "http://", "exa mple:80"] {
            assert!(
                matches!(
                    endpoint_url(bad, "remove", &[]),
                    Err(ClientError::Address { .. })
                ),
                "{bad}"
            );
        }
    }
}
