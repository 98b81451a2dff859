# The two commands of the README's Quick start are `make run` and `make test`.
.PHONY: run test test-deps lint unit build bench bench-smoke demo fuzz

DATA_DIR ?= $(CURDIR)/.data
export FLOW_PROXY_PYTHON ?= $(CURDIR)/target/py-venv/bin/python

HTTP_PORT ?= 8081
HTTPS_PORT ?= 8443
API_ADDRESS ?= 127.0.0.1:8080

# Runs flow-proxy and HAProxy on the embedded registry, unprivileged, with their state inside
# the checkout: HAProxy on 127.0.0.1:$(HTTP_PORT) (HTTPS on $(HTTPS_PORT)), the API on $(API_ADDRESS).
run:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { \
		echo "installing HAProxy (apt-get$$([ "$$(id -u)" -eq 0 ] || echo ', through sudo'))"; \
		if [ "$$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq haproxy; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq haproxy; fi; }
	DATA_DIR=$(DATA_DIR) HTTP_PORT=$(HTTP_PORT) HTTPS_PORT=$(HTTPS_PORT) API_ADDRESS=$(API_ADDRESS) \
		BIND_ADDRESS=127.0.0.1 \
		STOP_HAPROXY_ON_EXIT=true \
		cargo run --release -- server

build:
	cargo build --all-targets

# Docker Flow: Proxy's README story without Docker (scripts/demo.sh): flow-proxy on its
# embedded registry and three demo instances; reconfigure, use, scale, failover, remove.
demo:
	cargo build --bin flow-proxy
	FLOW_PROXY_BIN=$(CURDIR)/target/debug/flow-proxy ./scripts/demo.sh

test-deps:
	./scripts/install-test-deps.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(dir $(FLOW_PROXY_PYTHON))hadolint Dockerfile
	docker-compose -f deploy/compose.yaml config -q
	bash -n scripts/demo.sh

unit:
	cargo nextest run --profile ci

# The whole test suite: installs what it needs, enforces formatting and lints, runs every test,
# then a short run of the benchmark suite that fails only if the suite itself fails.
test: test-deps lint unit bench-smoke

# The benchmark suite against a real HAProxy on 127.0.0.1; rewrites BENCHMARKS.md from the run.
# SAMPLES (default 20) is the number of samples per row; SCALE lists the sizes of the scale
# scenario in services of 10 instances (default 10; the full suite: SCALE="10 1000 2000").
SAMPLES ?= 20
SCALE ?= 10
bench:
	command -v haproxy >/dev/null || (apt-get update && apt-get install -y haproxy)
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	cargo run --release --bin flow-proxy-bench -- --samples $(SAMPLES) \
		$(foreach n,$(SCALE),--scale $(n)) --out BENCHMARKS.md

# Fuzzes the API query parser and the template language (fuzz/, cargo-fuzz on the stable
# toolchain without sanitizers) for FUZZ_SECONDS each; a crash fails the run.
FUZZ_SECONDS ?= 30
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	cd fuzz && for target in api_query ctmpl; do \
		RUSTC_BOOTSTRAP=1 cargo fuzz run $$target --sanitizer none -- \
			-max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

# A short run of the benchmark suite (a debug build, few samples, small scale, well under a
# minute): prints its figures, asserts nothing about them, fails if a scenario cannot run.
bench-smoke:
	cargo run --bin flow-proxy-bench -- --samples 2 --gap-ms 500 --scale 10 \
		--churn-secs 4 --churn-reconfigures 10 --churn-events 50 --idle-secs 3
