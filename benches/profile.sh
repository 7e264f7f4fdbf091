#!/usr/bin/env bash
# Where the full proxy's CPU goes, in real time: the bare and the full proxy
# sampled with `perf record` at one fixed rate, and each function's CPU per
# answered request compared.
#
#   bash benches/profile.sh     # RATE=10000 DURATION=5s CONNECTIONS=32 THREADS=2 TOP=30 COPIES=4000
#
# callgrind (benches/callgrind.sh) counts instructions, the same on every
# run; this script measures time, which also sees what instructions do not
# show: atomic operations, cache misses, clock reads, and how many bytes
# each copy moves. Both proxies are driven at the same RATE (below what
# either can serve), so both see the same arrivals and neither batches more
# work per wake-up than the other: the difference in CPU per request is
# what the full stack's code costs. THREADS=N runs both with `--threads N`
# (N single-threaded runtimes); THREADS= (empty) runs one multi-threaded
# runtime, where the stacks' shared state moves between the cores.
#
# Prints, in nanoseconds of CPU per answered request: each proxy's total by
# binary (the proxy, the kernel, libc), the TOP functions whose time grew
# most, and the sum over the crate's own functions. Then, with COPIES
# requests (0 to skip), the copies: a uprobe on libc's memmove counts the
# calls and bytes each proxy copies per request, the sizes copied most, and
# the full proxy's functions that copy most.
# perf is installed with apt-get (Debian's `linux-perf`) when missing; the
# uprobe needs root. Everything is on 127.0.0.1, bounded in time and in
# requests, and stopped at the end.
set -euo pipefail

RATE=${RATE:-10000}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS-2}
TOP=${TOP:-30}
COPIES=${COPIES:-4000}
# Samples a second; each sample is 1/FREQ s of CPU.
FREQ=2999

if ! command -v perf >/dev/null; then
    as_root=()
    if [ "$(id -u)" != 0 ]; then as_root=(sudo); fi
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
fi

source "$(dirname "$0")/harness.sh"

upstream=127.0.0.1:$(free_port)
proxy=127.0.0.1:$(free_port)

# Starts the proxy MODE (bare or full), warmed up; its pid in $started.
start_proxy() {
    local flags=()
    if [ "$1" = bare ]; then flags+=(--bare); fi
    if [ -n "$THREADS" ]; then flags+=(--threads "$THREADS"); fi
    start "$proxy" --upstream "http://$upstream" "${flags[@]}"
    oha --no-tui -z 2s -c "$CONNECTIONS" "http://$proxy/" >/dev/null
}

# Runs oha with ARGS against the proxy while `perf record PERF...` samples
# process PID; prints the number of answered requests.
recorded() {
    local pid=$1 out=$2
    shift 2
    local perf_args=() oha_args=()
    while [ "$1" != -- ]; do perf_args+=("$1"); shift; done
    shift
    oha_args=("$@")
    perf record "${perf_args[@]}" -o "$out" -p "$pid" 2>/dev/null &
    local recorder=$!
    sleep 0.5
    oha --no-tui --output-format json "${oha_args[@]}" "http://$proxy/" >"$work/oha.json"
    kill -INT "$recorder"
    wait "$recorder" 2>/dev/null || true
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(sum(r["statusCodeDistribution"].values()))' "$work/oha.json"
}

start "$upstream" --upstream-server
for mode in bare full; do
    start_proxy "$mode"
    recorded "$started" "$work/$mode.data" -F "$FREQ" -- -q "$RATE" -z "$DURATION" -c "$CONNECTIONS" >"$work/$mode.requests"
    perf report -i "$work/$mode.data" --no-children -n --sort dso,sym -q -g none -t '|' 2>/dev/null >"$work/$mode.report"
    stop_last
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%Y-%m-%d)"
runtime="one multi-threaded runtime"
if [ -n "$THREADS" ]; then runtime="--threads $THREADS"; fi
echo "$(perf --version), oha $(oha --version | awk '{print $2}'), $RATE requests/s for $DURATION at $CONNECTIONS connections, $runtime"
echo
python3 - "$work" "$FREQ" "$TOP" <<'PY'
import collections, sys
work, freq, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def load(mode):
    requests = int(open(f"{work}/{mode}.requests").read())
    by_sym, by_dso = collections.Counter(), collections.Counter()
    for line in open(f"{work}/{mode}.report"):
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 4 or not cols[1].isdigit():
            continue
        ns = int(cols[1]) * 1e9 / freq / requests
        sym = cols[3].split("] ", 1)[-1]
        by_sym[sym] += ns
        by_dso[cols[2]] += ns
    return requests, by_sym, by_dso

