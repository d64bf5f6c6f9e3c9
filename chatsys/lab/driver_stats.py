"""The native driver's statistics, kept and written the way Locust keeps and writes its own.

Each worker process records every request into per-name :class:`Entry` objects: counts, sums,
min/max, and a histogram of response times rounded like Locust's (2 significant digits), plus
requests per completion second. Once a second a worker hands its *delta* to the coordinator
(:meth:`Stats.drain`), which adds it to the run's totals (:meth:`Stats.merge`). Histograms add
exactly, so every percentile is computed from all samples of all workers, never averaged.

The coordinator writes ``PREFIX_stats.csv``, ``PREFIX_stats_history.csv`` (``--csv-full-history``
style: every name and ``Aggregated`` every second, with "current" percentiles over the last ~10 s
and current RPS over the seconds before) and ``PREFIX_failures.csv``, with Locust's columns, so
:mod:`chatsys.lab.locust_csv` and the report read a driver run like a Locust run.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

AGGREGATED = "Aggregated"
PERCENTILES = (0.50, 0.66, 0.75, 0.80, 0.90, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0)
PERCENTILE_COLUMNS = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%",
                      "99.99%", "100%"]
CURRENT_WINDOW = 10  # seconds behind "now" for the history's current percentiles (Locust's)

STATS_COLUMNS = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time",
                 "Average Response Time", "Min Response Time", "Max Response Time",
                 "Average Content Size", "Requests/s", "Failures/s", *PERCENTILE_COLUMNS]
HISTORY_COLUMNS = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s",
                   *PERCENTILE_COLUMNS, "Total Request Count", "Total Failure Count",
                   "Total Median Response Time", "Total Average Response Time",
                   "Total Min Response Time", "Total Max Response Time",
                   "Total Average Content Size"]
FAILURE_COLUMNS = ["Method", "Name", "Error", "Occurrences"]


def bucket(ms: float) -> int:
    """Locust's rounding of a response time: 2 significant digits (147 -> 150, 3432 -> 3400)."""
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


def percentile(histogram: Mapping[int, int], count: int, share: float) -> int:
    """The response time that ``share`` of ``count`` requests finished within (Locust's rule:
    walk the buckets from the slowest down until at most ``count * share`` remain)."""
    wanted = int(count * share)
    seen = 0
    for ms in sorted(histogram, reverse=True):
        seen += histogram[ms]
        if count - seen <= wanted:
            return ms
    return 0


@dataclass
class Entry:
    """Every request of one type and name: totals, a rounded histogram, counts per second."""

    kind: str
    name: str
    count: int = 0
    failures: int = 0
    total_ms: float = 0.0
    min_ms: float | None = None
    max_ms: float = 0.0
    content: int = 0
    histogram: Counter[int] = field(default_factory=Counter)
    per_second: Counter[int] = field(default_factory=Counter)
    failures_per_second: Counter[int] = field(default_factory=Counter)

    def record(self, ms: float, length: int, second: int, failed: bool) -> None:
        self.count += 1
        self.total_ms += ms
        self.min_ms = ms if self.min_ms is None or ms < self.min_ms else self.min_ms
        self.max_ms = ms if ms > self.max_ms else self.max_ms
        self.content += length
        self.histogram[bucket(ms)] += 1
        self.per_second[second] += 1
        if failed:
            self.failures += 1
            self.failures_per_second[second] += 1

    def add(self, other: Entry) -> None:
        self.count += other.count
        self.failures += other.failures
        self.total_ms += other.total_ms
        if other.min_ms is not None:
            self.min_ms = other.min_ms if self.min_ms is None else min(self.min_ms, other.min_ms)
        self.max_ms = max(self.max_ms, other.max_ms)
        self.content += other.content
        self.histogram.update(other.histogram)
        self.per_second.update(other.per_second)
        self.failures_per_second.update(other.failures_per_second)

    @property
    def mean(self) -> float:
        return self.total_ms / self.count if self.count else 0.0

    def percentile(self, share: float) -> int:
        return percentile(self.histogram, self.count, share)

    @property
    def median(self) -> float:
        """Locust's median: from the histogram, but never outside the exact min and max."""
        if not self.count:
            return 0
        median = float(self.percentile(0.5))
        return min(max(median, self.min_ms or 0.0), self.max_ms)

    def to_wire(self) -> list[Any]:
        return [self.kind, self.name, self.count, self.failures, self.total_ms, self.min_ms,
                self.max_ms, self.content, dict(self.histogram), dict(self.per_second),
                dict(self.failures_per_second)]

    @classmethod
    def from_wire(cls, row: list[Any]) -> Entry:
        kind, name, count, failures, total, low, high, content, hist, per_s, fail_s = row
        return cls(kind, name, count, failures, total, low, high, content,
                   Counter({int(k): v for k, v in hist.items()}),
                   Counter({int(k): v for k, v in per_s.items()}),
                   Counter({int(k): v for k, v in fail_s.items()}))


