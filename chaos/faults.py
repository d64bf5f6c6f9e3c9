"""The fault schedule, one fault at a time, each healed before the next, and the recovery probe.

A fault has a start (the fault is injected), a heal (the killed process is back and answering,
the frozen one continued, the partition healed) and a recovery: the first moment after the heal
at which, on EVERY gateway, a join to a NEW room, a 10 KB upload announced with a ``file``
frame, and a text send all succeeded. Recovery time = recovery - heal.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from chaos.members import FILE_BYTES, OpFailed, open_socket, upload
from chaos.topology import System, TopologyError

log = logging.getLogger("chaos.faults")

# Every kind, in the order one round injects them.
KINDS = ["kill-A", "kill-A", "kill-B", "kill-B", "kill-redis", "kill-gateway", "freeze-A",
         "partition"]
TARGETS = {"kill-A": ["A-0", "A-1"], "kill-B": ["B-0", "B-1"], "kill-redis": ["redis"],
           "kill-gateway": ["P-1"], "freeze-A": ["A-1"], "partition": ["P-0->A-0"]}


@dataclass
class FaultRecord:
    kind: str
    target: str
    start: float  # seconds since the run began
    heal: float | None = None
    recovered: float | None = None
    recovery_seconds: float | None = None
    heal_seconds: float | None = None  # start to heal (restart time included)
    probe_failures: list[str] = field(default_factory=list)

    def window(self, bound: float) -> tuple[float, float]:
        """When this fault may excuse a failure: from its start to its recovery (or, if it
        never recovered, the bound after its heal)."""
        end = self.recovered if self.recovered is not None else (
            (self.heal if self.heal is not None else self.start) + bound)
        return self.start, end

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "start": _r(self.start),
                "heal": _r(self.heal), "recovered": _r(self.recovered),
                "recovery_seconds": _r(self.recovery_seconds),
                "heal_seconds": _r(self.heal_seconds),
                "probe_failures": self.probe_failures[-10:]}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def schedule(only: str = "") -> list[tuple[str, str]]:
    """One round: (kind, target) for every kind and every target of it; ``only``, a comma
    list of kinds, keeps those (to soak one fault kind on its own)."""
    kinds = [k for k in KINDS if not only or k in only.split(",")]
    picks = {kind: itertools.cycle(targets) for kind, targets in TARGETS.items()}
    return [(kind, next(picks[kind])) for kind in kinds]


class Injector:
    """Injects and heals faults on a topology; times are relative to ``t0`` (monotonic)."""

    def __init__(self, system: System, t0: float, *, hold: float, freeze: float,
                 partition: float, bound: float, op_timeout: float, give_up: float) -> None:
        self.system = system
        self.t0 = t0
        self.hold, self.freeze, self.partition = hold, freeze, partition
        self.bound, self.op_timeout, self.give_up = bound, op_timeout, give_up
        self.records: list[FaultRecord] = []
        self._probes = itertools.count()

    def now(self) -> float:
        return time.monotonic() - self.t0

    @property
    def active(self) -> FaultRecord | None:
        """The fault in progress (injected and not yet recovered or given up on)."""
        if self.records and self.records[-1].recovered is None:
            return self.records[-1]
        return None

    async def inject(self, kind: str, target: str, http: httpx.AsyncClient) -> FaultRecord:
        record = FaultRecord(kind, target, self.now())
        self.records.append(record)
        log.info("fault %s on %s at %.1fs", kind, target, record.start)
        try:
            await self._cause_and_heal(kind, target)
        except TopologyError as exc:
            record.probe_failures.append(f"could not heal: {exc}"[:400])
            log.error("%s on %s: could not heal: %s", kind, target, exc)
            return record
        record.heal = self.now()
        record.heal_seconds = record.heal - record.start
        log.info("healed %s on %s at %.1fs", kind, target, record.heal)
        await self._await_recovery(record, http)
        return record

    async def _cause_and_heal(self, kind: str, target: str) -> None:
        topology = self.system.topology
        if kind.startswith("kill-"):
            member = topology.member(target)
            await topology.kill(member)
            await anyio.sleep(self.hold)
            await topology.restart(member)
        elif kind == "freeze-A":
            member = topology.member(target)
            member.signal(signal.SIGSTOP)
            try:
                await anyio.sleep(self.freeze)
            finally:
                member.signal(signal.SIGCONT)
        elif kind == "partition":
            self.system.proxy.cut()
            try:
                await anyio.sleep(self.partition)
            finally:
                self.system.proxy.heal()
        else:
            raise ValueError(f"unknown fault kind {kind}")

    async def _await_recovery(self, record: FaultRecord, http: httpx.AsyncClient) -> None:
        """Probe every gateway until each has served a full session; give up only after
        ``give_up`` seconds (beyond the bound), so that a slow recovery is still measured."""
        assert record.heal is not None
        pending = {member.name: member.port for member in self.system.gateways}
        done_at: dict[str, float] = {}
        give_up = time.monotonic() + max(self.give_up, self.bound)
        while pending and time.monotonic() < give_up:
            for name, port in list(pending.items()):
                try:
                    await probe(port, f"probe-{next(self._probes)}", http, self.op_timeout)
                except OpFailed as exc:
                    record.probe_failures.append(f"{self.now():.1f}s {name}: {exc}")
                    continue
                done_at[name] = self.now()
                del pending[name]
            if pending:
                await anyio.sleep(0.2)
        if not pending:
            record.recovered = max(done_at.values())
            record.recovery_seconds = record.recovered - record.heal
        log.info("%s on %s: recovery %s", record.kind, record.target,
                 f"{record.recovery_seconds:.2f}s" if record.recovery_seconds is not None
                 else "NEVER")


async def probe(port: int, room: str, http: httpx.AsyncClient, seconds: float) -> None:
    """A whole session on a fresh room: join, upload + file frame, text; OpFailed if any
    step fails."""
    ws, welcome = await open_socket(port, "prober", room, None, seconds)
    try:
        with anyio.fail_after(seconds):
            file_id = await upload(http, port, room, welcome["token"], os.urandom(FILE_BYTES))
            await _acked(ws, {"type": "file", "file_id": file_id, "ref": "f"})
            await _acked(ws, {"type": "text", "text": "probe", "ref": "t"})
    except TimeoutError:
        raise OpFailed(f"probe not done within {seconds:g}s") from None
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await ws.close()


async def _acked(ws: ClientConnection, frame: dict[str, Any]) -> None:
    try:
        await ws.send(json.dumps(frame))
        async for raw in ws:
            reply = json.loads(raw)
            if reply.get("ref") == frame["ref"] and reply.get("type") in ("ack", "error"):
                if reply["type"] == "error":
                    raise OpFailed(f"{frame['type']}: {reply.get('code')} {reply.get('message')}")
                return
    except (OSError, websockets.WebSocketException) as exc:
        raise OpFailed(f"{frame['type']}: {type(exc).__name__}") from None
    raise OpFailed(f"{frame['type']}: socket closed {ws.close_code}")

