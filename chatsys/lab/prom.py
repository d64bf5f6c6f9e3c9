"""Reading a run's metrics back from a Prometheus server (``--prometheus URL``).

Against a cluster the lab cannot reach every pod's ``/metrics``, but the monitoring component's
Prometheus scrapes them all. After the load ends, one ``query_range`` over the run's time span
(the same metric families :data:`~chatsys.lab.samples.KEEP` names) returns every series; each is
assigned to P, A or B from its labels and written as ordinary scrapes, so the report cannot
tell the two sources apart.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

import httpx

from chatsys.lab.samples import PROM_SELECTOR, Scrape, module_for

TARGET_LABELS = ("instance", "pod", "job", "namespace", "component", "module", "service",
                 "app", "container", "endpoint")
MAX_POINTS = 10_000  # Prometheus refuses more than 11,000 points per series


class PrometheusError(RuntimeError):
    """The server did not answer a query the lab needs."""


def step_for(start: float, end: float, step: float) -> float:
    """``step``, widened so one series stays under Prometheus' point limit."""
    return max(step, math.ceil((end - start) / MAX_POINTS))


def query_range(base_url: str, query: str, start: float, end: float, step: float,
                *, timeout: float = 30.0) -> list[dict[str, Any]]:
    url = base_url.rstrip("/") + "/api/v1/query_range"
    params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
              "step": f"{step_for(start, end, step):g}"}
    try:
        response = httpx.post(url, data=params, timeout=timeout)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise PrometheusError(f"{url}: {exc}") from None
    if response.status_code != 200 or body.get("status") != "success":
        raise PrometheusError(f"{url}: HTTP {response.status_code} {body.get('error', '')}")
    result = body["data"]["result"]
    return list(result)


def to_scrapes(result: list[dict[str, Any]]) -> tuple[list[Scrape], dict[str, str]]:
    """Series as per-target scrapes, and which Prometheus instance each target name stands for.

    Targets are named ``P-0``, ``A-1`` ... in the order of their instance labels; series that
    belong to no chatsys module (Prometheus itself, kube-state-metrics) are dropped.
    """
    instances: dict[str, set[str]] = defaultdict(set)
    parsed: list[tuple[str, str, str, dict[str, str], list[list[Any]]]] = []
    for series in result:
        labels = dict(series.get("metric", {}))
        module = module_for(labels)
        if module is None:
            continue
        instance = labels.get("pod") or labels.get("instance", "?")
        instances[module].add(instance)
        name = labels.pop("__name__", "")
        own = {k: v for k, v in labels.items() if k not in TARGET_LABELS}
        parsed.append((module, instance, name, own, series.get("values", [])))
    names = {(module, inst): f"{module}-{i}" for module, insts in instances.items()
             for i, inst in enumerate(sorted(insts))}
    grouped: dict[tuple[float, str], Scrape] = {}
    for module, instance, name, labels, values in parsed:
        target = names[(module, instance)]
        for t, value in values:
            key = (float(t), target)
            if key not in grouped:
                grouped[key] = Scrape(float(t), target, module)
            number = float(value)
            if not math.isnan(number):
                grouped[key].samples.append((name, labels, number))
    mapping = {target: instance for (_, instance), target in names.items()}
    return sorted(grouped.values(), key=lambda s: (s.t, s.target)), mapping


def fetch(base_url: str, start: float, end: float,
          step: float = 1.0) -> tuple[list[Scrape], dict[str, str]]:
    """Every kept series of every chatsys target between ``start`` and ``end``."""
    return to_scrapes(query_range(base_url, PROM_SELECTOR, start, end, step))


def wait_ingested(base_url: str, t: float, timeout: float) -> None:
    """Wait until Prometheus has scraped every chatsys target after ``t`` (the load's end).

    ``timestamp()`` of a series is its latest scrape; the oldest of them must be past ``t``,
    else the last seconds of the run would be missing from the read-back.
    """
    url = base_url.rstrip("/") + "/api/v1/query"
    query = "min(timestamp(process_cpu_seconds_total))"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = httpx.get(url, params={"query": query}, timeout=5.0).json()["data"]["result"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise PrometheusError(f"{url}: {exc}") from None
        if result and float(result[0]["value"][1]) >= t:
            return
        time.sleep(0.5)
    raise PrometheusError(f"no scrape after the end of the load within {timeout:.0f}s")


def ready(base_url: str) -> bool:
    try:
        return httpx.get(base_url.rstrip("/") + "/-/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False