class Stats:
    """The requests and failures of a worker (a delta) or of the whole run (the totals)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}
        self.errors: Counter[tuple[str, str, str]] = Counter()

    def record(self, kind: str, name: str, ms: float, length: int, second: int,
               error: str | None = None) -> None:
        entry = self.entries.get((kind, name))
        if entry is None:
            entry = self.entries[(kind, name)] = Entry(kind, name)
        entry.record(ms, length, second, error is not None)
        if error is not None:
            self.errors[(kind, name, error)] += 1

    def drain(self) -> dict[str, Any]:
        """What was recorded since the last drain, as JSON-ready data; then start afresh."""
        wire = {"entries": [e.to_wire() for e in self.entries.values()],
                "errors": [[*key, n] for key, n in self.errors.items()]}
        self.entries, self.errors = {}, Counter()
        return wire

    def merge(self, wire: Mapping[str, Any]) -> None:
        """Add a worker's drained delta to these totals."""
        for row in wire.get("entries", ()):
            delta = Entry.from_wire(row)
            key = (delta.kind, delta.name)
            if key in self.entries:
                self.entries[key].add(delta)
            else:
                self.entries[key] = delta
        for kind, name, error, n in wire.get("errors", ()):
            self.errors[(kind, name, error)] += n

    def sorted_entries(self) -> list[Entry]:
        return [self.entries[key] for key in sorted(self.entries, key=lambda k: (k[1], k[0]))]

    def total(self) -> Entry:
        total = Entry("", AGGREGATED)
        for entry in self.entries.values():
            total.add(entry)
        return total


def current_rate(per_second: Mapping[int, int], now: int, start: int) -> float:
    """Locust's current RPS: the mean count over the seconds from ``now - 12`` to ``now - 3``
    (the last seconds are still filling), never before the run's start."""
    seconds = range(max(now - 12, start), now - 2)
    return sum(per_second.get(s, 0) for s in seconds) / len(seconds) if seconds else 0.0


def _preferred_seconds(now: int) -> list[int]:
    """The snapshot seconds to diff against, in Locust's order: now-10, now-11, now-9 ..."""
    out = [now - CURRENT_WINDOW]
    for i in range(1, 9):
        out += [now - CURRENT_WINDOW - i, now - CURRENT_WINDOW + i]
    return out


class CsvWriter:
    """Writes the three Locust files of a run under ``prefix`` (``DIR/locust`` ...)."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.start: int | None = None
        self.snapshots: dict[int, dict[tuple[str, str], tuple[Counter[int], int]]] = {}
        self._history: TextIO = open(f"{prefix}_stats_history.csv", "w", newline="")
        self._history_csv = csv.writer(self._history)
        self._history_csv.writerow(HISTORY_COLUMNS)
        self._history.flush()

    def close(self) -> None:
        self._history.close()

    def tick(self, stats: Stats, users: int, now: float) -> None:
        """One second: a history row per name and Aggregated, then the totals files afresh."""
        second = int(now)
        if self.start is None:
            self.start = second
        rows = [*stats.sorted_entries(), stats.total()]
        for entry in rows:
            self._history_csv.writerow(self._history_row(entry, users, second))
        self._history.flush()
        self.snapshots[second] = {(e.kind, e.name): (Counter(e.histogram), e.count)
                                  for e in rows}
        for old in [s for s in self.snapshots if s < second - CURRENT_WINDOW - 10]:
            del self.snapshots[old]
        self.write_totals(stats, now)

    def _current_percentiles(self, entry: Entry, second: int) -> list[int] | list[str]:
        if not entry.count:
            return ["N/A"] * len(PERCENTILES)
        for candidate in _preferred_seconds(second):
            snap = self.snapshots.get(candidate, {}).get((entry.kind, entry.name))
            if candidate in self.snapshots:
                hist, count = snap or (Counter(), 0)
                recent = entry.histogram - hist
                return [percentile(recent, entry.count - count, p) for p in PERCENTILES]
        return [0] * len(PERCENTILES)

    def _history_row(self, entry: Entry, users: int, second: int) -> list[Any]:
        start = self.start or second
        return [second, users, entry.kind, entry.name,
                f"{current_rate(entry.per_second, second, start):2f}",
                f"{current_rate(entry.failures_per_second, second, start):2f}",
                *self._current_percentiles(entry, second),
                entry.count, entry.failures, entry.median, entry.mean, entry.min_ms or 0,
                entry.max_ms, entry.content / entry.count if entry.count else 0]

    def write_totals(self, stats: Stats, now: float) -> None:
        """``_stats.csv`` and ``_failures.csv`` as they stand (rewritten, like Locust does)."""
        elapsed = max(now - (self.start or now), 1e-9)
        _write(Path(f"{self.prefix}_stats.csv"), STATS_COLUMNS, (
            [e.kind, e.name, e.count, e.failures, e.median, e.mean, e.min_ms or 0, e.max_ms,
             e.content / e.count if e.count else 0, e.count / elapsed, e.failures / elapsed,
             *([e.percentile(p) for p in PERCENTILES] if e.count else ["N/A"] * len(PERCENTILES))]
            for e in [*stats.sorted_entries(), stats.total()]))
        _write(Path(f"{self.prefix}_failures.csv"), FAILURE_COLUMNS, (
            [kind, name, error, n] for (kind, name, error), n in stats.errors.most_common()))


def _write(path: Path, header: list[str], rows: Iterable[list[Any]]) -> None:
    """Replace ``path`` in one rename, so a reader never sees half a file."""
    partial = path.with_name(path.name + ".tmp")
    with partial.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    partial.replace(path)
