#!/usr/bin/env bash
# The macro benchmark: what a reverse proxy pays for tower-steady's stacks.
#
#   bash benches/proxy.sh
#
# Builds examples/proxy in release, starts a fast upstream on loopback
# (`proxy --upstream-server`), and drives oha through the proxy with
# `--bare` and with the full stack (Resilience::server() around
# Resilience::client() over Upstreams), alternating, ROUNDS times each for
# DURATION at CONNECTIONS connections after WARMUP, and reports each run and the
# medians of the full stack's ratios to bare (the load generator, the
# proxy and the upstream share the machine, whose load moves between runs:
# compare within a round). Beside oha's figures it reports the proxy's own
# CPU time per request (user + system, from /proc), which moves less with
# the machine's load than throughput does. Then the fault run: the upstream
# answers FAULT_RATE of its requests with 502, and the statuses the callers
# see are counted for both proxies, FAULT_ROUNDS times; the full proxy runs
# with --report there, and each run's row is followed by what its layers
# refused (the server's adaptive limit, the client's throttle, the breaker's
# state changes, and for how long the retry budget was empty), so a run
# with many 503s says which layer answered them. Everything is on 127.0.0.1, bounded in
# time, and stopped at the end. oha is installed with `cargo install` when
# missing. Prints Markdown tables for BENCHMARKS.md.
#
# Each round also runs the proxy with `--tower` (TOWER=0 to skip it): the
# bare proxy inside tower's own layers in the presets' places (LoadShed,
# ConcurrencyLimit and Timeout around the handler; Retry with a TpsBudget,
# LoadShed, ConcurrencyLimit and an attempt Timeout around the client), the
# peer's cost of the same places; its ratios to bare and to the full stack
# are reported beside the full stack's, and it runs in the fault run too.
#
# Each round also runs nginx (Debian's package, installed with apt-get when
# missing; NGINX=0 to skip it) as the same reverse proxy, from a generated
# configuration that is nginx's default for a proxy: `worker_processes
# auto`, `proxy_pass` to the upstream with nothing else tuned (HTTP/1.0 and
# a new connection per request to the upstream), the access log off; and
# again with the upstream connections kept alive (`nginx-keepalive`).
#
# Then the fixed-rate run (RATE requests/s, 0 to skip it): bare and full
# again, ROUNDS times each, with oha holding the rate at RATE, below what
# either proxy can serve. In the closed-loop runs the slower proxy also
# batches less work per wake-up (fewer requests ready at each epoll), so
# its CPU per request rises for a reason that is not its own code; at one
# rate both proxies see the same arrivals, and the CPU per request is what
# each proxy's code costs. Its median full ÷ bare is reported.
#
# ROUNDS=0 skips the closed-loop and fixed-rate runs: only the fault run,
# FAULT_ROUNDS times (e.g. `ROUNDS=0 FAULT_ROUNDS=5 bash benches/proxy.sh`).
set -euo pipefail

DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-2s}
FAULT_RATE=${FAULT_RATE:-0.05}
FAULT_ROUNDS=${FAULT_ROUNDS:-1}
RATE=${RATE:-10000}
NGINX=${NGINX:-1}
TOWER=${TOWER:-1}
# THREADS=N runs the proxies with `--threads N`: N single-threaded
# runtimes, each with its own listener (SO_REUSEPORT) and connections, as
# nginx's N workers, the full proxy's presets built once and shared by
# them; unset, one multi-thread runtime.
THREADS=${THREADS:-}

source "$(dirname "$0")/harness.sh"

# CPU time (user + system) of process PID and its children (nginx's
# workers) so far, in clock ticks.
cpu_ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

# nginx in front of $upstream on $proxy, in the foreground (its master's pid
# in $started), from a generated configuration in $work: nginx's defaults
# for a proxy, or with KEEPALIVE=1 connections to the upstream kept open
# (`keepalive 32`, HTTP/1.1), as a tuned nginx would have it.
start_nginx() {
    local keepalive=${1:-0} dir=$work/nginx.d target location
    mkdir -p "$dir"
    if [ "$keepalive" = 1 ]; then
        target="upstream backend { server $upstream; keepalive 32; }"
        location='proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";'
    else
        target=""
        location="proxy_pass http://$upstream;"
    fi
    cat >"$dir/nginx.conf" <<CONF
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    $target
    server {
        listen $proxy;
        location / { $location }
    }
}
CONF
    nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' &
    started=$!
    pids+=("$started")
    wait_port "$proxy"
}

