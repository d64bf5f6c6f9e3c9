"""Derived time series: counter rates, CPU per process, histogram quantiles per time window.

Pure functions over :class:`~chatsys.lab.samples.Samples`, so the bottleneck rule and the plots
can be tested on synthetic samples. Quantiles follow Prometheus' ``histogram_quantile``: linear
interpolation inside the bucket that holds the rank, the last finite bound for the ``+Inf`` one.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Sequence

from chatsys.lab.samples import HOST, Samples

Points = list[tuple[float, float]]


def counter_rate(points: Sequence[tuple[float, float]]) -> Points:
    """Per-second rate between consecutive samples; a drop (a restart) counts from zero."""
    out: Points = []
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t1 <= t0:
            continue
        delta = v1 - v0 if v1 >= v0 else v1
        out.append((t1, delta / (t1 - t0)))
    return out


def rolling_mean(points: Points, width: int = 3) -> Points:
    """Mean of each point with its ``width - 1`` predecessors: one slow scrape is not a peak."""
    out: Points = []
    for i, (t, _) in enumerate(points):
        window = [v for _, v in points[max(0, i - width + 1): i + 1]]
        out.append((t, sum(window) / len(window)))
    return out


def value_at(points: Sequence[tuple[float, float]], t: float) -> float | None:
    """The last value sampled at or before ``t`` (None before the first sample)."""
    i = bisect.bisect_right(points, (t, math.inf))
    return points[i - 1][1] if i else None


def cpu_cores(samples: Samples) -> dict[str, Points]:
    """CPU used by each target, in cores (``rate(process_cpu_seconds_total)``)."""
    out: dict[str, Points] = {}
    for target in samples.targets():
        if samples.modules[target] == HOST:
            continue
        for _, points in samples.find("process_cpu_seconds_total", target):
            out[target] = counter_rate(points)
    return out


def host_busy(samples: Samples) -> tuple[Points, int]:
    """The machine's busy CPU in cores over time, and its core count (0 when not sampled)."""
    for target in samples.targets(HOST):
        busy = next((p for _, p in samples.find("host_cpu_busy_seconds_total", target)), [])
        count = next((p for _, p in samples.find("host_cpu_count", target)), [])
        return counter_rate(busy), int(count[-1][1]) if count else 0
    return [], 0


def gauge(samples: Samples, name: str) -> dict[str, Points]:
    return {key[0]: points for key, points in samples.find(name)}


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative ``(le, count)`` buckets; None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def window_edges(start: float, end: float, width: float) -> list[float]:
    """Edges ``start, start+width, ... >= end`` (at least two)."""
    count = max(1, math.ceil((end - start) / width))
    return [start + i * width for i in range(count + 1)]


def histogram_windows(samples: Samples, base: str, edges: Sequence[float], q: float, *,
                      module: str | None = None, group_by: str | None = None,
                      match: dict[str, str] | None = None,
                      keep: Callable[[dict[str, str]], bool] | None = None,
                      ) -> dict[str, list[tuple[float, float | None, float]]]:
    """Per group: ``(window end, q-quantile, observations)`` of ``base`` in every window.

    Buckets are summed over the module's targets and over every label but ``group_by``, so a
    module's p99 counts every replica's calls; ``keep`` filters series by their labels. A window
    without observations has quantile None.
    """
    match = match or {}
    cumulative: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(
        lambda: [0.0] * len(edges)))
    for target in samples.targets(module):
        for key, points in samples.find(f"{base}_bucket", target, **match):
            labels = dict(key[2])
            if keep is not None and not keep(labels):
                continue
            group = labels.get(group_by, "") if group_by else "all"
            le = float(labels.get("le", "inf").replace("+Inf", "inf"))
            row = cumulative[group][le]
            for i, edge in enumerate(edges):
                row[i] += value_at(points, edge) or 0.0
    out: dict[str, list[tuple[float, float | None, float]]] = {}
    for group, by_le in cumulative.items():
        windows: list[tuple[float, float | None, float]] = []
        for i in range(1, len(edges)):
            delta = [(le, max(0.0, row[i] - row[i - 1])) for le, row in by_le.items()]
            total = max((count for le, count in delta if math.isinf(le)), default=0.0)
            windows.append((edges[i], histogram_quantile(q, delta), total))
        out[group] = windows
    return out


def first_at_or_above(points: Points, threshold: float) -> float | None:
    return next((t for t, v in points if v >= threshold), None)


def peak(points: Points) -> float:
    return max((v for _, v in points), default=0.0)
