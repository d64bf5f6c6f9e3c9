"""Reading Locust's CSV files (``--csv PREFIX --csv-full-history``): pure parsing, no Locust import.

Locust writes ``PREFIX_stats.csv`` (totals per request name), ``PREFIX_stats_history.csv`` (one
row per name per second: users, current RPS and percentiles, running totals) and
``PREFIX_failures.csv``. A run stopped by Ctrl-C may leave a half-written last line; readers skip
what they cannot parse instead of failing the report.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

AGGREGATED = "Aggregated"
PREFIX = "locust"


def _float(text: str | None) -> float | None:
    if text is None or text.strip() in ("", "N/A"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("Name")]


@dataclass(frozen=True)
class HistoryRow:
    """One second of one request name (or ``Aggregated``) in the stats history."""

    t: float
    users: int
    kind: str
    name: str
    rps: float
    fps: float
    p50: float | None
    p95: float | None
    p99: float | None
    total_requests: int
    total_failures: int

    @property
    def label(self) -> str:
        return self.name if self.name == AGGREGATED else f"{self.kind} {self.name}"


@dataclass(frozen=True)
class StatsRow:
    """The totals of one request name over the whole run."""

    kind: str
    name: str
    requests: int
    failures: int
    mean: float | None
    median: float | None
    p95: float | None
    p99: float | None
    max: float | None
    rps: float

    @property
    def label(self) -> str:
        return self.name if self.name == AGGREGATED else f"{self.kind} {self.name}"

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class FailureRow:
    method: str
    name: str
    error: str
    occurrences: int


def read_history(path: Path) -> list[HistoryRow]:
    out: list[HistoryRow] = []
    for row in _rows(path):
        t, users = _float(row.get("Timestamp")), _float(row.get("User Count"))
        total = _float(row.get("Total Request Count"))
        failed = _float(row.get("Total Failure Count"))
        if t is None or users is None or total is None or failed is None:
            continue
        out.append(HistoryRow(
            t=t, users=int(users), kind=row.get("Type") or "", name=row["Name"],
            rps=_float(row.get("Requests/s")) or 0.0, fps=_float(row.get("Failures/s")) or 0.0,
            p50=_float(row.get("50%")), p95=_float(row.get("95%")), p99=_float(row.get("99%")),
            total_requests=int(total), total_failures=int(failed),
        ))
    return out


def read_stats(path: Path) -> list[StatsRow]:
    out: list[StatsRow] = []
    for row in _rows(path):
        requests, failures = _float(row.get("Request Count")), _float(row.get("Failure Count"))
        if requests is None or failures is None:
            continue
        out.append(StatsRow(
            kind=row.get("Type") or "", name=row["Name"], requests=int(requests),
            failures=int(failures), mean=_float(row.get("Average Response Time")),
            median=_float(row.get("Median Response Time")), p95=_float(row.get("95%")),
            p99=_float(row.get("99%")), max=_float(row.get("Max Response Time")),
            rps=_float(row.get("Requests/s")) or 0.0,
        ))
    return out


def read_failures(path: Path) -> list[FailureRow]:
    out = []
    for row in _rows(path):
        count = _float(row.get("Occurrences"))
        out.append(FailureRow(row.get("Method") or "", row["Name"], row.get("Error") or "",
                              int(count or 0)))
    return sorted(out, key=lambda f: -f.occurrences)


@dataclass(frozen=True)
class LocustData:
    """Everything Locust wrote for one run."""

    history: list[HistoryRow]
    stats: list[StatsRow]
    failures: list[FailureRow]

    @classmethod
    def load(cls, run_dir: Path, prefix: str = PREFIX) -> LocustData:
        return cls(read_history(run_dir / f"{prefix}_stats_history.csv"),
                   read_stats(run_dir / f"{prefix}_stats.csv"),
                   read_failures(run_dir / f"{prefix}_failures.csv"))

    def aggregated(self) -> list[HistoryRow]:
        return [r for r in self.history if r.name == AGGREGATED]

    def operations(self) -> list[str]:
        """Request labels in the history (``WS /ws/chat/send_text`` ...), Aggregated excluded."""
        return sorted({r.label for r in self.history if r.name != AGGREGATED})

    def total(self) -> StatsRow | None:
        return next((s for s in self.stats if s.name == AGGREGATED), None)

    def stat(self, label: str) -> StatsRow | None:
        return next((s for s in self.stats if s.label == label), None)

    def failure_onset(self) -> HistoryRow | None:
        """The first second at which the running failure count is above zero."""
        return next((r for r in self.aggregated() if r.total_failures > 0), None)
