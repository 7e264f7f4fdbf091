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
# and, for recovery (paced at RATE requests/s, 2 000 by default; no page
# can be stored, so the breaker and the balancer are what is measured):
#
#   restart     three upstreams, all stopped after 3 s of healthy traffic
#               and started again 3 s later; the full proxy reports when
#               its breaker opened and closed (--report)
#   kill-one    one of three stopped after 3 s and started again 2 s later:
#               when it takes requests again, and what the callers saw
#   transient   three upstreams answering 5% of requests with 502: the 502s
#               the callers saw, the attempts per request (amplification)
#               and the p99 against a run without faults
#   flap        one of three upstreams (each request 5 ms, so some are in
#               flight when it stops) stopped and started every second
#
# Everything runs on 127.0.0.1, bounded in time, and every process started
# is stopped at the end. oha is installed with `cargo install` when missing.
set -euo pipefail

DURATION=${DURATION:-10s}
OUTAGE=${OUTAGE:-5s}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-2000}

source "$(dirname "$0")/harness.sh"

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

now_ms() {
    python3 -c 'import time; print(int(time.time() * 1000))'
}

# Starts three upstreams (ARGS for each) and leaves their ports in $ports
# and pids in $upstream_pids.
three_upstreams() {
    ports=()
    upstream_pids=()
    local _
    for _ in 1 2 3; do
        local port
        port=$(free_port)
        start "127.0.0.1:$port" --upstream-server "$@"
        ports+=("$port")
        upstream_pids+=("$started")
    done
}

# Prints, from oha's per-request database NAME.db (times relative to the
# load's start), the statuses and what happened around EVENTS (name=ms
# pairs, ms since the load started).
timeline() {
    python3 - "$work/$1.db" "$2" "$3" "${@:4}" <<'PY'
import sqlite3, sys
db, scenario, proxy, events = sys.argv[1], sys.argv[2], sys.argv[3], dict(e.split("=") for e in sys.argv[4:])
rows = sqlite3.connect(db).execute("select start, end, status from oha order by start").fetchall()
codes = {}
for _, _, status in rows:
    codes[status] = codes.get(status, 0) + 1
ok = codes.get(200, 0)
others = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()) if k != 200) or "-"
line = f"| {scenario} | {proxy} | {len(rows)} | {ok} | {others} |"
for name, at in events.items():
    at = float(at) / 1000
    # The first 2xx sent after the event, and the first moment from which
    # every request sent is answered 2xx.
    after = [r for r in rows if r[0] >= at]
    first_ok = next((r[0] - at for r in after if r[2] == 200), None)
    bad = [r[0] for r in after if r[2] != 200]
    steady = (max(bad) - at) if bad else 0.0
    line += f" {name}: first 2xx {first_ok * 1e3:.0f} ms after, all 2xx from {steady * 1e3:.0f} ms after |" if first_ok is not None else f" {name}: no 2xx after |"
print(line)
PY
}

# The paced load for the recovery scenarios: RATE/s for SECONDS, in the
# background, into $work/NAME.db; its start time (ms) in $load_start.
paced_load() {
    local name=$1 url=$2 seconds=$3
    rm -f "$work/$name.db"
    load_start=$(now_ms)
    oha --no-tui -q "$RATE" -c 256 -z "${seconds}s" --db-url "$work/$name.db" "$url" >/dev/null 2>&1 &
    load_pid=$!
}

recovery_header() {
    echo
    echo "| scenario | proxy | requests | 200 | other | around the events |"
    echo "|---|---|---|---|---|---|"
}

# Starts three upstreams and, in front of them, the bare proxy or the full
# one with --report (its state changes in $work/NAME-full.log); leaves the
# proxy's port in $port, its pid in $proxy, and when it started (ms) in
# $proxy_start.
recovery_proxy() {
    local name=$1 which=$2
    three_upstreams
    local flags=()
    for p in "${ports[@]}"; do flags+=(--upstream "http://127.0.0.1:$p"); done
    [ "$which" = bare ] && flags+=(--bare) || flags+=(--report)
    port=$(free_port)
    "$bin" --listen "127.0.0.1:$port" "${flags[@]}" >/dev/null 2>"$work/$name-$which.log" &
    proxy=$!
    pids+=("$proxy")
    wait_port "127.0.0.1:$port"
    proxy_start=$(now_ms)
}

# Prints the --report lines of LOG whose subject starts with SUBJECT
# ("breaker", or "endpoint ADDR"), as ms of the load (OFFSET: ms from the
# proxy's start to the load's) and from each EVENT (name=ms pairs).
report_events() {
    python3 - "$@" <<'PY'
import sys
log, offset, subject, events = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
events = [(name, int(at)) for name, at in (e.split("=") for e in events)]
for line in open(log):
    parts = line.split()
    if parts[1:1 + len(subject)] != subject or len(parts) <= len(subject) + 1:
        continue
    at = int(parts[0]) + offset
    since = ", ".join(f"{at - when:+} ms from {name}" for name, when in events)
    print(f"  {' '.join(subject)} {parts[len(subject) + 1]} at {at} ms of the load ({since})")
PY
}

