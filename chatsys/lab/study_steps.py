"""Scenario A's steps: whether one held, what the rule cannot see, where A saturated.

A step **holds** when the load reached its users, no join failed, Locust's connect p99 stayed
under 1 s and every text and file was acknowledged, and no process died or ran out of file
descriptors. The climb stops at the first step that does not hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chatsys.lab.locust_csv import LocustData, StatsRow
from chatsys.lab.study_state import run_is_written

if TYPE_CHECKING:
    from chatsys.lab.analysis import RunData

CONNECT, SEND_TEXT, SEND_FILE = "WS /ws/chat/connect", "WS /ws/chat/send_text", \
    "WS /ws/chat/send_file"
CONNECT_P99_LIMIT_MS = 1000.0
FD_EXHAUSTED = "Too many open files"


@dataclass(frozen=True)
class StepVerdict:
    """Whether an A step held: joins succeed, connect p99 under 1 s, messages acknowledged."""

    held: bool
    reasons: list[str] = field(default_factory=list)


def judge(stats: Sequence[StatsRow], reached: int, target: int) -> StepVerdict:
    """The held criteria on one step's Locust totals (``reached``: most users at once)."""
    by = {s.label: s for s in stats}
    reasons: list[str] = []
    if reached < target:
        reasons.append(f"the load reached {reached:,} of {target:,} users")
    connect = by.get(CONNECT)
    if connect is None or connect.requests == 0:
        reasons.append("no join was recorded")
    else:
        if connect.failures:
            reasons.append(f"{connect.failures:,} of {connect.requests:,} joins failed")
        if connect.p99 is not None and connect.p99 >= CONNECT_P99_LIMIT_MS:
            reasons.append(f"connect p99 {connect.p99:,.0f} ms (limit 1 s)")
    for label, what in ((SEND_TEXT, "texts"), (SEND_FILE, "files")):
        row = by.get(label)
        if row is not None and row.failures:
            reasons.append(f"{row.failures:,} of {row.requests:,} {what} not acknowledged")
    return StepVerdict(not reasons, reasons)


def limits_hit(run_dir: Path) -> list[str]:
    """What the rule cannot see: a process that died (memory: the OOM killer), or one out of
    file descriptors (its log says so)."""
    out: list[str] = []
    try:
        died = json.loads((run_dir / "run.json").read_text()).get("died") or {}
    except (OSError, ValueError):
        died = {}
    out += [f"{name} exited during the run ({code}; a negative code is a signal, -9 often "
            "the OOM killer)" for name, code in died.items()]
    for log in sorted((run_dir / "logs").glob("*.log")):
        with log.open(errors="replace") as f:
            if any(FD_EXHAUSTED in line for line in f):
                out.append(f"{log.stem} ran out of file descriptors ({FD_EXHAUSTED!r} in "
                           f"logs/{log.name})")
    return out


def held(run_dir: Path, target: int) -> StepVerdict:
    if not run_is_written(run_dir):
        return StepVerdict(False, ["the run did not complete"])
    locust = LocustData.load(run_dir)
    reached = max((r.users for r in locust.history), default=0)
    verdict = judge(locust.stats, reached, target)
    limits = limits_hit(run_dir)
    return StepVerdict(False, verdict.reasons + limits) if limits else verdict


def memory_per_user(data: RunData) -> dict[str, float]:
    """KiB of resident memory per connected user, per module: all its processes' growth from
    their first sample to the most users at once, divided by those users."""
    rows = data.locust.aggregated()
    if not rows:
        return {}
    peak_row = max(rows, key=lambda r: r.users)
    if peak_row.users <= 0:
        return {}
    out: dict[str, float] = {}
    for target, points in data.rss.items():
        module = data.samples.modules.get(target)
        if module not in ("P", "A", "B") or not points:
            continue
        at_peak = min(points, key=lambda p: abs(p[0] - peak_row.t))[1]
        out[module] = out.get(module, 0.0) + (at_peak - points[0][1]) / 1024 / peak_row.users
    return out


def first_saturated(steps: Sequence[tuple[int, RunData]]) -> tuple[int, RunData] | None:
    """The first A step (users, run) whose run had a CPU or machine saturation event, the kind
    ``lab plan``'s model predicts."""
    for users, data in steps:
        if any(e.kind in ("cpu", "machine") for e in data.verdict.events):
            return users, data
    return None
