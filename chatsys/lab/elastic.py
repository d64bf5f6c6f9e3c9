"""The local HPA: the :mod:`chatsys.lab.autoscaler` decision applied to a topology's gateways.

Every sync period it reads each gateway's own ``/metrics`` (as metrics-server and the
Prometheus adapter read each pod's), turns them into readings — CPU as the rate of
``process_cpu_seconds_total`` since the previous sync (a gateway seen for the first time has
none yet, as a new pod has no CPU sample), connections as ``chatsys_ws_connections`` — asks the
autoscaler for a scale, and adds or removes gateways on the topology's shared port until it
runs that many (:meth:`Topology.add_gateway`, :meth:`Topology.remove_gateway`). Removal takes
the newest gateways first, as a ReplicaSet does; each drains, closing its WebSockets with 1001,
and its clients reconnect to the port with ``since``.

Each decision and each change is a line of ``hpa.jsonl`` in the run directory: the report plots
replicas over time from it, and the reasons say why (``ScaleDownStabilized``, ``ScaleUpLimit``...).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

from chatsys.lab.autoscaler import CPU, Autoscaler, Decision, Readings
from chatsys.lab.samples import parse_exposition
from chatsys.runtime.members import Member
from chatsys.runtime.topology import Topology, TopologyError

log = logging.getLogger("chatsys.lab.hpa")
CPU_SECONDS = "process_cpu_seconds_total"
CONNECTIONS = "chatsys_ws_connections"
HPA_FILE = "hpa.jsonl"


def read_hpa(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's ``hpa.jsonl`` (none for a run without the autoscaler)."""
    path = run_dir / HPA_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class ElasticGateways:
    """Runs the autoscaler against ``topology`` (started with ``shared_port``) until cancelled;
    ``on_change`` is called with the gateways after every change (the scraper follows them)."""

    def __init__(self, topology: Topology, autoscaler: Autoscaler, records: Path, *,
                 on_change: Callable[[list[Member]], None] = lambda gateways: None) -> None:
        self.topology = topology
        self.autoscaler = autoscaler
        self.records = records
        self.on_change = on_change
        self.cpu_seen: dict[str, tuple[float, float]] = {}  # gateway -> (time, CPU seconds)

    @property
    def gateways(self) -> list[Member]:
        return self.topology.members_of("P")

    async def run(self) -> None:
        self._record({"event": "replicas", "replicas": len(self.gateways),
                      "gateways": [m.name for m in self.gateways]})
        async with httpx.AsyncClient(timeout=5.0) as http:
            while True:
                await self.sync(http)
                await anyio.sleep(self.autoscaler.spec.sync_period)

    async def sync(self, http: httpx.AsyncClient) -> Decision:
        """One reconcile: read, decide, scale, record."""
        readings = await self.read(http)
        current = len(self.gateways)
        decision = self.autoscaler.decide(current, readings, time.monotonic())
        self._record({"event": "decision", **decision.to_record(), "readings": readings})
        if decision.replicas != current:
            await self.scale(decision)
            self.autoscaler.scaled(current, len(self.gateways), time.monotonic())
        return decision

    async def read(self, http: httpx.AsyncClient) -> Readings:
        cpu: dict[str, float | None] = {}
        connections: dict[str, float | None] = {}

        async def one(member: Member) -> None:
            try:
                response = await http.get(member.metrics_url)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                log.debug("no metrics from %s: %s", member.name, exc)
                cpu[member.name] = connections[member.name] = None
                return
            now = time.monotonic()
            samples = parse_exposition(response.text)
            used = sum(v for name, _, v in samples if name == CPU_SECONDS)
            before = self.cpu_seen.get(member.name)
            self.cpu_seen[member.name] = (now, used)
            cpu[member.name] = (used - before[1]) / (now - before[0]) if before else None
            connections[member.name] = sum(v for name, _, v in samples if name == CONNECTIONS)

        async with anyio.create_task_group() as tg:
            for member in self.gateways:
                tg.start_soon(one, member)
        return {CPU: cpu, CONNECTIONS: connections}

    async def scale(self, decision: Decision) -> None:
        """Start or stop gateways (side by side, as pods start together) until the decided
        number runs."""
        replicas, current = decision.replicas, self.gateways
        started = time.monotonic()
        added: list[str] = []
        removed: list[str] = []

        async def add() -> None:
            try:
                added.append((await self.topology.add_gateway()).name)
            except TopologyError as exc:
                self._record({"event": "error", "error": str(exc).splitlines()[0]})

        async def remove(member: Member) -> None:
            await self.topology.remove_gateway(member)
            self.cpu_seen.pop(member.name, None)
            removed.append(member.name)

        async with anyio.create_task_group() as tg:
            for _ in range(replicas - len(current)):
                tg.start_soon(add)
            for member in current[::-1][:max(0, len(current) - replicas)]:  # newest first
                tg.start_soon(remove, member)
        self._record({"event": "replicas", "replicas": len(self.gateways),
                      "gateways": [m.name for m in self.gateways], "added": added,
                      "removed": removed, "seconds": round(time.monotonic() - started, 3),
                      "reason": decision.reason, "ratios": decision.ratios})
        log.info("gateways: %d (+%s -%s)", len(self.gateways), added, removed)
        self.on_change(self.gateways)

    def _record(self, record: dict[str, Any]) -> None:
        # Appended and closed at once: a run stopped at any point keeps every decision.
        with self.records.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"time": time.time(), **record}) + "\n")
