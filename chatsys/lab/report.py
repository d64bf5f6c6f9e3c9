"""``report.md``: what ran, what the users saw, what each module did, and the bottleneck.

One run gives one report; several runs (the seed's scenario B against C) give each run's
section plus a side-by-side table of deltas against the first run. The text is written from the
run's data only; the rule that names the bottleneck is printed with its thresholds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from chatsys.lab import analysis, plots
from chatsys.lab.analysis import RunData
from chatsys.lab.bottleneck import Rule
from chatsys.lab.elastic import read_hpa
from chatsys.lab.locust_csv import AGGREGATED, StatsRow
from chatsys.lab.samples import MODULE_NAMES

OPERATIONS = ("WS /ws/chat/connect", "WS /ws/chat/send_text", "POST /api/files",
              "WS /ws/chat/send_file", "WS /ws/chat/deliver")
CAPTIONS = {
    "locust_time": "What the users saw over time: latency (p99 solid, p50 dotted), throughput "
                   "with the user count shaded, and failures, per operation.",
    "replicas": "Gateway replicas under the local HPA (the decision dotted) above connect "
                "latency: a scale-up helps only the connections that arrive after it, and a "
                "scale-down makes its gateway's clients reconnect (1001, then since).",
    "locust_users": "The same against the number of users: where RPS stops growing with users "
                    "and latency climbs, the system is saturating.",
    "resources": "CPU (cores) and resident memory of every process; the red line is the "
                 "per-process saturation threshold of the rule below.",
    "server_latency": "Server-side latency: gRPC p99 per method on A and B, and the gateway's "
                      "own ack and connect p99.",
}


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _run_facts(data: RunData) -> list[str]:
    meta = data.meta
    topo = meta.get("topology") or {}
    where = (f"local topology: {topo.get('gateways', '?')} gateway(s), "
             f"{topo.get('a_replicas', '?')} A, {topo.get('b_replicas', '?')} B"
             f"{' (A on Redis)' if topo.get('redis') else ''}" if topo
             else f"external system at {meta.get('host', '?')}")
    source = meta.get("metrics_source", "scrape")
    source_text = ("each process's /metrics scraped every second" if source == "scrape"
                   else f"Prometheus query_range at {meta.get('prometheus', '?')}")
    lines = [
        f"- Scenario: **{meta.get('scenario', '?')}** — {meta.get('seed', '')}",
        f"- Load: {meta.get('users', '?')} users, spawn rate {meta.get('spawn_rate', '?')}/s, "
        f"run time {meta.get('run_time', '?')} s; load ran {data.t1 - data.t0:.0f} s",
        f"- System: {where}",
        f"- Metrics: {source_text}",
        f"- Locust exit code: {meta.get('locust_exit', '?')} (1 means some request failed)",
    ]
    lines += _autoscale_facts(data)
    if meta.get("interrupted"):
        lines.append("- **Interrupted** (Ctrl-C): the data below covers the run until then.")
    if meta.get("died"):
        lines.append("- **Exited during the run:** " + ", ".join(
            f"{name} (exit {code}, see logs/{name}.log)" for name, code in meta["died"].items()))
    if meta.get("error"):
        lines.append(f"- **Error:** {meta['error']}")
    return lines


def _autoscale_facts(data: RunData) -> list[str]:
    """The local HPA's policy, and each change of scale with the reason the HPA gave."""
    spec = data.meta.get("autoscale")
    if not spec:
        return []
    targets = ", ".join(f"{m['name']} {m['utilization']:g}% of {spec['cpu_request']:g} core"
                        if m["utilization"] is not None
                        else f"{m['name']} {m['average_value']:g} per gateway"
                        for m in spec["metrics"])
    steps = []
    for r in read_hpa(data.path):
        if r.get("event") != "replicas":
            continue
        if "reason" not in r:  # where it started
            steps.append(str(r["replicas"]))
            continue
        ratios = ", ".join(f"{name} {ratio:.2f}x target" for name, ratio in r["ratios"].items())
        steps.append(f"{r['replicas']} at {data.rel(r['time']):.0f} s ({ratios}; {r['reason']})")
    return [f"- Autoscaler: local HPA on {targets}; {spec['min_replicas']}–"
            f"{spec['max_replicas']} gateways, sync every {spec['sync_period']:g} s, "
            f"scale-down window {spec['scale_down']['window']:g} s",
            f"- Gateways: {' → '.join(steps) or 'no record'}"]


