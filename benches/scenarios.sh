#!/usr/bin/env bash
# Real-process scenarios: what callers of a reverse proxy get under load and
# faults, the bare proxy and the full stack side by side.
#
#   bash benches/scenarios.sh              # every scenario
#   bash benches/scenarios.sh saturation   # some of them, by name
#
# Builds examples/proxy in release, starts its upstream processes on
# loopback (`proxy --upstream-server`, with a capacity, a work time or a
# Cache-Control as each scenario needs), starts the proxy as a process of
# its own (`--bare`, then the full stack: Resilience::server() around
# Resilience::client() over Upstreams), drives oha against it, and prints
# per scenario and proxy the callers' status counts, 2xx throughput and
# 2xx p50/p99 (and the p99 of the other answers) as Markdown for
# BENCHMARKS.md. Scenarios:
#
#   saturation  no fault, one fast upstream, closed loop: 32 connections
#               as fast as they go (ROUNDS rounds, bare and full alternating)
#   queue       one upstream that works on 8 requests at once, 20 ms each
#               (400/s), the rest waiting in its line; 128 connections,
#               closed loop, for DURATION (time-bounded, so fast refusals do
#               not end the run early)
#   overload    the same upstream, paced at 3 x its capacity (1 200/s, with
#               oha's latency correction) for DURATION
#   outage      three upstreams whose pages say Cache-Control: max-age=60;
#               100 pages fetched while they are up, then every upstream is
#               stopped and the same pages asked for, for OUTAGE
#
# Everything runs on 127.0.0.1, bounded in time, and every process started
# is stopped at the end. oha is installed with `cargo install` when missing.
set -euo pipefail

DURATION=${DURATION:-10s}
OUTAGE=${OUTAGE:-5s}
ROUNDS=${ROUNDS:-3}

cd "$(dirname "$0")/.."
if ! command -v oha >/dev/null; then
    cargo install oha --locked
fi
cargo build --release --quiet --example proxy
bin=target/release/examples/proxy

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    local addr=$1
    for _ in $(seq 100); do
        if python3 -c "import socket; socket.create_connection(('${addr%:*}', ${addr##*:}), 1)" 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    echo "nothing answers on $addr" >&2
    exit 1
}

# Starts `proxy --listen ADDR ARGS...` in the background, waits until ADDR
# answers, and leaves its pid in $started.
start() {
    local addr=$1
    shift
    "$bin" --listen "$addr" "$@" >/dev/null &
    started=$!
    pids+=("$started")
    wait_port "$addr"
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Runs oha with ARGS against URL; writes its JSON to $work/NAME.json.
load() {
    local name=$1 url=$2
    shift 2
    oha --no-tui --output-format json --stats-success-breakdown "$@" "$url" >"$work/$name.json"
}

# Prints one Markdown row from $work/NAME.json.
row() {
    python3 - "$work/$1.json" "$2" "$3" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = {int(k): v for k, v in d["statusCodeDistribution"].items()}
errors = sum(d["errorDistribution"].values())
total = sum(codes.values()) + errors
ok = sum(v for k, v in codes.items() if 200 <= k < 300)
seconds = d["summary"]["total"]
def ms(p, key):
    v = d[key].get(p)
    return "-" if v is None or v != v else f"{v * 1e3:.1f}"
others = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()) if not 200 <= k < 300)
if errors:
    others = (others + ", " if others else "") + f"errors: {errors}"
print(f"| {sys.argv[2]} | {sys.argv[3]} | {total} | {ok} | {codes.get(503, 0)} | {codes.get(502, 0)} | "
      f"{others or '-'} | {ok / seconds:.0f} | {ms('p50', 'latencyPercentilesSuccessful')} | "
      f"{ms('p99', 'latencyPercentilesSuccessful')} | {ms('p99', 'latencyPercentilesNotSuccessful')} |")
PY
}

header() {
    echo
    echo "| scenario | proxy | requests | 2xx | 503 | 502 | other | 2xx/s | 2xx p50 ms | 2xx p99 ms | non-2xx p99 ms |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
}

# Starts the bare and the full proxy in front of UPSTREAMS (URLs), one at
# a time, runs `load NAME-bare|full URL ARGS...` through each, prints rows.
both() {
    local scenario=$1 upstreams=$2
    shift 2
    local which
    for which in bare full; do
        local port
        port=$(free_port)
        local flags=()
        for u in $upstreams; do flags+=(--upstream "$u"); done
        [ "$which" = bare ] && flags+=(--bare)
        start "127.0.0.1:$port" "${flags[@]}"
        local proxy=$started
        load "$scenario-$which" "http://127.0.0.1:$port/" "$@"
        stop "$proxy"
        row "$scenario-$which" "$scenario" "$which"
        # Let the upstream finish what the last load left in its line.
        sleep 1
    done
}

saturation() {
    local port
    port=$(free_port)
    start "127.0.0.1:$port" --upstream-server
    local upstream=$started
    local round
    for round in $(seq "$ROUNDS"); do
        both "saturation-$round" "http://127.0.0.1:$port" -c 32 -z "$DURATION"
    done
    stop "$upstream"
    python3 - "$work" "$ROUNDS" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def ok_rate(name):
    d = json.load(open(f"{work}/{name}.json"))
    ok = sum(v for k, v in d["statusCodeDistribution"].items() if k.startswith("2"))
    return ok / d["summary"]["total"]
ratios = [ok_rate(f"saturation-{r}-full") / ok_rate(f"saturation-{r}-bare") for r in range(1, rounds + 1)]
print()
print(f"saturation: full / bare 2xx throughput per round {', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}")
PY
}

queue() {
    local port
    port=$(free_port)
    start "127.0.0.1:$port" --upstream-server --capacity 8 --work 20
    local upstream=$started
    both queue "http://127.0.0.1:$port" -c 128 -z "$DURATION"
    stop "$upstream"
}

overload() {
    local port
    port=$(free_port)
    start "127.0.0.1:$port" --upstream-server --capacity 8 --work 20
    local upstream=$started
    both overload "http://127.0.0.1:$port" -c 512 -q 1200 --latency-correction -z "$DURATION"
    stop "$upstream"
}

outage() {
    local which
    for which in bare full; do
        local ports=() upstream_pids=() flags=()
        for _ in 1 2 3; do
            local port
            port=$(free_port)
            start "127.0.0.1:$port" --upstream-server --cache-control "max-age=60"
            ports+=("$port")
            upstream_pids+=("$started")
            flags+=(--upstream "http://127.0.0.1:$port")
        done
        [ "$which" = bare ] && flags+=(--bare)
        local port
        port=$(free_port)
        start "127.0.0.1:$port" "${flags[@]}"
        local proxy=$started
        local pages="http://127.0.0.1:$port/p/[0-9]{2}"
        # Up: every one of the 100 pages fetched (3 000 draws of 100).
        load "outage-warm-$which" "$pages" --rand-regex-url -n 3000 -c 8
        for pid in "${upstream_pids[@]}"; do stop "$pid"; done
        load "outage-$which" "$pages" --rand-regex-url -c 32 -z "$OUTAGE"
        stop "$proxy"
        row "outage-$which" outage "$which"
    done
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(saturation queue overload outage)
echo "oha $(oha --version | awk '{print $2}'), $(nproc) cores, DURATION=$DURATION OUTAGE=$OUTAGE ROUNDS=$ROUNDS"
header
for scenario in "${scenarios[@]}"; do
    case "$scenario" in
        saturation | queue | overload | outage) "$scenario" ;;
        *)
            echo "unknown scenario $scenario" >&2
            exit 2
            ;;
    esac
done
