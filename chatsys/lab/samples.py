"""Metric samples as the lab stores them: one JSON line per scrape of one target.

Both sources — our own 1-second scraper and a Prometheus server's ``query_range`` — end up in the
same ``metrics.jsonl`` shape, so the analysis never knows where the numbers came from:

    {"t": 1764160000.0, "target": "A-0", "module": "A", "samples": [[name, {labels}, value], ...]}

Only the families the report uses are kept (``KEEP``), which keeps a ten-minute run's file small.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

MODULES = ("P", "A", "B")
LOAD_GENERATOR = "Locust"
HOST = "host"
MODULE_NAMES = {"P": "P (gateway)", "A": "A (users + chat)", "B": "B (files)",
                LOAD_GENERATOR: "Locust (load generator)", HOST: "the machine"}

# Families the report reads. Histogram names match their _bucket/_count/_sum samples.
KEEP = re.compile(
    r"^(process_cpu_seconds_total|process_resident_memory_bytes"
    r"|grpc_(server|client)_handling_seconds_(bucket|count|sum)|grpc_server_handled_total"
    r"|chatsys_ws_connections|chatsys_ws_connect_seconds_(bucket|count|sum)"
    r"|chatsys_message_ack_seconds_(bucket|count|sum)|chatsys_messages_total"
    r"|chatsys_fanout_deliveries_total|host_cpu_busy_seconds_total|host_cpu_count)$"
)
PROM_SELECTOR = "{__name__=~\"" + KEEP.pattern.strip("^$") + "\"}"

Labels = dict[str, str]
RawSample = tuple[str, Labels, float]


@dataclass
class Scrape:
    """Every kept sample of one target at one instant."""

    t: float
    target: str
    module: str
    samples: list[RawSample] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"t": round(self.t, 3), "target": self.target, "module": self.module,
                           "samples": [[n, lb, v] for n, lb, v in self.samples]},
                          separators=(",", ":"))


def parse_exposition(text: str) -> list[RawSample]:
    """The kept samples of a Prometheus text exposition (``_created`` and the rest dropped)."""
    out: list[RawSample] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if KEEP.match(sample.name) and not math.isnan(sample.value):
                out.append((sample.name, dict(sample.labels), float(sample.value)))
    return out


def module_for(labels: Mapping[str, str]) -> str | None:
    """P, A or B for a Prometheus series, from the labels our scrape configs attach.

    ``module`` wins, then the Kubernetes ``component`` label the monitoring component sets
    (``gateway``, ``users-chat``, ``files``), then keywords in ``job``/``pod``/``service``.
    Anything else (Prometheus itself, kube-state-metrics) is not ours: None.
    """
    if labels.get("module") in MODULES:
        return labels["module"]
    component = labels.get("component", "")
    by_component = {"gateway": "P", "users-chat": "A", "users": "A", "chat": "A", "files": "B"}
    if component in by_component:
        return by_component[component]
    for key in ("job", "pod", "service", "app"):
        text = labels.get(key, "").replace("chatsys", "")
        if "gateway" in text:
            return "P"
        if "files" in text:
            return "B"
        if "users" in text or "chat" in text:
            return "A"
    return None


def write_jsonl(scrapes: Iterable[Scrape], out: IO[str]) -> int:
    count = 0
    for scrape in scrapes:
        out.write(scrape.to_json() + "\n")
        count += 1
    return count


def read_jsonl(path: Path) -> list[Scrape]:
    """Every scrape in ``path``; a line cut short by an interrupted run is skipped."""
    scrapes: list[Scrape] = []
    if not path.exists():
        return scrapes
    with path.open() as f:
        for line in f:
            try:
                raw: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            scrapes.append(Scrape(float(raw["t"]), str(raw["target"]), str(raw["module"]),
                                  [(str(n), dict(lb), float(v)) for n, lb, v in raw["samples"]]))
    scrapes.sort(key=lambda s: s.t)
    return scrapes


SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]  # target, name, sorted labels


class Samples:
    """Scrapes indexed as time series: ``(target, name, labels) → [(t, value), ...]``."""

    def __init__(self, scrapes: Iterable[Scrape]) -> None:
        self.series: dict[SeriesKey, list[tuple[float, float]]] = defaultdict(list)
        self.modules: dict[str, str] = {}
        for scrape in scrapes:
            self.modules[scrape.target] = scrape.module
            for name, labels, value in scrape.samples:
                key = (scrape.target, name, tuple(sorted(labels.items())))
                self.series[key].append((scrape.t, value))
        for points in self.series.values():
            points.sort()

    def targets(self, module: str | None = None) -> list[str]:
        return sorted(t for t, m in self.modules.items() if module is None or m == module)

    def find(self, name: str, target: str | None = None,
             **match: str) -> Iterator[tuple[SeriesKey, list[tuple[float, float]]]]:
        """Series of ``name`` (on ``target``) whose labels include every ``match`` pair."""
        for key, points in self.series.items():
            if key[1] != name or (target is not None and key[0] != target):
                continue
            labels = dict(key[2])
            if all(labels.get(k) == v for k, v in match.items()):
                yield key, points

    def span(self) -> tuple[float, float] | None:
        times = [p[0] for points in self.series.values() for p in points]
        return (min(times), max(times)) if times else None