(bare_n, bare, bare_dso), (full_n, full, full_dso) = load("bare"), load("full")
print(f"| CPU ns per request | bare ({bare_n} requests) | full ({full_n} requests) | full − bare |")
print("|---|---|---|---|")
for dso in sorted(set(bare_dso) | set(full_dso), key=lambda d: -full_dso[d]):
    if max(bare_dso[dso], full_dso[dso]) >= 50:
        print(f"| `{dso}` | {bare_dso[dso]:,.0f} | {full_dso[dso]:,.0f} | {full_dso[dso] - bare_dso[dso]:+,.0f} |")
b, f = sum(bare_dso.values()), sum(full_dso.values())
print(f"| **total** | **{b:,.0f}** | **{f:,.0f}** | **{f - b:+,.0f}** (full ÷ bare {f / b:.2f}) |")
print()
crate = sum(ns for sym, ns in full.items() if "tower_steady" in sym)
print(f"The crate's own functions (a name with `tower_steady` in it, inlined code included): {crate:,.0f} ns per request.")
print()
print("| function | bare ns | full ns | full − bare |")
print("|---|---|---|---|")
grown = sorted(set(bare) | set(full), key=lambda s: -(full[s] - bare[s]))
for sym in grown[:top]:
    short = sym if len(sym) <= 110 else sym[:107] + "..."
    print(f"| `{short}` | {bare[sym]:,.0f} | {full[sym]:,.0f} | {full[sym] - bare[sym]:+,.0f} |")
PY

if [ "$COPIES" = 0 ]; then exit 0; fi
# The copies: libc's memmove (memcpy is the same code) as the profile named it.
libc=$(ldd "$bin" | awk '/libc\.so/ {print $3}')
copy=$(grep -ho '__mem\(move\|cpy\)_[a-z0-9_]*unaligned[a-z_]*' "$work/full.report" | head -1 || true)
# Each copy's length and return address (the word on the stack at entry),
# to say which of the proxy's functions made it.
if [ -z "$copy" ] || ! perf probe -q -x "$libc" -a "steady_copy=$copy len=%dx:u64 ret=+0(%sp):x64" 2>/dev/null; then
    echo
    echo "(no uprobe on libc's memmove here: run as root for the copies)"
    exit 0
fi
trap 'perf probe -q -d "probe_libc:steady_copy" 2>/dev/null || true; cleanup' EXIT
for mode in bare full; do
    start_proxy "$mode"
    # Where the binary is loaded, to turn return addresses into its own.
    grep -m1 "$(readlink -f "$bin")" "/proc/$started/maps" | cut -d- -f1 >"$work/$mode.base"
    recorded "$started" "$work/$mode.copies" -e probe_libc:steady_copy -- -n "$COPIES" -c 8 >"$work/$mode.copies.requests"
    perf script -i "$work/$mode.copies" 2>/dev/null |
        sed -n 's/.*len=\([0-9]*\) ret=0x\([0-9a-f]*\).*/\1 \2/p' >"$work/$mode.lens" || true
    stop_last
done
nm -C --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/' | sort >"$work/symbols"
echo
echo "Copies ($copy), $COPIES requests at 8 connections:"
echo
python3 - "$work" "$TOP" <<'PY'
import bisect, collections, sys
work, top = sys.argv[1], int(sys.argv[2])
# The proxy's functions by address (inlined code counts as its caller's).
starts, names = [], []
for line in open(f"{work}/symbols"):
    address, _, name = line.rstrip("\n").split(" ", 2)
    starts.append(int(address, 16))
    names.append(name)

def site(offset):
    i = bisect.bisect_right(starts, offset) - 1
    return names[i] if i >= 0 and offset >= 0 else "(outside the proxy: libc, the loader)"

rows = {}
for mode in ("bare", "full"):
    n = int(open(f"{work}/{mode}.copies.requests").read())
    base = int(open(f"{work}/{mode}.base").read() or "0", 16)
    sizes, sites, counts = collections.Counter(), collections.Counter(), collections.Counter()
    for line in open(f"{work}/{mode}.lens"):
        length, ret = line.split()
        length, where = int(length), site(int(ret, 16) - base - 1)
        sizes[length] += 1
        sites[where] += length
        counts[where] += 1
    rows[mode] = (n, sizes, sites, counts)
print("| proxy | copies per request | bytes per request | sizes copied most (bytes × copies per request) |")
print("|---|---|---|---|")
for mode, (n, sizes, _, _) in rows.items():
    calls, total = sum(sizes.values()), sum(k * v for k, v in sizes.items())
    most = sorted(sizes.items(), key=lambda kv: -kv[0] * kv[1])[:8]
    shown = ", ".join(f"{k} × {v / n:.1f}" for k, v in most)
    print(f"| {mode} | {calls / n:.1f} | {total / n:,.0f} | {shown} |")
print()
print("Where the full proxy copies most (the function the copy returns to):")
print()
print("| bytes per request | copies per request | function |")
print("|---|---|---|")
n, _, sites, counts = rows["full"]
for where, total in sites.most_common(top):
    short = where if len(where) <= 110 else where[:107] + "..."
    print(f"| {total / n:,.0f} | {counts[where] / n:.1f} | `{short}` |")
PY
