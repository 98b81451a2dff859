# syntax=docker/dockerfile:1
# Build stage: compiles the release binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock askama.toml* ./
COPY src ./src
COPY templates ./templates
RUN cargo build --release --locked

# Runtime stage: Debian's HAProxy 2.6 plus the flow-proxy binary.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy=2.6.* ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/flow-proxy /usr/local/bin/flow-proxy
ENV DATA_DIR=/var/lib/flow-proxy
# The container ends with its main process: stop HAProxy gracefully with it.
ENV STOP_HAPROXY_ON_EXIT=true
VOLUME ["/var/lib/flow-proxy"]
EXPOSE 80 443 8080
ENTRYPOINT ["/usr/local/bin/flow-proxy"]
CMD ["server"]
