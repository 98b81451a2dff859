#!/usr/bin/env bash
# The story of Docker Flow: Proxy's README, without Docker: flow-proxy on its embedded
# registry, three instances of a go-demo-like service, and reconfigure, use, scale, an instance
# failing, the proxy failing over, remove. Each command is printed with its result; every
# result is checked, and the script stops with an error at the first one that is wrong.
# Everything it starts is stopped at exit, and its state lives in a temporary directory.
#
#   make demo            # builds flow-proxy, then runs this script
#
# Settings (environment): FLOW_PROXY_BIN (default target/debug/flow-proxy), DEMO_REGISTRY_PORT
# (18500), DEMO_API_PORT (18080), DEMO_HTTP_PORT (18081), DEMO_HTTPS_PORT (18443), DEMO_BACKEND_PORTS ("19001 19002
# 19003"). Needs HAProxy and curl.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN="${FLOW_PROXY_BIN:-target/debug/flow-proxy}"
REGISTRY="127.0.0.1:${DEMO_REGISTRY_PORT:-18500}"
API="127.0.0.1:${DEMO_API_PORT:-18080}"
HTTP_PORT="${DEMO_HTTP_PORT:-18081}"
HTTPS_PORT="${DEMO_HTTPS_PORT:-18443}"
PROXY="127.0.0.1:$HTTP_PORT"
read -r -a BACKEND_PORTS <<<"${DEMO_BACKEND_PORTS:-19001 19002 19003}"
DEADLINE_SECONDS=60

WORK="$(mktemp -d)"
PROXY_PID=""
BACKEND_PIDS=()

cleanup() {
    local pid
    for pid in "${BACKEND_PIDS[@]}" $PROXY_PID; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "demo failed: $*" >&2
    if [ -f "$WORK/flow-proxy.log" ]; then
        echo "--- flow-proxy's log (last lines)" >&2
        tail -n 30 "$WORK/flow-proxy.log" >&2
    fi
    exit 1
}

step() { printf '\n=== %s\n' "$*"; }

# Prints a command, runs it, prints its output and keeps it in $OUT.
run() {
    printf '$ %s\n' "$*"
    OUT="$("$@" 2>&1)" || fail "'$*' failed: $OUT"
    printf '%s\n' "$OUT"
}

expect() {
    case "$OUT" in
    *"$1"*) ;;
    *) fail "expected '$1' in: $OUT" ;;
    esac
}

# Retries a command until it succeeds, for at most DEADLINE_SECONDS.
wait_for() {
    local what="$1"
    shift
    local end=$((SECONDS + DEADLINE_SECONDS))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || fail "timed out waiting until $what"
        sleep 0.2
    done
}

start_proxy() {
    DATA_DIR="$WORK/data" EMBEDDED_REGISTRY_ADDRESS="$REGISTRY" API_ADDRESS="$API" \
        BIND_ADDRESS=127.0.0.1 HTTP_PORT="$HTTP_PORT" HTTPS_PORT="$HTTPS_PORT" \
        STOP_HAPROXY_ON_EXIT=true "$BIN" server >>"$WORK/flow-proxy.log" 2>&1 &
    PROXY_PID=$!
    wait_for "flow-proxy is ready" curl -sf "$API/v1/docker-flow-proxy/ping"
}

# Starts instance $1 of go-demo and registers it as Registrator would.
start_instance() {
    local n="$1" port="${BACKEND_PORTS[$(($1 - 1))]}"
    "$BIN" demo-backend --port "$port" --instance "go-demo-$n" >>"$WORK/backends.log" 2>&1 &
    BACKEND_PIDS[n - 1]=$!
    wait_for "instance $n listens" curl -sf "127.0.0.1:$port/demo/hello"
    run curl -sS -X PUT "$REGISTRY/v1/agent/service/register" \
        -d "{\"ID\":\"demo:go-demo_app_$n:8080\",\"Name\":\"go-demo\",\"Address\":\"127.0.0.1\",\"Port\":$port}"
}

# The instance that answers /demo/hello, or nothing.
instance_of_a_request() {
    curl -s -D - -o /dev/null "$PROXY/demo/hello" | tr -d '\r' |
        sed -n 's/^[Xx]-[Dd]emo-[Ii]nstance: //p'
}

# Sends requests until each of the instances $@ has answered one.
until_all_answer() {
    local seen=" " end=$((SECONDS + DEADLINE_SECONDS)) who
    while :; do
        who="$(instance_of_a_request)"
        if [ -n "$who" ] && [[ "$seen" != *" $who "* ]]; then
            echo "answered by $who"
            seen="$seen$who "
        fi
        local missing=0 want
        for want in "$@"; do
            [[ "$seen" == *" $want "* ]] || missing=1
        done
        [ "$missing" -eq 0 ] && return 0
        [ "$SECONDS" -lt "$end" ] || fail "not every one of $* answered (seen:$seen)"
    done
}

command -v curl >/dev/null || fail "curl is needed"
[ -x "$BIN" ] || fail "$BIN is not built (make demo builds it)"

step "flow-proxy starts on its embedded registry (Consul's API on $REGISTRY)"
start_proxy
echo "control API on $API, HAProxy on $PROXY; log in $WORK/flow-proxy.log"

step "Deploy: one instance of go-demo, registered in the catalog as Registrator does"
start_instance 1

step "Reconfigure: route /demo to go-demo"
run "$BIN" reconfigure --api-address "$API" --service-name go-demo --service-path /demo
expect '"Status":"OK"'

step "Use it"
run curl -sS -i "$PROXY/demo/hello"
expect "200 OK"
expect "hello, world!"
expect "go-demo-1"

step "Scale to three instances: no other call is needed, flow-proxy follows the catalog"
start_instance 2
start_instance 3
until_all_answer go-demo-1 go-demo-2 go-demo-3

step "An instance fails: it stops and leaves the catalog; the others keep serving"
kill "${BACKEND_PIDS[0]}"
run curl -sS -X PUT "$REGISTRY/v1/agent/service/deregister/demo:go-demo_app_1:8080"
wait_for "go-demo-1 is no longer routed" \
    bash -c "curl -s '$API/v1/docker-flow-proxy/config?type=json' | grep -q '\"Servers\":2'"
for _ in 1 2 3 4; do
    run curl -sS "$PROXY/demo/hello"
    expect "hello, world!"
done

step "Proxy failover: flow-proxy and its HAProxy stop, and nothing answers"
kill "$PROXY_PID"
wait "$PROXY_PID" || fail "flow-proxy did not stop cleanly"
PROXY_PID=""
printf '$ curl %s/demo/hello\n' "$PROXY"
wait_for "HAProxy has stopped" bash -c "! curl -s -o /dev/null '$PROXY/demo/hello'"
echo "(connection refused)"

step "A new flow-proxy with only its Consul (here the registry's state in DATA_DIR) rebuilds the routes"
start_proxy
run curl -sS -i "$PROXY/demo/hello"
expect "200 OK"
expect "hello, world!"

step "Remove: go-demo is no longer routed"
run "$BIN" remove --api-address "$API" --service-name go-demo
expect '"Status":"OK"'
run curl -sS -i "$PROXY/demo/hello"
expect "503"

step "demo finished: everything it started is being stopped"