if [ "$NGINX" = 1 ] && ! command -v nginx >/dev/null; then
    as_root=()
    if [ "$(id -u)" != 0 ]; then as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi

# oha's JSON summary of DURATION of load on URL (at most RATE_LIMIT
# requests/s when that is set), reduced to one line: requests/s, p50, p99,
# p99.9 (ms), the CPU microseconds process PID spent per answered request,
# and the status counts.
measure() {
    local url=$1 pid=$2 before after limit=()
    if [ -n "${RATE_LIMIT:-}" ]; then limit=(-q "$RATE_LIMIT"); fi
    before=$(cpu_ticks "$pid")
    oha --no-tui --output-format json -z "$DURATION" -c "$CONNECTIONS" "${limit[@]}" "$url" >"$work/oha.json"
    after=$(cpu_ticks "$pid")
    python3 - "$work/oha.json" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ticks, hz = int(sys.argv[2]), int(sys.argv[3])
p = r["latencyPercentiles"]
statuses = r["statusCodeDistribution"]
codes = " ".join(f"{k}:{v}" for k, v in sorted(statuses.items()))
# Requests still in flight when the run ends are not errors.
errors = sum(n for e, n in r.get("errorDistribution", {}).items() if "deadline" not in e)
rps = r["summary"]["requestsPerSec"]
cpu_us = ticks / hz * 1e6 / max(1, sum(statuses.values()))
print("%.0f %.3f %.3f %.3f %.1f %s errors:%d" % (rps, p["p50"] * 1e3, p["p99"] * 1e3, p["p99.9"] * 1e3, cpu_us, codes, errors))
PY
}

upstream=127.0.0.1:$(free_port)
proxy=127.0.0.1:$(free_port)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%Y-%m-%d)"
echo "oha $(oha --version | awk '{print $2}'), $CONNECTIONS connections, $DURATION per run${THREADS:+, proxies with --threads $THREADS}"
echo

# One table row: the proxy started bare or full, measured, stopped. The
# row's figures are also appended to $work/MODE.
row() {
    local label=$1 mode=$2 flags=()
    if [ "$mode" = bare ]; then
        flags=(--bare)
    elif [ "$mode" = tower ]; then
        flags=(--tower)
    fi
    if [ -n "$THREADS" ]; then
        flags+=(--threads "$THREADS")
    fi
    if [ -n "${REPORT:-}" ] && [ "$mode" = full ] && [ -z "$THREADS" ]; then
        flags+=(--report)
    fi
    if [ "$mode" = nginx ]; then
        start_nginx 0
    elif [ "$mode" = nginx-keepalive ]; then
        start_nginx 1
    else
        start "$proxy" --upstream "http://$upstream" "${flags[@]}"
    fi
    # Warm up, unmeasured: connection pools, and the adaptive limit's climb
    # from its initial 20 to the load's 32 connections (a cold server sheds
    # for its first windows, a few hundred milliseconds).
    oha --no-tui -z "$WARMUP" -c "$CONNECTIONS" "http://$proxy/" >/dev/null
    local result
    result=$(measure "http://$proxy/" "${pids[-1]}")
    read -r rps p50 p99 p999 cpu rest <<<"$result"
    echo "| $label$mode | $rps | $p50 | $p99 | $p999 | $cpu | $rest |"
    echo "$rps $p50 $p99 $p999 $cpu" >>"$work/${RATE_LIMIT:+rate-}$mode"
    stop_last
}

start "$upstream" --upstream-server
if [ "$ROUNDS" != 0 ]; then
    echo "| run | proxy | requests/s | p50 ms | p99 ms | p99.9 ms | proxy CPU µs/request | statuses |"
    echo "|---|---|---|---|---|---|---|---|"
fi
for round in $(seq "$ROUNDS"); do
    row "$round | " bare
    row "$round | " full
    if [ "$TOWER" = 1 ]; then
        row "$round | " tower
    fi
    if [ "$NGINX" = 1 ]; then
        row "$round | " nginx
        row "$round | " nginx-keepalive
    fi
