# The two commands of the README's Quick start are `make run` and `make test`.
.PHONY: run test test-deps lint unit build

DATA_DIR ?= $(CURDIR)/.data
export FLOW_PROXY_PYTHON ?= $(CURDIR)/target/py-venv/bin/python

HTTP_PORT ?= 8081
API_ADDRESS ?= 127.0.0.1:8080

# Runs flow-proxy and HAProxy on the embedded registry, unprivileged, with their state inside
# the checkout: HAProxy on 127.0.0.1:$(HTTP_PORT), the API on $(API_ADDRESS).
run:
	DATA_DIR=$(DATA_DIR) HTTP_PORT=$(HTTP_PORT) API_ADDRESS=$(API_ADDRESS) BIND_ADDRESS=127.0.0.1 \
		STOP_HAPROXY_ON_EXIT=true \
		cargo run --release -- server

build:
	cargo build --all-targets

test-deps:
	./scripts/install-test-deps.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

unit:
	cargo nextest run --profile ci

# The whole test suite: installs what it needs, enforces formatting and lints, runs every test.
test: test-deps lint unit
