#!/usr/bin/env bash
# Instructions per proxied request, counted rather than timed: the bare and
# the full proxy under callgrind, the same load through each.
#
#   bash benches/callgrind.sh          # REQUESTS=4000 CONNECTIONS=8 TOP=25
#
# Builds examples/proxy in release with line tables (in target/callgrind,
# so the ordinary release build is left alone), starts a fast upstream on
# loopback (`proxy --upstream-server`, not measured), and runs each proxy
# under `valgrind --tool=callgrind`; oha sends 200 unmeasured requests
# (connections, pools, the first timers), the counters are zeroed, oha
# sends REQUESTS at CONNECTIONS connections, and the proxy is stopped (its
# shutdown, counted too, is a few hundred thousand instructions in all).
# Instrumentation stays on throughout: turning it on mid-run stalls the
# process for a moment, and the full proxy's limit rightly sheds some of
# the queue that stall builds. Prints the user-space instructions per request of
# each proxy and, for the full proxy's extra cost, the TOP functions whose
# own (exclusive) instructions per request grew most, and the same summed
# by crate; then the atomic operations per request of each proxy, and the
# functions whose own atomic operations differ most (instructions count one
# each, but each costs tens of cycles, more when another core wrote its
# cache line last). With TOWER=1 (the default) the proxy built from
# tower's own layers (`--tower`) is profiled too, and its totals printed
# beside the other two. valgrind is installed with apt-get when missing. Everything is
# on 127.0.0.1, bounded by the request counts, and stopped at the end.
set -euo pipefail

REQUESTS=${REQUESTS:-4000}
CONNECTIONS=${CONNECTIONS:-8}
TOP=${TOP:-25}
TOWER=${TOWER:-1}
# KEEP=DIR keeps the profiles (bare.out, full.out, tower.out) in DIR.

source "$(dirname "$0")/valgrind.sh"
source "$(dirname "$0")/harness.sh"


CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release --quiet --example proxy --target-dir target/callgrind
profiled=target/callgrind/release/examples/proxy

upstream=127.0.0.1:$(free_port)
start "$upstream" --upstream-server

# One proxy (bare or full) under callgrind; its profile in $work/MODE.out.
profile() {
    local mode=$1 flags=() addr
    addr=127.0.0.1:$(free_port)
    if [ "$mode" = bare ]; then flags=(--bare); fi
    if [ "$mode" = tower ]; then flags=(--tower); fi
    valgrind --tool=callgrind --collect-bus=yes --callgrind-out-file="$work/$mode.out" \
        "$profiled" --listen "$addr" --upstream "http://$upstream" "${flags[@]}" \
        >"$work/$mode.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    wait_port "$addr"
    oha --no-tui -n 200 -c "$CONNECTIONS" "http://$addr/" >/dev/null
    callgrind_control --zero "$pid" >/dev/null
    oha --no-tui --output-format json -n "$REQUESTS" -c "$CONNECTIONS" "http://$addr/" >"$work/$mode.json"
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    unset 'pids[-1]'
    python3 - "$work/$mode.json" <<'PY'
import json, sys
codes = json.load(open(sys.argv[1]))["statusCodeDistribution"]
if set(codes) != {"200"}:
    sys.exit(f"not every answer was 200: {codes}")
PY
}

profile bare
profile full
if [ "$TOWER" = 1 ]; then profile tower; fi

