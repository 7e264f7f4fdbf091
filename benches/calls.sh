#!/usr/bin/env bash
# Instructions per call of the benchmarks' stacks, counted rather than
# timed: each stack of `examples/calls` (the `stack` and `retry`
# benchmarks' stacks, built by the same functions) under
# `valgrind --tool=callgrind`, once with FEW calls and once with FEW + MANY;
# the difference of the two totals divided by MANY is what one call costs,
# start-up and the first calls left out. Deterministic for one binary on one
# machine, whatever else the machine is doing, where criterion's times on a
# shared 2-core machine move by 10-20% between runs.
#
#   bash benches/calls.sh            # FEW=2000 MANY=20000, proxied requests
#   SHAPE=empty bash benches/calls.sh
#   PARTS=1 bash benches/calls.sh    # and what each part of the client preset costs
#
# Prints, for a ready inner service and one answering after one `Pending`,
# each stack's instructions per call, that over tower's stack's (as
# criterion's ratios are), and both less `none` (the cost of making the
# request and calling the bare inner service); with PARTS=1, also the
# client preset with one part taken out at a time (the deadline's header,
# the deadline, the breaker, the throttle; all three but the retry) and
# what each part costs. valgrind is installed with
# apt-get when missing. No network.
set -euo pipefail

FEW=${FEW:-2000}
MANY=${MANY:-20000}
SHAPE=${SHAPE:-proxied}

source "$(dirname "$0")/valgrind.sh"
cd "$(dirname "$0")/.."
cargo build --release --quiet -p tower-steady-benches --example calls
calls=${CARGO_TARGET_DIR:-target}/release/examples/calls
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Total instructions of `calls STACK N ARGS...`.
total() {
    valgrind --tool=callgrind --callgrind-out-file="$work/out" "$calls" "$@" 2>&1 >/dev/null |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

extra=()
if [ "$SHAPE" = empty ]; then extra=(empty); fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%Y-%m-%d)"
echo "valgrind $(valgrind --version), $SHAPE requests, ($((FEW + MANY)) − $FEW calls) / $MANY"
for mode in ready pending; do
    args=("${extra[@]}")
    if [ "$mode" = pending ]; then args+=(pending); fi
    stacks=$("$calls" --list)
    if [ "${PARTS:-0}" = 1 ]; then stacks="$stacks $("$calls" --list-parts)"; fi
    for stack in $stacks; do
        few=$(total "$stack" "$FEW" "${args[@]}")
        all=$(total "$stack" "$((FEW + MANY))" "${args[@]}")
        echo "$mode $stack $(( (all - few) / MANY ))"
    done
done >"$work/counts"
python3 - "$work/counts" <<'PY'
import sys
counts = {}
for line in open(sys.argv[1]):
    mode, stack, n = line.split()
    counts[(mode, stack)] = int(n)
groups = [
    ("client", "none", "tower_builtin",
     ["tower_steady_like_tower", "tower_steady_client", "tower_steady_client_attempt_timeout"]),
    ("server", "server_none", "server_tower_builtin", ["tower_steady_server"]),
    ("retry", "none", "retry_tower", ["retry_tower_steady"]),
]
print()
print("| group | inner | base (none) | stack | instructions per call | less base | ÷ tower's | ÷ tower's, less base |")
print("|---|---|---|---|---|---|---|---|")
for mode in ("ready", "pending"):
    for group, base, tower, ours in groups:
        b = counts[(mode, base)]
        t = counts[(mode, tower)] - b
        for stack in [tower] + ours:
            c = counts[(mode, stack)]
            whole = "" if stack == tower else f"{c / (t + b):.2f}"
            ratio = "" if stack == tower else f"{(c - b) / t:.2f}"
            print(f"| {group} | {mode} | {b:,} | `{stack}` | {c:,} | {c - b:,} | {whole} | {ratio} |")
parts = sorted({stack for (_, stack) in counts if stack.startswith("client_")})
if parts:
    # The preset less one part: the difference is what that part costs.
    print()
    names = {
        "client_without_deadline_header": "the deadline's header",
        "client_without_deadline": "the deadline",
        "client_without_circuit_breaker": "the breaker",
        "client_without_throttle": "the throttle",
        "client_retry_only": "all three (the retry alone left)",
    }
    print("| inner | client preset without | stack | instructions per call | the part costs | ÷ tower's |")
    print("|---|---|---|---|---|---|")
    for mode in ("ready", "pending"):
        whole = counts[(mode, "tower_steady_client")]
        tower = counts[(mode, "tower_builtin")]
        for stack in parts:
            c = counts[(mode, stack)]
            name = names.get(stack, stack)
            print(f"| {mode} | {name} | `{stack}` | {c:,} | {whole - c:,} | {c / tower:.2f} |")
PY
