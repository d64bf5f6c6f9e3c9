"""The report's PNG plots (matplotlib, Agg backend: no display needed, safe in CI).

Every plot's x axis is seconds since the load started, so the Locust view, the resource view and
the gRPC view of one run line up. Figures are small (72 dpi) to keep a committed report light.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after use("Agg"): the backend must be chosen first
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from chatsys.lab.analysis import RunData
from chatsys.lab.elastic import read_hpa
from chatsys.lab.locust_csv import AGGREGATED

DPI = 72
MIB = 1024 * 1024


def short(label: str) -> str:
    """``WS /ws/chat/send_text`` → ``send_text``; ``POST /api/files`` → ``upload``."""
    if label.endswith("/api/files"):
        return "upload"
    return label.rsplit("/", 1)[-1]


def _save(fig: Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path.name


def _finish(ax: Axes, ylabel: str, title: str) -> None:
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", ncol=2)


def locust_over_time(data: RunData, out: Path, prefix: str = "") -> str | None:
    rows = data.locust.history
    if not rows:
        return None
    fig, (lat, rps, fail) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    by_op: dict[str, list] = defaultdict(list)
    for row in rows:
        by_op[row.label].append(row)
    for label, op_rows in sorted(by_op.items()):
        xs = [data.rel(r.t) for r in op_rows]
        if label != AGGREGATED:
            p99 = [(x, r.p99) for x, r in zip(xs, op_rows, strict=True) if r.p99 is not None]
            p50 = [(x, r.p50) for x, r in zip(xs, op_rows, strict=True) if r.p50 is not None]
            if p99:
                line = lat.plot(*zip(*p99, strict=True), label=f"{short(label)} p99")[0]
                if p50:
                    lat.plot(*zip(*p50, strict=True), ls=":", color=line.get_color(),
                             label=f"{short(label)} p50")
        style = {"color": "black", "lw": 2} if label == AGGREGATED else {}
        rps.plot(xs, [r.rps for r in op_rows], label=short(label), **style)
        fail.plot(xs, [r.fps for r in op_rows], label=short(label), **style)
    lat.set_yscale("log")
    _finish(lat, "ms (log)", "Latency per operation (Locust, 10 s sliding window)")
    _finish(rps, "requests/s", "Throughput per operation")
    users = rps.twinx()
    agg = data.locust.aggregated()
    users.fill_between([data.rel(r.t) for r in agg], [r.users for r in agg], alpha=0.12,
                       color="grey", step="post")
    users.set_ylabel("users (shaded)")
    _finish(fail, "failures/s", "Failures per operation")
    fail.set_xlabel("seconds since the load started")
    return _save(fig, out / f"{prefix}locust_time.png")


def locust_vs_users(data: RunData, out: Path, prefix: str = "") -> str | None:
    rows = [r for r in data.locust.history if r.users > 0]
    if not rows:
        return None
    fig, (lat, rps) = plt.subplots(1, 2, figsize=(10, 4))
    grouped: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[row.label][row.users].append(row)
    for label, by_users in sorted(grouped.items()):
        users = sorted(by_users)
        p99 = [(u, max(r.p99 for r in by_users[u] if r.p99 is not None)) for u in users
               if any(r.p99 is not None for r in by_users[u])]
        if p99 and label != AGGREGATED:
            lat.plot(*zip(*p99, strict=True), marker="o", ms=3, label=short(label))
        style = {"color": "black", "lw": 2} if label == AGGREGATED else {}
        rps.plot(users, [max(r.rps for r in by_users[u]) for u in users], marker="o", ms=3,
                 label=short(label), **style)
    lat.set_yscale("log")
    _finish(lat, "p99 ms (log), worst second", "Latency against users")
    _finish(rps, "requests/s, best second", "Throughput against users")
    for ax in (lat, rps):
        ax.set_xlabel("users")
    return _save(fig, out / f"{prefix}locust_users.png")


def resources(data: RunData, out: Path, prefix: str = "") -> str | None:
    if not data.cpu and not data.rss:
        return None
    fig, (cpu, mem) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    def in_load(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        # Locust's start-up and teardown (every user leaving at once) are not the load.
        return [(t, v) for t, v in points if data.t0 - 1 <= t <= data.t1 + 1]

    for target in sorted(data.cpu):
        points = in_load(data.cpu[target])
        cpu.plot([data.rel(t) for t, _ in points], [v for _, v in points], label=target)
    if data.host and data.cores:
        host = in_load(data.host)
        cpu.plot([data.rel(t) for t, _ in host], [v for _, v in host], ls="--",
                 color="grey", label=f"machine ({data.cores} cores)")
    cpu.axhline(data.rule.cpu_threshold, color="red", ls=":", lw=1,
                label=f"saturation {data.rule.cpu_threshold:.2f}")
    _finish(cpu, "cores", "CPU per process: rate(process_cpu_seconds_total)")
    for target in sorted(data.rss):
        points = in_load(data.rss[target])
        mem.plot([data.rel(t) for t, _ in points], [v / MIB for _, v in points], label=target)
    _finish(mem, "MiB", "Memory per process: process_resident_memory_bytes")
    mem.set_xlabel("seconds since the load started")
    return _save(fig, out / f"{prefix}resources.png")


def server_latency(data: RunData, out: Path, prefix: str = "") -> str | None:
    methods = {(m, name): w for m, by in data.grpc_methods.items() for name, w in by.items()}
    if not methods and not data.ack_p99:
        return None
    fig, (grpc, gw) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for (module, method), windows in sorted(methods.items()):
        pts = [(data.rel(t), q * 1000) for t, q, _ in windows if q is not None]
        if pts:
            grpc.plot(*zip(*pts, strict=True), marker=".", label=f"{module} {method}")
    grpc.set_yscale("log")
    _finish(grpc, "p99 ms (log)", "gRPC server p99 per method (grpc_server_handling_seconds)")
    for name, windows in (("ack", data.ack_p99), ("connect", data.connect_p99)):
        pts = [(data.rel(t), q * 1000) for t, q, _ in windows if q is not None]
        if pts:
            gw.plot(*zip(*pts, strict=True), marker=".", label=f"gateway {name} p99")
    gw.axhline(data.rule.latency_threshold * 1000, color="red", ls=":", lw=1,
               label=f"threshold {data.rule.latency_threshold * 1000:.0f} ms")
    gw.set_yscale("log")
    _finish(gw, "p99 ms (log)",
            "Gateway: chatsys_message_ack_seconds, chatsys_ws_connect_seconds")
    gw.set_xlabel("seconds since the load started")
    return _save(fig, out / f"{prefix}server_latency.png")


CONNECT = "WS /ws/chat/connect"
RECONNECT = "WS /ws/chat/reconnect"  # after a 1001: what a scale-down costs its clients


def replicas(data: RunData, out: Path, prefix: str = "") -> str | None:
    """Gateways over time under the local HPA (what it decided dotted), above connect latency:
    the HPA panel of a Grafana dashboard beside what the users felt."""
    records = read_hpa(data.path)
    changes = [(r["time"], r["replicas"]) for r in records if r.get("event") == "replicas"]
    if not changes:
        return None
    changes.append((max(data.t1, changes[-1][0]), changes[-1][1]))
    desired = [(r["time"], r["desired"]) for r in records
               if r.get("event") == "decision" and r["time"] <= changes[-1][0]]
    fig, (scale, lat) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    scale.step([data.rel(t) for t, _ in changes], [n for _, n in changes], where="post",
               lw=2, label="gateways running")
    if desired:
        scale.step([data.rel(t) for t, _ in desired], [n for _, n in desired], where="post",
                   ls=":", label="desired (HPA decision)")
    spec = data.meta.get("autoscale") or {}
    for bound in ("min_replicas", "max_replicas"):
        if bound in spec:
            scale.axhline(spec[bound], color="grey", ls="--", lw=0.8)
    scale.set_ylim(bottom=0)
    _finish(scale, "replicas", "Gateway replicas (local HPA; dashed: min and max)")
    for label, quantiles in ((CONNECT, ("p99", "p50")), (RECONNECT, ("p99",))):
        rows = [r for r in data.locust.history if r.label == label]
        for name in quantiles:
            pts = [(data.rel(r.t), getattr(r, name)) for r in rows
                   if getattr(r, name) is not None]
            if pts:
                lat.plot(*zip(*pts, strict=True), label=f"{short(label)} {name} (Locust)")
    pts = [(data.rel(t), q * 1000) for t, q, _ in data.connect_p99 if q is not None]
    if pts:
        lat.plot(*zip(*pts, strict=True), marker=".", label="connect p99 (gateways)")
    if lat.lines:
        lat.set_yscale("log")
    _finish(lat, "ms (log)", "Connect latency (and reconnects after a 1001)")
    lat.set_xlabel("seconds since the load started")
    return _save(fig, out / f"{prefix}replicas.png")


def comparison(runs: Sequence[RunData], out: Path, operations: Sequence[str]) -> str | None:
    """Side by side: each operation's mean and p99, and each module's CPU peak, per run."""
    if len(runs) < 2:
        return None
    fig, (lat, cpu) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(runs)
    modules = ("P", "A", "B", "Locust")
    for i, data in enumerate(runs):
        stats = [data.locust.stat(op) for op in operations]
        xs = [j + i * width for j in range(len(operations))]
        bars = lat.bar(xs, [s.p99 or 0 if s else 0 for s in stats], width, label=f"{data.name} p99")
        lat.bar(xs, [s.mean or 0 if s else 0 for s in stats], width * 0.5, color="white",
                edgecolor=bars.patches[0].get_facecolor(), hatch="////",
                label=f"{data.name} mean")
        peaks = {load.module: load.peak for load in data.verdict.loads}
        cpu.bar([j + i * width for j in range(len(modules))],
                [peaks.get(m, 0.0) for m in modules], width, label=data.name)
    lat.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(operations))],
                   [short(op) for op in operations])
    cpu.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(modules))], modules)
    cpu.axhline(runs[0].rule.cpu_threshold, color="red", ls=":", lw=1)
    _finish(lat, "ms", "Latency per operation (Locust, whole run)")
    _finish(cpu, "cores", "CPU peak of each module's busiest process")
    return _save(fig, out / "comparison.png")


def all_plots(data: RunData, out: Path, prefix: str = "") -> dict[str, str]:
    """Every plot that has data, by section name → file name (relative to ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    made = {"locust_time": locust_over_time(data, out, prefix),
            "replicas": replicas(data, out, prefix),
            "locust_users": locust_vs_users(data, out, prefix),
            "resources": resources(data, out, prefix),
            "server_latency": server_latency(data, out, prefix)}
    return {k: v for k, v in made.items() if v}