done
stop_last

# Full ÷ bare within each round, and the median over the rounds.
echo
python3 - "$work" <<'PY'
import os, statistics, sys
work = sys.argv[1]
def load(mode):
    path = f"{work}/{mode}"
    return [list(map(float, l.split())) for l in open(path)] if os.path.exists(path) else None
bare, full, nginx, tuned = load("bare"), load("full"), load("nginx"), load("nginx-keepalive")
tower = load("tower")
names = ["requests/s", "p50", "p99", "p99.9", "proxy CPU/request"]
def table(title, top, bottom):
    print(f"| {title} | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    ratios = [[t / b for t, b in zip(tr, br)] for tr, br in zip(top, bottom)]
    for i, r in enumerate(ratios, 1):
        print(f"| round {i} | " + " | ".join(f"{x:.2f}" for x in r) + " |")
    med = [statistics.median(col) for col in zip(*ratios)]
    print("| **median** | " + " | ".join(f"**{x:.2f}**" for x in med) + " |")
    print()
if full and bare:
    table("full ÷ bare", full, bare)
if tower and bare:
    table("tower ÷ bare", tower, bare)
    table("full ÷ tower", full, tower)
if full and nginx:
    table("full ÷ nginx", full, nginx)
    table("bare ÷ nginx", bare, nginx)
if full and tuned:
    table("full ÷ nginx-keepalive", full, tuned)
    table("bare ÷ nginx-keepalive", bare, tuned)
PY

start "$upstream" --upstream-server --fail-502 "$FAULT_RATE"
if [ "$FAULT_ROUNDS" != 0 ]; then
    echo
    echo "Fault run: the upstream answers $FAULT_RATE of its requests with 502."
    echo
    echo "| run | proxy | requests/s | p50 ms | p99 ms | p99.9 ms | proxy CPU µs/request | statuses |"
    echo "|---|---|---|---|---|---|---|---|"
fi
for round in $(seq "$FAULT_ROUNDS"); do
    row "$round | " bare
    if [ "$TOWER" = 1 ]; then
        row "$round | " tower
    fi
    : >"$work/report.log"
    START_STDERR=$work/report.log REPORT=1 row "$round | " full
    if [ -z "$THREADS" ]; then
        python3 - "$work/report.log" <<'PY'
import sys
lines = [l.split() for l in open(sys.argv[1])]
breaker = [f"{l[2]} at {int(l[0]) / 1000:.1f} s" for l in lines if l[1:2] == ["breaker"]][1:]
endpoint = sum(1 for l in lines if l[1:2] == ["endpoint"]) - 1
refused = [l for l in lines if l[1:2] == ["refused"]]
last = dict(f.split("=") for f in refused[-1][2:]) if refused else {}
print(f"|   | refused by the full proxy (warm-up included) | adaptive limit {last.get('limit', 0)}, "
      f"throttle {last.get('throttle', 0)}, retry budget empty {last.get('budget_empty_ms', 0)} ms; "
      f"breaker: {', '.join(breaker) or 'closed throughout'}; endpoint changes: {max(endpoint, 0)} |||||")
PY
    fi
done
stop_last

if [ "$RATE" != 0 ] && [ "$ROUNDS" != 0 ]; then
    echo
    start "$upstream" --upstream-server
    echo "Fixed rate: $RATE requests/s, the same for both proxies."
    echo
    echo "| run | proxy | requests/s | p50 ms | p99 ms | p99.9 ms | proxy CPU µs/request | statuses |"
    echo "|---|---|---|---|---|---|---|---|"
    for round in $(seq "$ROUNDS"); do
        RATE_LIMIT=$RATE row "$round | " bare
        RATE_LIMIT=$RATE row "$round | " full
    done
    echo
    python3 - "$work" <<'PY'
import statistics, sys
work = sys.argv[1]
load = lambda mode: [float(l.split()[4]) for l in open(f"{work}/rate-{mode}")]
ratios = [f / b for f, b in zip(load("full"), load("bare"))]
print("| fixed rate | proxy CPU/request, full ÷ bare |")
print("|---|---|")
for i, r in enumerate(ratios, 1):
    print(f"| round {i} | {r:.2f} |")
print(f"| **median** | **{statistics.median(ratios):.2f}** |")
PY
fi
