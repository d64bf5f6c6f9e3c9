"""Scraping every process's ``/metrics`` once a second into ``metrics.jsonl``.

Each tick fetches all targets concurrently and appends one line per target, flushed at once, so
a run stopped by Ctrl-C keeps every second it saw. The load generator and the machine have no
``/metrics``; they are sampled from ``/proc`` (psutil) under the same metric names, because on a
shared box a saturated Locust or a saturated machine is as much a bottleneck as any module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio
import httpx
import psutil

from chatsys.lab.samples import HOST, LOAD_GENERATOR, RawSample, Scrape, parse_exposition

log = logging.getLogger("chatsys.lab")


@dataclass(frozen=True)
class ScrapeTarget:
    name: str
    module: str
    url: str


def host_samples() -> list[RawSample]:
    """The machine's busy CPU seconds (all cores) and its core count."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    busy = sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return [("host_cpu_busy_seconds_total", {}, float(busy)),
            ("host_cpu_count", {}, float(psutil.cpu_count() or 1))]


def process_samples(pid: int) -> list[RawSample]:
    """CPU seconds and RSS of ``pid`` alone."""
    try:
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        rss = float(proc.memory_info().rss)
    except psutil.Error:
        return []
    return [("process_cpu_seconds_total", {}, times.user + times.system),
            ("process_resident_memory_bytes", {}, rss)]


def generator_samples(pid: int) -> list[tuple[str, list[RawSample]]]:
    """(target, samples) for the load generator ``pid`` and each of its descendants (Locust
    ``--processes`` workers, the native driver's workers): each process on its own, because
    the rule asks whether one process is at a core, and several half-busy workers are not."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    named = [(LOAD_GENERATOR, pid), *((f"{LOAD_GENERATOR}-{c.pid}", c.pid) for c in children)]
    return [(name, samples) for name, p in named if (samples := process_samples(p))]


class Scraper:
    """Appends a scrape of every target (and of Locust and the machine) each ``interval``."""

    def __init__(self, out: IO[str], targets: Sequence[ScrapeTarget], *,
                 locust_pid: Callable[[], int | None] = lambda: None,
                 interval: float = 1.0) -> None:
        self.out = out
        self.targets = list(targets)
        self.locust_pid = locust_pid
        self.interval = interval
        self.ticks = 0
        self.errors = 0

    async def run(self) -> None:
        """Scrape until cancelled, on a fixed cadence (a slow tick does not shift the next)."""
        async with httpx.AsyncClient(timeout=max(0.5, self.interval * 0.8)) as client:
            next_tick = time.monotonic()
            while True:
                await self.tick(client)
                next_tick += self.interval
                await anyio.sleep(max(0.0, next_tick - time.monotonic()))

    async def tick_once(self) -> None:
        """One last scrape, so the end of the load is in the data even mid-interval."""
        async with httpx.AsyncClient(timeout=max(0.5, self.interval * 0.8)) as client:
            await self.tick(client)

    async def tick(self, client: httpx.AsyncClient) -> None:
        now = time.time()
        scrapes: list[Scrape] = [Scrape(now, HOST, HOST, host_samples())]
        pid = self.locust_pid()
        if pid is not None:
            scrapes += [Scrape(now, name, LOAD_GENERATOR, samples)
                        for name, samples in generator_samples(pid)]

        async def fetch(target: ScrapeTarget) -> None:
            try:
                response = await client.get(target.url)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                self.errors += 1
                log.debug("scrape of %s failed: %s", target.name, exc)
                return
            scrapes.append(Scrape(now, target.name, target.module,
                                  parse_exposition(response.text)))

        async with anyio.create_task_group() as tg:
            for target in self.targets:
                tg.start_soon(fetch, target)
        for scrape in scrapes:
            if scrape.samples:
                self.out.write(scrape.to_json() + "\n")
        self.out.flush()
        self.ticks += 1


def open_metrics(run_dir: Path) -> IO[str]:
    return (run_dir / "metrics.jsonl").open("a", encoding="utf-8")
