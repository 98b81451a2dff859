# syntax=docker/dockerfile:1
# flow-proxy's container image: `docker build -t flow-proxy .` from the repository root.
# Linted by `make lint` (hadolint).

# Build stage: compiles the release binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock askama.toml ./
COPY src ./src
COPY templates ./templates
# Cargo.toml names the benchmark binary; its source must be present for the manifest to load.
COPY bench ./bench
RUN cargo build --release --locked --bin flow-proxy

# Runtime stage: Debian's HAProxy 2.6 (built with its Prometheus exporter), tini as PID 1
# so that every exited process is reaped, and the flow-proxy binary.
FROM debian:bookworm-slim
# Versions follow the bookworm archive (security updates included); HAProxy stays on 2.6.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy=2.6.* tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/flow-proxy /consul_templates /certs
COPY --from=build /src/target/release/flow-proxy /usr/local/bin/flow-proxy
# DFP's locations: custom templates in /consul_templates, certificates in /certs. The
# container's HAProxy goes with it: it is stopped when flow-proxy exits.
ENV DATA_DIR=/var/lib/flow-proxy \
    TEMPLATES_ROOT=/consul_templates \
    CERTS_DIR=/certs \
    STOP_HAPROXY_ON_EXIT=true
VOLUME ["/var/lib/flow-proxy", "/consul_templates", "/certs"]
# HAProxy's HTTP and HTTPS ports, and the control API. Root binds 80 and 443, as DFP did.
EXPOSE 80 443 8080
# Healthy once the recovered configuration is live (DFP's ping); the client reads
# API_ADDRESS like the server, and a listen address such as 0.0.0.0:8080 reaches it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/flow-proxy", "ping"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/flow-proxy"]
CMD ["server"]
