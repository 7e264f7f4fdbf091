#!/usr/bin/env python3
"""Plots and tables from criterion's estimates, for BENCHMARKS.md.

    cargo bench -p tower-steady-benches --bench stack
    cargo bench -p tower-steady-benches --bench upstream -- upstream/scaling
    python3 benches/plot.py

Reads the medians criterion wrote under target/criterion (its
`new/estimates.json`), writes benches/plots/stack.svg (every stack, log
scale) and benches/plots/scaling.svg (Upstreams over 1 to 1000 endpoints),
and prints the Markdown tables of the stack medians and of the goals'
ratios. Python's standard library only; nothing is downloaded.
"""

import json
import math
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CRITERION = os.path.join(ROOT, "target", "criterion")
PLOTS = os.path.join(ROOT, "benches", "plots")

SIDES = ["client", "server"]
SHAPES = ["ready", "pending_once"]
LOADS = ["single", "contended"]
STACKS = {
    "client": ["none", "tower_builtin", "tower_resilience", "tower_steady_client"],
    "server": ["none", "tower_builtin", "tower_steady_server"],
}
LABELS = {
    "none": "no layer",
    "tower_builtin": "tower built-in",
    "tower_resilience": "tower-resilience",
    "tower_steady_client": "tower-steady client",
    "tower_steady_server": "tower-steady server",
}
COLOURS = {
    "none": "#9e9e9e",
    "tower_builtin": "#4e79a7",
    "tower_resilience": "#e15759",
    "tower_steady_client": "#59a14f",
    "tower_steady_server": "#59a14f",
}


def median_ns(group, bench):
    path = os.path.join(CRITERION, group, bench, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except FileNotFoundError:
        return None


def stack_medians():
    out = {}
    for side in SIDES:
        for shape in SHAPES:
            for load in LOADS:
                group = f"stack_{side}_{shape}_{load}"
                for stack in STACKS[side]:
                    out[(side, shape, load, stack)] = median_ns(group, stack)
    return out


def fmt(ns):
    if ns is None:
        return "–"
    if ns >= 1000:
        return f"{ns / 1000:.2f} µs"
    return f"{ns:.0f} ns"


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def stack_svg(m):
    rows = []
    for side in SIDES:
        for shape in SHAPES:
            for load in LOADS:
                title = f"{side}, {shape.replace('_', ' ')}, {load}"
                bars = [(s, m[(side, shape, load, s)]) for s in STACKS[side]]
                rows.append((title, [b for b in bars if b[1] is not None]))
    left, right, top, bar_h, gap = 190, 90, 40, 13, 14
    width = 760
    plot_w = width - left - right
    lo, hi = 1.0, 6.0  # log10 of 10 ns .. 1 ms
    height = top + sum(len(b) * bar_h + gap for _, b in rows) + 30

    def x(ns):
        v = min(max(math.log10(max(ns, 1.0)), lo), hi)
        return left + (v - lo) / (hi - lo) * plot_w

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="13" font-weight="bold">'
        "Time per request through each stack (criterion median, log scale)</text>",
    ]
    for e in range(int(lo), int(hi) + 1):
        gx = x(10**e)
        label = ["1 ns", "10 ns", "100 ns", "1 µs", "10 µs", "100 µs", "1 ms"][e]
        out.append(f'<line x1="{gx:.1f}" y1="{top - 8}" x2="{gx:.1f}" y2="{height - 24}" stroke="#ddd"/>')
        out.append(f'<text x="{gx:.1f}" y="{height - 10}" text-anchor="middle" fill="#555">{label}</text>')
    y = top
    for title, bars in rows:
        out.append(f'<text x="{left - 8}" y="{y + bar_h}" text-anchor="end" font-weight="bold">{esc(title)}</text>')
        for stack, ns in bars:
            w = x(ns) - left
            out.append(
                f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{COLOURS[stack]}"/>'
            )
            out.append(
                f'<text x="{left + w + 4:.1f}" y="{y + bar_h - 3}">{esc(LABELS[stack])}: {fmt(ns)}</text>'
            )
            y += bar_h
        y += gap
    out.append("</svg>")
    return "\n".join(out)


