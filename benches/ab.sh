#!/usr/bin/env bash
# The full proxy of two builds side by side, in real time: the working
# tree's and REV's (a commit, `main~1` say), with the bare proxy as the
# yardstick, interleaved round by round so that the machine's slow and fast
# minutes fall on both builds alike.
#
#   bash benches/ab.sh REV          # ROUNDS=5 DURATION=5 CONNECTIONS=32
#   THREADS=2 bash benches/ab.sh REV
#
# REV's examples/proxy is built in release from a `git worktree` of REV (in
# target/ab, kept between runs), the working tree's as benches/proxy.sh
# builds it. One upstream (`proxy --upstream-server`) on loopback; each
# round runs the bare proxy, then the full proxy of REV, then the working
# tree's (the two in turn first), each warmed up for 2 s and then loaded by oha for DURATION seconds
# at CONNECTIONS connections (THREADS=N: each with `--threads N`). Prints,
# for each run, the requests answered per second and the proxy's CPU per
# request (user and system, from /proc), then the medians and each full
# proxy's median over the bare one's. On a shared 2-core machine single
# runs move by 5-10%; compare the medians, and prefer `callgrind.sh` for
# changes smaller than that. Everything is on 127.0.0.1, bounded in time,
# and stopped at the end.
set -euo pipefail

REV=${1:?usage: bash benches/ab.sh REV}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-}

source "$(dirname "$0")/harness.sh"

commit=$(git rev-parse --short "$REV")
tree=target/ab/$commit
if [ ! -d "$tree" ]; then
    git worktree add --detach -q "$tree" "$commit"
fi
(cd "$tree" && cargo build --release --quiet --example proxy --target-dir ../target)
old=target/ab/target/release/examples/proxy
# The worktree shares one target folder between revisions: build REV's last,
# so that its binary is the one there, and copy it aside.
cp "$old" "$work/proxy-$commit"
old=$work/proxy-$commit

upstream=127.0.0.1:$(free_port)
start "$upstream" --upstream-server

flags=()
if [ -n "$THREADS" ]; then flags+=(--threads "$THREADS"); fi

# One run: NAME BINARY ARGS...; appends "NAME req/s user sys" to $work/runs.
run() {
    local name=$1 binary=$2 addr pid
    shift 2
    addr=127.0.0.1:$(free_port)
    "$binary" --listen "$addr" --upstream "http://$upstream" "${flags[@]}" "$@" >/dev/null 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_port "$addr"
    oha --no-tui -z 2s -c "$CONNECTIONS" "http://$addr/" >/dev/null
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    oha --no-tui --output-format json -z "${DURATION}s" -c "$CONNECTIONS" "http://$addr/" >"$work/oha.json"
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    unset 'pids[-1]'
    python3 - "$work/oha.json" "$name" "$DURATION" "$((u1 - u0))" "$((s1 - s0))" \
        "$(getconf CLK_TCK)" >>"$work/runs" <<'PY'
import json, sys
path, name, duration, user, sys_, tck = sys.argv[1:]
codes = json.load(open(path))["statusCodeDistribution"]
if set(codes) != {"200"}:
    sys.exit(f"{name}: not every answer was 200: {codes}")
n = sum(codes.values())
us = 1e6 / int(tck) / n
print(name, n / float(duration), int(user) * us, int(sys_) * us)
PY
    tail -1 "$work/runs"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%Y-%m-%d)"
echo "oha $(oha --version | awk '{print $2}'), $CONNECTIONS connections, ${DURATION}s a run, $ROUNDS rounds${THREADS:+, --threads $THREADS}; full@$commit against the working tree ($(git rev-parse --short HEAD)$(git diff --quiet || echo ', modified'))"
# The two full proxies swap places every round: whatever the run before
# leaves behind (sockets in TIME_WAIT, a warmer cache) falls on both.
for round in $(seq "$ROUNDS"); do
    run bare "$bin" --bare >/dev/null
    if [ $((round % 2)) = 1 ]; then
        run "full@$commit" "$old" >/dev/null
        run full "$bin" >/dev/null
    else
        run full "$bin" >/dev/null
        run "full@$commit" "$old" >/dev/null
    fi
done
python3 - "$work/runs" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, rate, user, system = line.split()
    runs[name].append((float(rate), float(user), float(system)))
print()
print("| proxy | requests/s, each round | median | CPU µs/request (user + system), median | ÷ bare |")
print("|---|---|---|---|---|")
bare = statistics.median(r for r, _, _ in runs["bare"])
for name, rows in runs.items():
    rate = statistics.median(r for r, _, _ in rows)
    cpu = statistics.median(u + s for _, u, s in rows)
    user = statistics.median(u for _, u, _ in rows)
    each = ", ".join(f"{r:,.0f}" for r, _, _ in rows)
    print(f"| {name} | {each} | {rate:,.0f} | {cpu:.1f} ({user:.1f} user) | {rate / bare:.2f} |")
PY
