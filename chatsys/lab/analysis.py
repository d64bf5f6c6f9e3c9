"""One run directory, loaded and derived once for the plots, the verdict and the report.

``run.json`` says what ran (scenario, topology, source of the metrics, start and end);
``metrics.jsonl`` holds the samples; ``locust_*.csv`` what the users saw. Windows for histogram
quantiles are about a fortieth of the run (at least 2 s), so a short run still has several.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatsys.lab.bottleneck import Rule, Verdict, Window, decide
from chatsys.lab.locust_csv import LocustData
from chatsys.lab.samples import HOST, Samples, read_jsonl
from chatsys.lab.series import (
    Points,
    cpu_cores,
    gauge,
    histogram_windows,
    host_busy,
    peak,
    value_at,
    window_edges,
)


@dataclass
class RunData:
    path: Path
    meta: dict[str, Any]
    samples: Samples
    locust: LocustData
    t0: float
    t1: float
    edges: list[float]
    cpu: dict[str, Points]
    rss: dict[str, Points]
    host: Points
    cores: int
    grpc_p99: dict[str, list[Window]]  # module → p99 windows over its own unary methods
    grpc_methods: dict[str, dict[str, list[Window]]]  # module → method → p99 windows
    ack_p99: list[Window]
    connect_p99: list[Window]
    rule: Rule
    verdict: Verdict
    evidence: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.meta.get("label") or self.path.name)

    def rel(self, t: float) -> float:
        return t - self.t0

    def users_at(self, t: float) -> int:
        rows = [(r.t, float(r.users)) for r in self.locust.aggregated()]
        return int(value_at(rows, t) or 0)


def _span(meta: dict[str, Any], samples: Samples, locust: LocustData) -> tuple[float, float]:
    """The seconds the load ran: from Locust's first history row to its run time, at most.

    Locust's start-up before its first row and its teardown after the run time (every user
    leaving at once) are not the load under study, so they stay out of windows and the rule.
    """
    rows = locust.history
    if rows:
        start, last = rows[0].t, rows[-1].t
        run_time = float(meta.get("run_time") or 0)
        end = min(last, start + run_time) if run_time > 0 else last
        return start, max(end, start + 1.0)
    begin, finish = meta.get("load_started"), meta.get("load_ended")
    if begin and finish and finish > begin:
        return float(begin), float(finish)
    span = samples.span()
    return span if span else (0.0, 1.0)


def _clip(points: Points, t0: float, t1: float) -> Points:
    return [(t, v) for t, v in points if t0 <= t <= t1]


def load(run_dir: Path, rule: Rule | None = None) -> RunData:
    """Read and derive everything the report needs from ``run_dir``."""
    rule = rule or Rule()
    meta_path = run_dir / "run.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    samples = Samples(read_jsonl(run_dir / "metrics.jsonl"))
    locust = LocustData.load(run_dir)
    t0, t1 = _span(meta, samples, locust)
    width = max(2.0, round((t1 - t0) / 40))
    edges = window_edges(t0, t1, width)
    cpu = cpu_cores(samples)
    rss = {t: p for t, p in gauge(samples, "process_resident_memory_bytes").items()
           if samples.modules.get(t) != HOST}
    host, cores = host_busy(samples)
    grpc_p99: dict[str, list[Window]] = {}
    grpc_methods: dict[str, dict[str, list[Window]]] = {}
    for module in ("A", "B"):
        own = {"A": ("chatsys.users", "chatsys.chat"), "B": ("chatsys.files",)}[module]

        def mine(labels: dict[str, str], own: tuple[str, ...] = own) -> bool:
            # Health checks and reflection are not the module's work, and a stream's "handling
            # time" is its lifetime: the module's own unary calls only.
            return (labels.get("grpc_service", "").startswith(own)
                    and labels.get("grpc_type") == "unary")

        grpc_methods[module] = histogram_windows(
            samples, "grpc_server_handling_seconds", edges, 0.99, module=module,
            group_by="grpc_method", keep=mine)
        grpc_p99[module] = histogram_windows(
            samples, "grpc_server_handling_seconds", edges, 0.99, module=module,
            keep=mine).get("all", [])
    ack = histogram_windows(samples, "chatsys_message_ack_seconds", edges, 0.99, module="P")
    connect = histogram_windows(samples, "chatsys_ws_connect_seconds", edges, 0.99, module="P")
    calls_to_a = histogram_windows(
        samples, "grpc_client_handling_seconds", edges, 0.99, module="P",
        keep=lambda lb: (lb.get("grpc_service", "").startswith(("chatsys.users", "chatsys.chat"))
                         and lb.get("grpc_type") == "unary")).get("all", [])
    in_load = {t: _clip(p, t0, t1) for t, p in cpu.items()}
    verdict = decide(in_load, samples.modules, t0=t0, host=_clip(host, t0, t1), cores=cores,
                     grpc_p99=grpc_p99, ack_p99=ack.get("all", []),
                     a_from_gateway=calls_to_a, rule=rule)
    data = RunData(run_dir, meta, samples, locust, t0, t1, edges, cpu, rss, host, cores,
                   grpc_p99, grpc_methods, ack.get("all", []), connect.get("all", []), rule,
                   verdict)
    data.evidence = supporting_evidence(data)
    return data


def _fmt_ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def _first_last(windows: list[Window]) -> tuple[Window, Window] | None:
    busy = [w for w in windows if w[1] is not None and w[2] > 0]
    return (busy[0], busy[-1]) if len(busy) >= 2 else None


def supporting_evidence(data: RunData) -> list[str]:
    """Facts from the run that back (or weaken) the verdict, each with its number."""
    out: list[str] = []
    for load in data.verdict.loads:
        crossed = (f", over {data.rule.cpu_threshold:.2f} from {load.saturated_at:.0f} s"
                   if load.saturated_at is not None else "")
        out.append(f"CPU {load.module}: busiest process {load.busiest} peaked at "
                   f"{load.peak:.2f} cores ({load.replicas} process(es)){crossed}.")
    connections = {t: peak(p) for t, p in gauge(data.samples, "chatsys_ws_connections").items()}
    if connections:
        out.append("Connections (peak per gateway): " + ", ".join(
            f"{t} {v:.0f}" for t, v in sorted(connections.items())) + ".")
    if data.cores and data.host:
        busiest = max(v for _, v in data.host)
        ours = max((sum(value_at(p, t) or 0.0 for p in data.cpu.values()) for t, _ in data.host),
                   default=0.0)
        note = ""
        if busiest >= data.rule.machine_threshold * data.cores and ours < busiest / 2:
            note = (" — mostly by processes outside this run (a shared machine): every "
                    "latency here includes waiting for a core")
        out.append(f"Machine: {data.cores} cores, at most {busiest:.2f} busy "
                   f"({busiest / data.cores:.0%}); this run's processes used at most "
                   f"{ours:.2f}{note}.")
    for module, windows in data.grpc_p99.items():
        pair = _first_last(windows)
        if pair:
            (t_a, q_a, _), (t_b, q_b, _) = pair
            t_w, q_w, _ = max((w for w in windows if w[1] is not None), key=lambda w: w[1] or 0)
            out.append(f"gRPC {module}: server p99 {_fmt_ms(q_a)} at {data.rel(t_a):.0f} s "
                       f"({data.users_at(t_a)} users) → {_fmt_ms(q_b)} at {data.rel(t_b):.0f} s "
                       f"({data.users_at(t_b)} users); worst {_fmt_ms(q_w)} at "
                       f"{data.rel(t_w):.0f} s ({data.users_at(t_w)} users).")
    pair = _first_last(data.ack_p99)
    if pair:
        (t_a, q_a, _), (t_b, q_b, _) = pair
        t_w, q_w, _ = max((w for w in data.ack_p99 if w[1] is not None), key=lambda w: w[1] or 0)
        out.append(f"Ack latency (gateway): p99 {_fmt_ms(q_a)} at {data.users_at(t_a)} users → "
                   f"{_fmt_ms(q_b)} at {data.users_at(t_b)} users; worst {_fmt_ms(q_w)} at "
                   f"{data.rel(t_w):.0f} s ({data.users_at(t_w)} users).")
    onset = data.locust.failure_onset()
    if not data.locust.history:
        out.append("Failures: unknown (Locust wrote no history).")
    elif onset is None:
        out.append("Failures: none.")
    else:
        top = data.locust.failures[0] if data.locust.failures else None
        cause = f" — most frequent: {top.name}: {top.error} ×{top.occurrences}" if top else ""
        out.append(f"Failures: first at {data.rel(onset.t):.0f} s with {onset.users} users"
                   f"{cause}.")
    by_users: dict[int, float] = {}
    for row in data.locust.aggregated():
        if row.users > 0:
            by_users[row.users] = max(by_users.get(row.users, 0.0), row.rps)
    if by_users:
        levels = sorted(by_users)
        shown = ", ".join(f"{by_users[u]:.1f} at {u}" for u in levels[:: max(1, len(levels) // 6)])
        out.append(f"Throughput (best second, RPS at users): {shown}; "
                   f"{by_users[levels[-1]] / levels[-1]:.2f} RPS per user at {levels[-1]}.")
    return out