restart() {
    recovery_header
    local which
    for which in bare full; do
        recovery_proxy restart "$which"
        paced_load "restart-$which" "http://127.0.0.1:$port/" 9
        sleep 3
        local down=$(($(now_ms) - load_start))
        for pid in "${upstream_pids[@]}"; do stop "$pid"; done
        sleep 3
        local up=$(($(now_ms) - load_start))
        for p in "${ports[@]}"; do start "127.0.0.1:$p" --upstream-server; done
        wait "$load_pid" || true
        stop "$proxy"
        timeline "restart-$which" restart "$which" "down=$down" "up=$up"
        if [ "$which" = full ]; then
            report_events "$work/restart-full.log" "$((load_start - proxy_start))" breaker \
                "the outage=$down" "the restart=$up"
        fi
        for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
        sleep 1
    done
}

kill_one() {
    recovery_header
    local which
    for which in bare full; do
        recovery_proxy kill "$which"
        paced_load "kill-$which" "http://127.0.0.1:$port/" 8
        sleep 3
        local down=$(($(now_ms) - load_start))
        stop "${upstream_pids[0]}"
        sleep 2
        local up=$(($(now_ms) - load_start))
        start "127.0.0.1:${ports[0]}" --upstream-server
        wait "$load_pid" || true
        stop "$proxy"
        timeline "kill-$which" kill-one "$which" "down=$down" "up=$up"
        if [ "$which" = full ]; then
            report_events "$work/kill-full.log" "$((load_start - proxy_start))" \
                "endpoint 127.0.0.1:${ports[0]}" "its restart=$up"
        fi
        for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
        sleep 1
    done
}

transient() {
    echo
    echo "| scenario | proxy | requests | 2xx | 502 | other | attempts per request | 2xx p50 ms | 2xx p99 ms |"
    echo "|---|---|---|---|---|---|---|---|---|"
    local which fault
    for fault in 0 0.05; do
        for which in bare full; do
            three_upstreams --fail-502 "$fault"
            local flags=() port
            for p in "${ports[@]}"; do flags+=(--upstream "http://127.0.0.1:$p"); done
            [ "$which" = bare ] && flags+=(--bare)
            port=$(free_port)
            start "127.0.0.1:$port" "${flags[@]}"
            local proxy=$started
            load "transient-$fault-$which" "http://127.0.0.1:$port/" -q "$RATE" -c 256 -z 5s --latency-correction
            stop "$proxy"
            # Each upstream prints how many requests reached it when it
            # stops on SIGINT.
            for pid in "${upstream_pids[@]}"; do kill -INT "$pid"; done
            for pid in "${upstream_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
            local served=0 p n
            for p in "${ports[@]}"; do
                n=$(awk '/^served/ {n = $2} END {print n + 0}' "$work/127.0.0.1_$p.out")
                served=$((served + n))
            done
            python3 - "$work/transient-$fault-$which.json" "$fault" "$which" "$served" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = {int(k): v for k, v in d["statusCodeDistribution"].items()}
total = sum(codes.values()) + sum(d["errorDistribution"].values())
ok = sum(v for k, v in codes.items() if 200 <= k < 300)
others = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()) if not 200 <= k < 300 and k != 502) or "-"
p = d["latencyPercentilesSuccessful"]
served = int(sys.argv[4])
print(f"| transient {float(sys.argv[2]) * 100:.0f}% 502 | {sys.argv[3]} | {total} | {ok} | {codes.get(502, 0)} | {others} | {served / total:.3f} | {p['p50'] * 1e3:.2f} | {p['p99'] * 1e3:.2f} |")
PY
        done
    done
}

flap() {
    recovery_header
    local which
    for which in bare full; do
        three_upstreams --capacity 1000 --work 5
        local flags=() port
        for p in "${ports[@]}"; do flags+=(--upstream "http://127.0.0.1:$p"); done
        [ "$which" = bare ] && flags+=(--bare)
        port=$(free_port)
        start "127.0.0.1:$port" "${flags[@]}"
        local proxy=$started
        paced_load "flap-$which" "http://127.0.0.1:$port/" 10
        local pid=${upstream_pids[0]} round
        for round in 1 2 3 4; do
            sleep 1
            stop "$pid"
            sleep 1
            start "127.0.0.1:${ports[0]}" --upstream-server --capacity 1000 --work 5
            pid=$started
        done
        wait "$load_pid" || true
        stop "$proxy"
        timeline "flap-$which" flap "$which"
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        sleep 1
    done
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(saturation queue overload outage restart kill-one transient flap)
echo "oha $(oha --version | awk '{print $2}'), $(nproc) cores, DURATION=$DURATION OUTAGE=$OUTAGE ROUNDS=$ROUNDS RATE=$RATE"
header
for scenario in "${scenarios[@]}"; do
    case "$scenario" in
        saturation | queue | overload | outage | restart | transient | flap) "$scenario" ;;
        kill-one) kill_one ;;
        *)
            echo "unknown scenario $scenario" >&2
            exit 2
            ;;
    esac
done
