#!/usr/bin/env python3
"""Draws BENCHMARKS.md's charts from the harness's curves (one CSV per series).

    benches/plot.py target/bench-curves docs/benchmarks

Each chart is drawn only when its series is there: a run of some scenarios draws some charts.
"""
import csv
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0].keys() if rows else [])}


def medians(xs, ys):
    """The median of ys for each distinct x, in x order."""
    by_x = {}
    for x, y in zip(xs, ys):
        by_x.setdefault(x, []).append(y)
    out = []
    for x in sorted(by_x):
        v = sorted(by_x[x])
        n = len(v)
        out.append((x, v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2))
    return [p[0] for p in out], [p[1] for p in out]


def save(fig, out, name):
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def concurrency(data, out):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for who, style in [("callrelay", "o-"), ("baseline", "s--")]:
        if who in data and not all(math.isnan(v) for v in data[who]):
            ax.plot(data["concurrency"], data[who], style, label=who)
    ax.set_xscale("log", base=2)
    ax.set_xticks(data["concurrency"], [str(int(c)) for c in data["concurrency"]])
    ax.set_xlabel("concurrent connections")
    ax.set_ylabel("webhooks answered per second")
    ax.set_title("Lookup (404): throughput against concurrency")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, out, "lookup-concurrency")


def distribution(data, out, name, title):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for who in data:
        if who == "percentile":
            continue
        ax.plot(data[who], data["percentile"], label=who)
    ax.set_xscale("log")
    ax.set_xlabel("answer latency (ms, log scale)")
    ax.set_ylabel("percentile of webhooks")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    save(fig, out, name)


def rss(data, out):
    xs, ys = medians(data["sockets"], data["rss_mib"])
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(xs, ys, "o-", label="callrelay (median of runs)")
    ax.set_xlabel("open, idle WebSocket connections")
    ax.set_ylabel("replica resident memory (MiB)")
    ax.set_title("Resident memory against open sockets")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, out, "rss-sockets")


def memory(data, out):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(data["bindings"], data["bytes"], "o-", label="callrelay 0.2")
    ax.plot(data["bindings"], data["before"], "s--", label="layout before 0.2")
    ax.axhline(600, color="grey", linestyle=":", label="600 bytes")
    ax.set_xscale("log")
    ax.set_xlabel("FCM bindings registered (152-character tokens)")
    ax.set_ylabel("Redis used_memory per binding (bytes)")
    ax.set_title("Redis memory per binding")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    save(fig, out, "memory-per-binding")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    charts = {
        "lookup-concurrency": concurrency,
        "latency-delivery": lambda d, o: distribution(
            d, o, "latency-delivery", "Delivery to a WebSocket: answer latency, c=32"
        ),
        "latency-cross-replica": lambda d, o: distribution(
            d, o, "latency-cross-replica", "Cross-replica delivery: answer latency, c=32"
        ),
        "rss-sockets": rss,
        "memory": memory,
    }
    drawn = 0
    for name, draw in charts.items():
        path = src / f"{name}.csv"
        if path.exists():
            data = read(path)
            if data:
                draw(data, out)
                drawn += 1
    print(f"{drawn} charts")


if __name__ == "__main__":
    main()