if [ -n "${KEEP:-}" ]; then cp "$work"/*.out "$KEEP"/; fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%Y-%m-%d)"
echo "valgrind $(valgrind --version), oha $(oha --version | awk '{print $2}'), $REQUESTS requests at $CONNECTIONS connections"
echo
python3 - "$work" "$REQUESTS" "$TOP" <<'PY'
import collections, os, re, subprocess, sys
work, requests, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with_tower = os.path.exists(f"{work}/tower.out")

def exclusive(mode, event="Ir"):
    """Own count of `event` per function, and the total, from
    callgrind_annotate: instructions (Ir) or atomic operations (Ge)."""
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100",
         f"--show={event}", f"--sort={event}", f"{work}/{mode}.out"],
        capture_output=True, text=True, check=True).stdout
    total = None
    costs = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$", line)
        if not m:
            continue
        n, name = int(m.group(1).replace(",", "")), m.group(2).strip()
        if name.startswith("PROGRAM TOTALS"):
            total = n
        else:
            # Drop the file part "path:function [binary]".
            name = re.sub(r"\s*\[[^\]]*\]$", "", name)
            name = name.split(":", 1)[1] if ":" in name and not name.startswith("0x") else name
            costs[name] += n
    return total, costs

def crate(name):
    name = re.sub(r"^<", "", name)
    m = re.match(r"([a-z_][a-z0-9_]*)::", name)
    return m.group(1) if m else "(other: libc, kernel entry, unknown)"

bare_total, bare = exclusive("bare")
full_total, full = exclusive("full")
tower_total = exclusive("tower")[0] if with_tower else None
# The frames running when the counters were zeroed (the worker threads'
# loops) are charged the whole run as their own: leave them out.
for name in list(set(bare) | set(full)):
    if bare[name] > bare_total / 2 or full[name] > full_total / 2:
        del bare[name], full[name]
print("| proxy | instructions per request |")
print("|---|---|")
print(f"| bare | {bare_total / requests:,.0f} |")
print(f"| full | {full_total / requests:,.0f} |")
print(f"| full − bare | {(full_total - bare_total) / requests:+,.0f} |")
if with_tower:
    print(f"| tower | {tower_total / requests:,.0f} |")
    print(f"| tower − bare | {(tower_total - bare_total) / requests:+,.0f} |")
    print(f"| full − tower | {(full_total - tower_total) / requests:+,.0f} |")
print()
by_crate = collections.Counter()
for name in set(bare) | set(full):
    by_crate[crate(name)] += full[name] - bare[name]
print("| crate | full − bare, instructions per request |")
print("|---|---|")
for name, n in sorted(by_crate.items(), key=lambda kv: -kv[1]):
    if abs(n) / requests >= 50:
        print(f"| `{name}` | {n / requests:+,.0f} |")
print()
print(f"| function (own instructions) | bare | full | full − bare |")
print("|---|---|---|---|")
grown = sorted(set(bare) | set(full), key=lambda k: -(full[k] - bare[k]))
for name in grown[:top]:
    short = name if len(name) <= 110 else name[:107] + "..."
    short = short.replace("|", "\\|")
    print(f"| `{short}` | {bare[name] / requests:,.0f} | {full[name] / requests:,.0f} | {(full[name] - bare[name]) / requests:+,.0f} |")

# Atomic operations (valgrind's "global bus events": instructions with a
# `lock` prefix, and `xchg`): one instruction each above, but tens of
# cycles each on the machine, and more when another core wrote the same
# cache line last.
bare_total, bare = exclusive("bare", "Ge")
full_total, full = exclusive("full", "Ge")
tower_total = exclusive("tower", "Ge")[0] if with_tower else None
for name in list(set(bare) | set(full)):
    if bare[name] > bare_total / 2 or full[name] > full_total / 2:
        del bare[name], full[name]
print()
print("| proxy | atomic operations per request |")
print("|---|---|")
print(f"| bare | {bare_total / requests:,.1f} |")
print(f"| full | {full_total / requests:,.1f} |")
print(f"| full − bare | {(full_total - bare_total) / requests:+,.1f} |")
if with_tower:
    print(f"| tower | {tower_total / requests:,.1f} |")
    print(f"| tower − bare | {(tower_total - bare_total) / requests:+,.1f} |")
    print(f"| full − tower | {(full_total - tower_total) / requests:+,.1f} |")
print()
print(f"| function (own atomic operations) | bare | full | full − bare |")
print("|---|---|---|---|")
moved = sorted(set(bare) | set(full), key=lambda k: -abs(full[k] - bare[k]))
for name in moved[:top]:
    if abs(full[name] - bare[name]) / requests < 0.5:
        break
    short = name if len(name) <= 110 else name[:107] + "..."
    short = short.replace("|", "\\|")
    print(f"| `{short}` | {bare[name] / requests:,.1f} | {full[name] / requests:,.1f} | {(full[name] - bare[name]) / requests:+,.1f} |")
PY
