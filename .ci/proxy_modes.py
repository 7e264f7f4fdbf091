#!/usr/bin/env python3
"""The proxy example's three proxies, each in front of one upstream.

    python3 .ci/proxy_modes.py target/debug/examples/proxy

Starts `proxy --upstream-server` and, for each of the resilient proxy (on
one multi-thread runtime, and on two current-thread runtimes sharing its
presets: `--threads 2`), the bare one (`--bare`) and the one built from
tower's own layers (`--tower`), a proxy in front of it; sends each proxy
20 requests and checks that every answer is the upstream's `200` and its
body. Then stops the upstream and
checks what each proxy answers a request now: the bare proxy and tower's
`502`, the resilient ones `503` with `Retry-After`. Loopback only; every
process is stopped at the end, and every wait is bounded.
"""

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

PROXY = sys.argv[1]
PROCESSES = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args):
    """Starts `proxy --listen ADDR ARGS...`; returns ADDR once it answers."""
    addr = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [PROXY, "--listen", addr, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    PROCESSES.append(process)
    host, port = addr.split(":")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), 1).close()
            return addr, process
        except OSError:
            if process.poll() is not None:
                sys.exit(f"proxy {' '.join(args)} exited with {process.returncode}")
            time.sleep(0.1)
    sys.exit(f"nothing answers on {addr}")


def get(addr, path="/"):
    """The status, headers and body of GET http://ADDR/PATH."""
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=20) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def main():
    upstream, upstream_process = start("--upstream-server")
    modes = {
        "resilient": [],
        "resilient --threads 2": ["--threads", "2"],
        "bare": ["--bare"],
        "tower": ["--tower"],
    }
    proxies = {
        name: start("--upstream", f"http://{upstream}", *flags)[0]
        for name, flags in modes.items()
    }
    for name, addr in proxies.items():
        for i in range(20):
            status, _, body = get(addr, f"/item/{i}?q={i}")
            if status != 200 or not body.startswith(b"hello from replica"):
                sys.exit(f"{name}: request {i} answered {status} {body[:80]!r}")
        print(f"{name}: 20 of 20 answered 200 by the upstream")
    upstream_process.terminate()
    upstream_process.wait(timeout=10)
    expected = {"resilient": 503, "resilient --threads 2": 503, "bare": 502, "tower": 502}
    for name, addr in proxies.items():
        status, headers, _ = get(addr, "/after")
        if status != expected[name]:
            sys.exit(f"{name}: with the upstream down, answered {status}, not {expected[name]}")
        if expected[name] == 503 and headers.get("Retry-After") is None:
            sys.exit(f"{name}: a 503 without Retry-After")
        print(f"{name}: with the upstream down, {status}")


try:
    main()
finally:
    for process in PROCESSES:
        if process.poll() is None:
            process.terminate()
    for process in PROCESSES:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
