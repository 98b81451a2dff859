# The two commands of the README's Quick start are `make run` and `make test`.
.PHONY: run test test-deps lint unit build

DATA_DIR ?= $(CURDIR)/.data
export FLOW_PROXY_PYTHON ?= $(CURDIR)/target/py-venv/bin/python

# Runs flow-proxy on its embedded registry, unprivileged, with its state inside the checkout.
run:
	DATA_DIR=$(DATA_DIR) cargo run --release -- server

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
