#!/usr/bin/env bash
# The macro benchmark: what a reverse proxy pays for tower-steady's stacks.
#
#   bash benches/proxy.sh
#
# Builds examples/proxy in release, starts a fast upstream on loopback
# (`proxy --upstream-server`), and drives oha through the proxy with
# `--bare` and with the full stack (Resilience::server() around
# Resilience::client() over Upstreams), alternating, ROUNDS times each for
# DURATION at CONNECTIONS connections. Then the fault run: the upstream
# answers FAULT_RATE of its requests with 502, and the statuses the callers
# see are counted for both proxies. Everything is on 127.0.0.1, bounded in
# time, and stopped at the end. oha is installed with `cargo install` when
# missing. Prints Markdown tables for BENCHMARKS.md.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-2}
FAULT_RATE=${FAULT_RATE:-0.05}

cd "$(dirname "$0")/.."
if ! command -v oha >/dev/null; then
    cargo install oha --locked
fi
cargo build --release --quiet --example proxy
bin=target/release/examples/proxy

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Starts `proxy ARGS...` in the background and waits until ADDR answers.
start() {
    local addr=$1
    shift
    "$bin" --listen "$addr" "$@" >/dev/null &
    pids+=($!)
    for _ in $(seq 100); do
        if python3 -c "import socket; socket.create_connection(('${addr%:*}', ${addr##*:}), 1)" 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    echo "$addr did not come up" >&2
    exit 1
}

stop_last() {
    local pid=${pids[-1]}
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    unset 'pids[-1]'
}

# oha's JSON summary of DURATION of load on URL, reduced to one line:
# requests/s, p50, p99, p99.9 (ms), and the status counts.
measure() {
    oha --no-tui --output-format json -z "$DURATION" -c "$CONNECTIONS" "$1" |
        python3 -c '
import json, sys
r = json.load(sys.stdin)
p = r["latencyPercentiles"]
codes = " ".join(f"{k}:{v}" for k, v in sorted(r["statusCodeDistribution"].items()))
# Requests still in flight when the run ends are not errors.
errors = sum(n for e, n in r.get("errorDistribution", {}).items() if "deadline" not in e)
rps = r["summary"]["requestsPerSec"]
print("%.0f %.3f %.3f %.3f %s errors:%d" % (rps, p["p50"] * 1e3, p["p99"] * 1e3, p["p99.9"] * 1e3, codes, errors))
'
}

upstream=127.0.0.1:$(free_port)
proxy=127.0.0.1:$(free_port)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%Y-%m-%d)"
echo "oha $(oha --version | awk '{print $2}'), $CONNECTIONS connections, $DURATION per run"
echo

# One table row: the proxy started bare or full, measured, stopped.
row() {
    local label=$1 mode=$2 flags=()
    if [ "$mode" = bare ]; then
        flags=(--bare)
    fi
    start "$proxy" --upstream "http://$upstream" "${flags[@]}"
    local result
    result=$(measure "http://$proxy/")
    read -r rps p50 p99 p999 rest <<<"$result"
    echo "| $label$mode | $rps | $p50 | $p99 | $p999 | $rest |"
    stop_last
}

start "$upstream" --upstream-server
echo "| run | proxy | requests/s | p50 ms | p99 ms | p99.9 ms | statuses |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
    row "$round | " bare
    row "$round | " full
done
stop_last

echo
start "$upstream" --upstream-server --fail-502 "$FAULT_RATE"
echo "Fault run: the upstream answers $FAULT_RATE of its requests with 502."
echo
echo "| proxy | requests/s | p50 ms | p99 ms | p99.9 ms | statuses |"
echo "|---|---|---|---|---|---|"
row "" bare
row "" full
