"""The study's ``report.md``: chatsys's figures beside the seed's, each run's bottleneck, A's
climb and what stopped it, and ``lab plan``'s cost table from the same runs.

Every figure comes from the runs' own data, read the way ``lab report`` reads it
(:mod:`chatsys.lab.analysis`); each run keeps its own full report in ``runs/KEY/report.md``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatsys.lab.study_state import COMPLETE
from chatsys.lab.study_steps import (
    CONNECT,
    StepVerdict,
    first_saturated,
    memory_per_user,
)

if TYPE_CHECKING:
    from chatsys.lab.analysis import RunData
    from chatsys.lab.bottleneck import Rule
    from chatsys.lab.study import PlannedRun
    from chatsys.lab.study_state import StudyState

# The seed's published figures (its methodology, scenarios A and B: Locust against one replica
# each of P, A and B on Kubernetes). bench/run.py quotes the first three too.
SEED = {"connect_mean_ms": 69.57, "rps_2000_users": 122.2, "peak_rps": 290.9,
        "peak_rps_users": 5_000, "connect_mean_100k_ms": 124.56, "collapse_users": 100_000,
        "collapse_rps": 0.5}


@dataclass(frozen=True)
class Figures:
    """What the seed comparison reads from one run."""

    key: str
    users: int  # most users at once
    connect_mean: float | None
    connect_p99: float | None
    rps: float | None
    failures_pct: float | None
    bottleneck: str  # e.g. "P (CPU at 14 s)" or "P, nearest (not saturated)"
    topology: str = ""  # e.g. "P 2→4 (HPA, 3 changes), A 1, B 1"


def topology_text(run_dir: Path, meta: dict[str, Any]) -> str:
    """Replicas of P, A and B; P's range and changes when the local HPA scaled it
    (``hpa.jsonl``: one ``{"event": "replicas", "replicas": N}`` line per change)."""
    topo = meta.get("topology") or {}
    if not topo:
        return "external"
    gateways = str(topo.get("gateways", "?"))
    try:
        lines = (run_dir / "hpa.jsonl").read_text().splitlines()
    except OSError:
        lines = []
    counts = [r["replicas"] for r in map(json.loads, filter(str.strip, lines))
              if r.get("event") == "replicas" and "replicas" in r]
    if counts:
        gateways = (f"{counts[0]}→{max(counts)} (HPA, {len(counts) - 1} changes, "
                    f"{counts[-1]} at the end)")
    return f"P {gateways}, A {topo.get('a_replicas', '?')}, B {topo.get('b_replicas', '?')}"


def figures(key: str, data: RunData) -> Figures:
    total = data.locust.total()
    connect = data.locust.stat(CONNECT)
    verdict = data.verdict
    if verdict.saturated and verdict.events:
        first = verdict.events[0]
        what = f"{verdict.module} ({first.kind} at {first.at:.0f} s)"
    else:
        what = f"{verdict.module or '?'} (nearest; nothing saturated)"
    return Figures(key, max((r.users for r in data.locust.history), default=0),
                   connect.mean if connect else None, connect.p99 if connect else None,
                   total.rps if total else None,
                   total.failure_ratio * 100 if total else None, what,
                   topology_text(data.path, data.meta))


def _n(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def baseline_table(runs: Sequence[Figures], scale: float) -> list[str]:
    """Scenario B and C at 2,000 users: the seed's figures beside every run's."""
    head = "| at the seed's 2,000 users | seed (k8s, Locust) | " + " | ".join(
        f"chatsys {f.key}" for f in runs) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(runs)]
    lines.append("| users (most at once) | 2,000 | "
                 + " | ".join(f"{f.users:,}" for f in runs) + " |")
    lines.append(f"| connect mean (ms) | {SEED['connect_mean_ms']} | "
                 + " | ".join(_n(f.connect_mean, 2) for f in runs) + " |")
    lines.append("| replicas | P 1, A 1, B 1 (C: HPA on P, or more A and B) | "
                 + " | ".join(f.topology or "–" for f in runs) + " |")
    lines.append("| connect p99 (ms) | – | " + " | ".join(_n(f.connect_p99, 0) for f in runs)
                 + " |")
    lines.append(f"| aggregate RPS | {SEED['rps_2000_users']} | "
                 + " | ".join(_n(f.rps) for f in runs) + " |")
    lines.append("| failures (%) | – | " + " | ".join(_n(f.failures_pct, 2) for f in runs)
                 + " |")
    lines.append("| bottleneck | connections (P's WebSocket handshake) | "
                 + " | ".join(f.bottleneck for f in runs) + " |")
    if scale != 1:
        lines += ["", f"**Scaled study (×{scale:g}):** these runs did not have the seed's "
                      "2,000 users; the seed's column is not comparable with them."]
    return lines


@dataclass(frozen=True)
class Step:
    run: PlannedRun
    status: str  # complete, failed, running, not run
    verdict: StepVerdict | None
    figures: Figures | None
    memory_kib: dict[str, float] = field(default_factory=dict)  # module → KiB per user
    summary: str = ""  # the run's bottleneck sentence


def climb_outcome(steps: Sequence[Step]) -> tuple[Step | None, Step | None]:
    """(highest step held, the first step that did not hold or failed), either may be None."""
    top = stopped = None
    for step in steps:
        if step.status == COMPLETE and step.verdict is not None and step.verdict.held:
            top = step
        elif step.status != "not run":
            stopped = step
            break
    return top, stopped


def stress_table(steps: Sequence[Step], all_runs: Sequence[Figures]) -> list[str]:
    """Scenario A: peak RPS and the collapse point, the seed's beside chatsys's."""
    top, stopped = climb_outcome(steps)
    best = max((f for f in all_runs if f.rps is not None), key=lambda f: f.rps or 0.0,
               default=None)
    peak = f"{best.rps:,.1f} ({best.key}, {best.users:,} users)" if best else "–"
    held_text = (f"{top.run.users:,} users ({top.run.key}): connect mean "
                 f"{_n(top.figures.connect_mean if top.figures else None, 2)} ms, p99 "
                 f"{_n(top.figures.connect_p99 if top.figures else None, 0)} ms"
                 if top else "no step held")
    if stopped is None:
        stop_text = ("nothing: every planned step held (the climb needs higher steps)"
                     if top else "A did not run")
    else:
        why = "; ".join(stopped.verdict.reasons) if stopped.verdict else stopped.status
        stop_text = f"{stopped.run.users:,} users ({stopped.run.key}): {why}"
        if stopped.figures is not None:
            stop_text += f"; bottleneck {stopped.figures.bottleneck}"
    return [
        "| scenario A | seed (k8s, Locust) | chatsys |", "|---|---|---|",
        f"| peak aggregate RPS | ~{SEED['peak_rps']} ({SEED['peak_rps_users']:,} users) | "
        f"{peak} |",
        f"| highest step held (joins succeed, connect p99 < 1 s, messages acknowledged) | "
        f"connect mean {SEED['connect_mean_ms']} ms from 2,000 users, "
        f"{SEED['connect_mean_100k_ms']} ms at 100,000 | {held_text} |",
        f"| where it collapsed | {SEED['collapse_users']:,} users: message RPS fell to "
        f"{SEED['collapse_rps']} as joins failed en masse | {stop_text} |",
    ]


def steps_table(steps: Sequence[Step]) -> list[str]:
    lines = ["| step | users reached | connect mean ms | connect p99 ms | RPS | failures % | "
             "held | why not | bottleneck | MiB per 1,000 users (P / A / B) |",
             "|---|---:|---:|---:|---:|---:|---|---|---|---|"]
    for s in steps:
        f = s.figures
        mem = " / ".join(_n(s.memory_kib[m] * 1000 / 1024 if m in s.memory_kib else None)
                         for m in ("P", "A", "B")) if s.memory_kib else "–"
        verdict = ("yes" if s.verdict.held else "**no**") if s.verdict else s.status
        lines.append(
            f"| {s.run.key} | {f.users if f else 0:,} | {_n(f.connect_mean if f else None, 2)} "
            f"| {_n(f.connect_p99 if f else None, 0)} | {_n(f.rps if f else None)} | "
            f"{_n(f.failures_pct if f else None, 2)} | {verdict} | "
            f"{'; '.join(s.verdict.reasons) if s.verdict else ''} | "
            f"{f.bottleneck if f else '–'} | {mem} |")
    return lines


def validation_lines(baseline: RunData, steps: Sequence[tuple[int, RunData]],
                     rule: Rule | None) -> list[str]:
    """``lab plan``'s model of this machine fitted on B, against the first A step that
    saturated. B says what the system costs; the A steps below (held, and driven by A's own
    driver) say only what that load generator costs."""
    from chatsys.lab import costs, plan_report
    from chatsys.lab.plan import validate

    target = first_saturated(steps)
    if target is None:
        return ["- No A step had a CPU or machine saturation event: nothing to compare."]
    users, stepped = target
    held = [data for step, data in steps if step < users]
    model = costs.fit([baseline], generator_runs=held)
    if not model.windows:
        return []
    checked = validate(model, stepped, rule, steps=[step for step, _ in steps])
    return [f"The system's costs (P, A, B) from B alone; the load generator's from the runs "
            f"driven as A's step {users:,} was. The measured point is the users connected when "
            "the rule first saw the CPU or machine saturate, inside that step's climb.", "",
            *plan_report.validation_lines(checked)]


def cost_section(runs: Sequence[RunData]) -> list[str]:
    """``lab plan``'s cost table (and its plan for the seed's top step) from the study's runs."""
    from chatsys.lab import costs, plan_report
    from chatsys.lab.plan import Load, PlanError, plan

    try:
        model = costs.fit(runs)
    except (ValueError, ArithmeticError) as exc:
        return [f"The costs could not be fitted from these runs: {exc}."]
    if not model.windows:
        return [f"The runs are too short for `lab plan`'s windows of {model.width:g} s: no "
                "cost could be fitted."]
    lines = ["From every complete run of the study, as `chatsys lab plan` fits them "
             f"({len(model.windows)} windows of {model.width:g} s):", "",
             *plan_report.costs_table(model)]
    try:
        result = plan(model, Load(SEED["collapse_users"]))
    except PlanError as exc:
        return [*lines, f"No plan for {SEED['collapse_users']:,} users: {exc}."]
    lines += [f"The plan for the seed's top step, {SEED['collapse_users']:,} users at the "
              "ChatUser's mix, pods of one core at 60 % (`chatsys lab plan RUNS --users "
              f"{SEED['collapse_users']}` prints the kustomize settings):", "",
              *plan_report.plan_table(result), ""]
    return lines