def _ops_table(data: RunData) -> list[str]:
    rows = [s for s in data.locust.stats if s.requests]
    if not rows:
        return ["No Locust statistics were written."]
    lines = ["| operation | requests | failures | mean ms | p50 ms | p95 ms | p99 ms | max ms | "
             "RPS |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sorted(rows, key=lambda r: (r.name == AGGREGATED, r.label)):
        lines.append(f"| {s.label} | {s.requests} | {s.failures} ({s.failure_ratio:.1%}) | "
                     f"{_ms(s.mean)} | {_ms(s.median)} | {_ms(s.p95)} | {_ms(s.p99)} | "
                     f"{_ms(s.max)} | {s.rps:.1f} |")
    if data.locust.failures:
        lines += ["", "| failure | occurrences |", "|---|---:|"]
        lines += [f"| {f.method} {f.name}: {f.error} | {f.occurrences} |"
                  for f in data.locust.failures[:8]]
    return lines


def rule_text(rule: Rule) -> list[str]:
    return [
        "How the module is named (the rule, applied to this run's samples): a chatsys process "
        "runs its Python code on one core at a time, so a process is **saturated** when its "
        f"CPU, averaged over {rule.smooth} consecutive samples, reaches "
        f"**{rule.cpu_threshold:.2f} cores**. A module is also saturated when its own latency "
        f"stays at **{rule.latency_threshold * 1000:.0f} ms** or more at p99 for "
        f"{max(1, rule.smooth - 1)} consecutive windows (A and B: "
        "gRPC server p99 over their own unary methods; the gateway: ack p99 while its own "
        "calls to A took under half of it at p99), or when the machine's cores are together "
        "at least "
        f"**{rule.machine_threshold:.0%}** busy, at least half by this run's processes (then "
        "the largest consumer at that moment is named). The bottleneck is the module of the "
        "**earliest** such event (ties: CPU, then "
        "latency, then machine); Locust is a module too. With no event, nothing saturated, "
        "and the module with the least CPU headroom is named as the nearest to saturation.",
    ]


def bottleneck_section(data: RunData) -> list[str]:
    verdict = data.verdict
    lines = ["## Bottleneck", "", verdict.summary, ""]
    if verdict.events:
        lines += ["| when (s) | module | signal | detail |", "|---:|---|---|---|"]
        lines += [f"| {e.at:.0f} | {e.module} | {e.kind} | {e.detail} |"
                  for e in verdict.events[:10]]
        lines.append("")
    lines += ["Evidence:", ""] + [f"- {line}" for line in data.evidence] + [""]
    lines += rule_text(data.rule)
    return lines


def run_section(data: RunData, out: Path, prefix: str, level: str = "#") -> list[str]:
    made = plots.all_plots(data, out, prefix)
    lines = [f"{level} {data.name}", "", *_run_facts(data), ""]
    lines += [f"{level}# Operations (Locust)", "", *_ops_table(data), ""]
    lines += [line.replace("## ", f"{level}# ", 1) if line.startswith("## ") else line
              for line in bottleneck_section(data)]
    lines.append("")
    for key, caption in CAPTIONS.items():
        if key in made:
            lines += [f"![{key}]({made[key]})", "", f"*{caption}*", ""]
    return lines


def _stat(data: RunData, label: str) -> StatsRow | None:
    return data.locust.stat(label) if label != AGGREGATED else data.locust.total()


def comparison_rows(runs: Sequence[RunData]) -> list[tuple[str, list[float | None]]]:
    """(metric, value per run) for the side-by-side table."""
    rows: list[tuple[str, list[float | None]]] = []
    rows.append(("peak users", [float(max((r.users for r in d.locust.history), default=0))
                                for d in runs]))
    total = [_stat(d, AGGREGATED) for d in runs]
    rows.append(("aggregated RPS", [s.rps if s else None for s in total]))
    rows.append(("requests", [float(s.requests) if s else None for s in total]))
    rows.append(("failures %", [s.failure_ratio * 100 if s else None for s in total]))
    for op in OPERATIONS[:4]:
        stats = [_stat(d, op) for d in runs]
        name = plots.short(op)
        rows.append((f"{name} mean ms", [s.mean if s else None for s in stats]))
        rows.append((f"{name} p99 ms", [s.p99 if s else None for s in stats]))
    for module in ("P", "A", "B", "Locust"):
        rows.append((f"{module} peak CPU (cores, busiest process)", [
            next((load.peak for load in d.verdict.loads if load.module == module), None)
            for d in runs]))
    return rows


def comparison_table(runs: Sequence[RunData]) -> list[str]:
    head = "| metric | " + " | ".join(d.name for d in runs) + " | " + " | ".join(
        f"Δ {d.name} vs {runs[0].name}" for d in runs[1:]) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(runs) - 1)]
    for metric, values in comparison_rows(runs):
        digits = 0 if metric in ("peak users", "requests") else 2
        cells = ["–" if v is None else f"{v:,.{digits}f}" for v in values]
        deltas = []
        for v in values[1:]:
            base = values[0]
            if v is None or base is None:
                deltas.append("–")
            else:
                pct = f" ({(v - base) / base:+.0%})" if base else ""
                deltas.append(f"{v - base:+,.{digits}f}{pct}")
        lines.append(f"| {metric} | " + " | ".join(cells + deltas) + " |")
    lines.append("| bottleneck | " + " | ".join(
        f"{d.verdict.module}{'' if d.verdict.saturated else ' (not saturated)'}" for d in runs)
        + " |" + " |" * (len(runs) - 1))
    return lines


