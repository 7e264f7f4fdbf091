# Shared by benches/proxy.sh and benches/scenarios.sh (sourced, not run):
# oha installed when missing, the proxy example built in release as $bin, a
# work folder $work, and every process started through `start` stopped at
# exit. Loopback only.

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

# Stops the process `start` started last.
stop_last() {
    local pid=${pids[-1]}
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    unset 'pids[-1]'
}

# Waits until something answers on ADDR (host:port).
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

# Starts `proxy --listen ADDR ARGS...` in the background (its standard
# output in $work/ADDR.out, its standard error in the file START_STDERR
# names when that is set), waits until ADDR answers, and leaves its pid in
# $started.
start() {
    local addr=$1
    shift
    "$bin" --listen "$addr" "$@" >>"$work/${addr//:/_}.out" 2>>"${START_STDERR:-/dev/stderr}" &
    started=$!
    pids+=("$started")
    wait_port "$addr"
}
