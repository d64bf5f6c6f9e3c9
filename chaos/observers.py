"""Watching the gateways while the run goes on.

- ``ReadinessObserver``: each gateway's ``/readyz`` once a second, each answer followed at once
  by a real join to a NEW room on that gateway. An answer is truthful when it agrees with the
  join (200 and the join worked; 503 or no answer and the join failed). The checker excuses a
  disagreement only inside a fault's window (from its injection until it recovered).
- ``ResourceSampler``: each gateway's ``/metrics`` every two seconds: RSS
  (``process_resident_memory_bytes``) and ``chatsys_asyncio_tasks`` when the gateway has it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families

from chaos.members import OpFailed, open_socket
from chatsys.runtime.topology import Member

TASKS_GAUGE = "chatsys_asyncio_tasks"
RSS_GAUGE = "process_resident_memory_bytes"


@dataclass
class Readiness:
    gateway: str
    start: float  # seconds since t0, when /readyz was asked
    end: float  # when the join attempt ended
    status: int  # 0: no HTTP answer at all
    join_ok: bool
    join_error: str = ""

    @property
    def truthful(self) -> bool:
        return (self.status == 200) == self.join_ok


@dataclass
class Sample:
    gateway: str
    t: float
    pid: int | None
    rss_bytes: float | None
    tasks: float | None


class ReadinessObserver:
    def __init__(self, gateways: list[Member], t0: float, *, interval: float = 1.0,
                 join_timeout: float = 5.0) -> None:
        self.gateways, self.t0 = gateways, t0
        self.interval, self.join_timeout = interval, join_timeout
        self.observations: list[Readiness] = []
        self._rooms = itertools.count()

    async def run(self, http: httpx.AsyncClient) -> None:
        async with anyio.create_task_group() as tg:
            for node in self.gateways:
                tg.start_soon(self._watch, node, http)

    async def _watch(self, node: Member, http: httpx.AsyncClient) -> None:
        while True:
            began = time.monotonic()
            start = began - self.t0
            try:
                status = (await http.get(f"http://127.0.0.1:{node.port}/readyz",
                                         timeout=2.0)).status_code
            except httpx.HTTPError:
                status = 0
            join_ok, why = True, ""
            try:
                ws, _ = await open_socket(node.port, "readiness",
                                          f"ready-{node.name}-{next(self._rooms)}", None,
                                          self.join_timeout)
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await ws.close()
            except OpFailed as exc:
                join_ok, why = False, str(exc)
            self.observations.append(Readiness(node.name, start, time.monotonic() - self.t0,
                                               status, join_ok, why))
            await anyio.sleep(max(0.0, self.interval - (time.monotonic() - began)))


class ResourceSampler:
    def __init__(self, gateways: list[Member], t0: float, interval: float = 2.0) -> None:
        self.gateways, self.t0, self.interval = gateways, t0, interval
        self.samples: list[Sample] = []

    async def run(self, http: httpx.AsyncClient) -> None:
        while True:
            for node in self.gateways:
                sample = await self.sample(node, http)
                if sample is not None:
                    self.samples.append(sample)
            await anyio.sleep(self.interval)

    async def sample(self, node: Member, http: httpx.AsyncClient) -> Sample | None:
        try:
            text = (await http.get(f"http://127.0.0.1:{node.port}/metrics", timeout=3.0)).text
        except httpx.HTTPError:
            return None  # down (a fault): nothing to sample
        values = gauges(text, {RSS_GAUGE, TASKS_GAUGE})
        return Sample(node.name, time.monotonic() - self.t0, node.pid, values.get(RSS_GAUGE),
                      values.get(TASKS_GAUGE))


def gauges(text: str, names: set[str]) -> dict[str, float]:
    """The sum of each named metric's samples (a gateway with workers reports one per worker,
    but the harness runs one)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found