def write(run_dirs: Sequence[Path], out: Path, rule: Rule | None = None) -> Path:
    """Analyse ``run_dirs`` and write ``out/report.md`` with its PNGs; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    runs = [analysis.load(d, rule) for d in run_dirs]
    lines: list[str] = []
    if len(runs) == 1:
        lines += ["# chatsys lab report", "", *run_section(runs[0], out, "")[2:]]
    else:
        names = ", ".join(d.name for d in runs)
        lines += [f"# chatsys lab report: {names}", "", "## Comparison", "",
                  f"Every run against the first ({runs[0].name}); times in ms, CPU in cores.",
                  "", *comparison_table(runs), ""]
        verdicts = [f"- {d.name}: {MODULE_NAMES.get(d.verdict.module, d.verdict.module)}"
                    f"{' saturates first' if d.verdict.saturated else ' (nearest, not saturated)'}"
                    for d in runs]
        lines += ["Bottleneck per run:", "", *verdicts, ""]
        picture = plots.comparison(runs, out, OPERATIONS[:4])
        if picture:
            lines += [f"![comparison]({picture})", "",
                      "*Each run side by side: mean (narrow) and p99 (wide) of every operation, "
                      "and the CPU peak of each module's busiest process.*", ""]
        for i, data in enumerate(runs):
            lines += run_section(data, out, f"{i + 1}-{data.path.name}-", "##")
    lines += ["## Raw data", ""]
    for data in runs:
        rel = os.path.relpath(data.path, out)
        lines.append(f"- `{rel}/`: `run.json`, `metrics.jsonl` (samples), `locust_stats.csv`, "
                     "`locust_stats_history.csv`, `locust_failures.csv`, `locust.html`, `logs/`")
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