def scaling_svg(points):
    width, height = 520, 300
    left, right, top, bottom = 60, 20, 40, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    top_ns = max(ns for _, ns in points) * 1.3
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="13" font-weight="bold">'
        "Upstreams: time per request by number of endpoints</text>",
    ]
    step = 50 if top_ns < 400 else 100
    tick = 0
    while tick <= top_ns:
        gy = top + plot_h - tick / top_ns * plot_h
        out.append(f'<line x1="{left}" y1="{gy:.1f}" x2="{width - right}" y2="{gy:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end" fill="#555">{tick} ns</text>')
        tick += step
    slot = plot_w / len(points)
    for i, (n, ns) in enumerate(points):
        h = ns / top_ns * plot_h
        bx = left + i * slot + slot * 0.2
        out.append(
            f'<rect x="{bx:.1f}" y="{top + plot_h - h:.1f}" width="{slot * 0.6:.1f}" '
            f'height="{h:.1f}" fill="#59a14f"/>'
        )
        out.append(
            f'<text x="{bx + slot * 0.3:.1f}" y="{top + plot_h - h - 5:.1f}" text-anchor="middle">{ns:.0f} ns</text>'
        )
        out.append(
            f'<text x="{bx + slot * 0.3:.1f}" y="{height - bottom + 16}" text-anchor="middle">{n} endpoints</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def main():
    if not os.path.isdir(CRITERION):
        sys.exit(f"no criterion results in {CRITERION}: run the benchmarks first")
    os.makedirs(PLOTS, exist_ok=True)
    m = stack_medians()
    if any(v is not None for v in m.values()):
        with open(os.path.join(PLOTS, "stack.svg"), "w") as f:
            f.write(stack_svg(m) + "\n")
        print("| stack | ready, single | ready, contended | pending once, single | pending once, contended |")
        print("|---|---|---|---|---|")
        for side in SIDES:
            for stack in STACKS[side]:
                cells = [fmt(m[(side, shape, load, stack)]) for shape in SHAPES for load in LOADS]
                label = LABELS[stack] + (" (server inner)" if side == "server" and stack == "none" else "")
                print(f"| {label} | " + " | ".join(cells) + " |")
        print()
        print("| ratio | ready | pending once |")
        print("|---|---|---|")

        def ratio(a, b, shape, side="client", load_a="single", load_b="single"):
            x, y = m[(side, shape, load_a, a)], m[(side, shape, load_b, b)]
            return f"{x / y:.3f}" if x and y else "–"

        for title, args in [
            ("client ÷ tower built-in, single", ("tower_steady_client", "tower_builtin")),
            ("client ÷ tower-resilience, single", ("tower_steady_client", "tower_resilience")),
        ]:
            print(f"| {title} | {ratio(*args, 'ready')} | {ratio(*args, 'pending_once')} |")
        c = "tower_steady_client"
        print(
            f"| client, contended ÷ single | {ratio(c, c, 'ready', load_a='contended')} "
            f"| {ratio(c, c, 'pending_once', load_a='contended')} |"
        )
        s = ("tower_steady_server", "tower_builtin")
        print(f"| server ÷ tower built-in, single | {ratio(*s, 'ready', side='server')} | {ratio(*s, 'pending_once', side='server')} |")
    points = [(n, median_ns("upstream_scaling", str(n))) for n in (1, 10, 100, 1000)]
    points = [(n, ns) for n, ns in points if ns is not None]
    if points:
        with open(os.path.join(PLOTS, "scaling.svg"), "w") as f:
            f.write(scaling_svg(points) + "\n")
        print()
        print("| endpoints | " + " | ".join(str(n) for n, _ in points) + " |")
        print("|---|" + "---|" * len(points))
        print("| median | " + " | ".join(fmt(ns) for _, ns in points) + " |")
    print(f"\nplots written to {os.path.relpath(PLOTS, ROOT)}/", file=sys.stderr)


if __name__ == "__main__":
    main()