def _rel(path: Path, out: Path) -> str:
    return os.path.relpath(path, out)


def write(out: Path, planned: Sequence[PlannedRun], state: StudyState,
          rule: Rule | None = None) -> Path:
    """Load every complete run, then write ``out/report.md`` and its plots."""
    from chatsys.lab import analysis, plots
    from chatsys.lab.report import OPERATIONS

    loaded: dict[str, RunData] = {}
    for run in planned:
        run_dir = out / "runs" / run.key
        if state.is_complete(run.key, run_dir):
            loaded[run.key] = analysis.load(run_dir, rule)
    found = {key: figures(key, data) for key, data in loaded.items()}
    steps: list[Step] = []
    for run in planned:
        if not run.is_step:
            continue
        record: dict[str, Any] = state.runs.get(run.key, {})
        data = loaded.get(run.key)
        verdict = (StepVerdict(bool(record["held"]), list(record.get("why_not") or []))
                   if "held" in record else None)
        steps.append(Step(run, record.get("status", "not run"), verdict, found.get(run.key),
                          memory_per_user(data) if data else {},
                          data.verdict.summary if data else ""))
    scale = float(state.settings.get("scale", 1.0))
    calib = (state.calibration or {}).get("line", "calibration: not recorded")
    lines = ["# chatsys study: the seed's scenarios on one machine", "",
             f"`{calib}`", "",
             f"Scale ×{scale:g}; A's load generator: {state.settings.get('driver')}; every run "
             "on this one machine, its processes on loopback (`chatsys lab run`, "
             "docs/lab.md). Each run's full report is linked below.", "",
             "## Against the seed", "",
             *baseline_table([found[k] for k in ("B", "C-hpa", "C-scaled") if k in found],
                             scale), "",
             *stress_table(steps, list(found.values())), ""]
    lines += ["## Bottleneck of each run", "",
              "Named by the lab's rule from each run's own samples (the rule is in every run's "
              "report).", "", "| run | status | bottleneck | report |", "|---|---|---|---|"]
    for run in planned:
        status = state.runs.get(run.key, {}).get("status", "not run")
        data = loaded.get(run.key)
        link = f"[report]({_rel(out / 'runs' / run.key / 'report.md', out)})" if data else "–"
        lines.append(f"| {run.key} | {status} | {data.verdict.summary if data else '–'} | "
                     f"{link} |")
    lines += ["", "## Scenario A: the climb", "",
              "One lab run per step (`stress` narrowed to that step), from an empty system; the "
              "climb stops at the first step that does not hold.", "", *steps_table(steps), ""]
    base_runs = [loaded[k] for k in ("B", "C-hpa", "C-scaled") if k in loaded]
    if len(base_runs) > 1:
        picture = plots.comparison(base_runs, out, OPERATIONS[:4])
        if picture:
            lines += [f"![B and C]({picture})", "",
                      "*B, C-hpa and C-scaled side by side: mean (narrow) and p99 (wide) of every "
                      "operation, and the CPU peak of each module's busiest process.*", ""]
    picture = climb_plot(steps, out)
    if picture:
        lines += [f"![A]({picture})", "", "*Scenario A per step: connect latency and aggregate "
                  "RPS against users, with the seed's published points.*", ""]
    lines += ["## Costs per operation (`lab plan`)", "", *cost_section(list(loaded.values()))]
    step_data = [(s.run.users, loaded[s.run.key]) for s in steps if s.run.key in loaded]
    if "B" in loaded and step_data:
        checked = validation_lines(loaded["B"], step_data, rule)
        if checked:
            lines += ["", "### The model against scenario A", "", *checked]
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def climb_plot(steps: Sequence[Step], out: Path) -> str | None:
    import matplotlib.pyplot as plt

    from chatsys.lab.plots import DPI

    done = [s for s in steps if s.figures is not None and s.figures.users > 0]
    if not done:
        return None
    users = [s.run.users for s in done]
    fig, (lat, rps) = plt.subplots(1, 2, figsize=(10, 3.5))
    lat.plot(users, [s.figures.connect_mean if s.figures else math.nan for s in done], "o-",
             label="chatsys connect mean")
    lat.plot(users, [s.figures.connect_p99 if s.figures else math.nan for s in done], "s--",
             label="chatsys connect p99")
    lat.plot([2_000, SEED["collapse_users"]], [SEED["connect_mean_ms"],
                                                SEED["connect_mean_100k_ms"]],
             "x", color="red", markersize=10, label="seed connect mean")
    rps.plot(users, [s.figures.rps if s.figures else math.nan for s in done], "o-",
             label="chatsys")
    rps.plot([2_000, SEED["peak_rps_users"], SEED["collapse_users"]],
             [SEED["rps_2000_users"], SEED["peak_rps"], SEED["collapse_rps"]], "x", color="red",
             markersize=10, label="seed")
    for ax, ylabel in ((lat, "ms"), (rps, "aggregate RPS")):
        ax.set_xscale("log")
        ax.set_xlabel("users (step)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "study_a.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path.name



PUBLISHED = ("report.md", "*.png")


def publish(out: Path, dest: Path) -> list[Path]:
    """Copy the study's report and plots, and every run's, to ``dest`` (no raw data): what
    ``docs/study/`` holds. Links stay valid: runs keep their ``runs/KEY/`` place."""
    copied: list[Path] = []
    for source in [out, *sorted(p for p in (out / "runs").glob("*") if p.is_dir())]:
        target = dest / source.relative_to(out)
        for pattern in PUBLISHED:
            for path in sorted(source.glob(pattern)):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
                copied.append(target / path.name)
    return copied
