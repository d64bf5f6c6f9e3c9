"""The continuous mixed workload: members in rooms spread over both gateways, and churn.

Shaped like the seed's session (locustfiles/chat.py's ChatUser) but with users that come and
go: every ``churn_every`` seconds one member leaves for good and someone joins — an existing
room, or (``new_room_share`` of the time) a NEW room with one member on each gateway, so that
joins to rooms nobody follows yet are exercised all the time, faults included.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import anyio
import anyio.abc
import httpx

from chaos.members import Ledger, Member, OpStats, Pace


@dataclass
class Shape:
    rooms: int = 4
    per_room: int = 3
    churn_every: float = 2.0
    new_room_share: float = 0.3


class Workload:
    def __init__(self, gateways: list[int], shape: Shape, pace: Pace,
                 http: httpx.AsyncClient) -> None:
        self.gateways = gateways
        self.shape = shape
        self.pace = pace
        self.http = http
        self.stats = OpStats()
        self.ledger = Ledger()
        self.members: list[Member] = []
        self.ops_stopped = anyio.Event()
        self._names = itertools.count()
        self._rooms = itertools.count()
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def live(self) -> list[Member]:
        return [m for m in self.members if not m.leaving]

    @property
    def target(self) -> int:
        return self.shape.rooms * self.shape.per_room

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Members run here until ``close``; churn runs until ``stop_ops``."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for _ in range(self.shape.rooms):
                room = self._new_room()
                for i in range(self.shape.per_room):
                    self._join(room, i % len(self.gateways))
            task_status.started()
            await self._churn()
            await anyio.sleep_forever()  # members keep reading (and resuming) until close

    def _new_room(self) -> str:
        return f"chaos-{next(self._rooms)}"

    def _join(self, room: str, home: int) -> None:
        assert self._tg is not None
        member = Member(f"u{next(self._names)}", room, self.gateways, home, stats=self.stats,
                        ledger=self.ledger, http=self.http, pace=self.pace,
                        ops_stopped=self.ops_stopped)
        self.members.append(member)
        self._tg.start_soon(member.run)

    async def _churn(self) -> None:
        while not self.ops_stopped.is_set():
            await anyio.sleep(self.shape.churn_every * random.uniform(0.5, 1.5))
            if self.ops_stopped.is_set():
                return
            live = self.live
            if len(live) >= self.target:
                await random.choice(live).leave()
            rooms = sorted({m.room for m in self.live})
            if not rooms or random.random() < self.shape.new_room_share:
                room = self._new_room()
                for home in range(len(self.gateways)):
                    self._join(room, home)
            else:
                self._join(random.choice(rooms), random.randrange(len(self.gateways)))

    def stop_ops(self) -> None:
        """No new operations and no more churn; members keep reading and resuming."""
        self.ops_stopped.set()

    def lagging(self) -> list[Member]:
        """Members still in their room that have not yet seen the room's newest ack."""
        behind = []
        for member in self.live:
            newest = self.ledger.newest(member.room)
            if not member.joined or not member.connected:
                behind.append(member)
            elif newest is not None and (member.cursor or "") < newest:
                behind.append(member)
        return behind

    async def drain(self, within: float) -> list[Member]:
        """Wait (up to ``within`` seconds) until no operation is in flight and every remaining
        member has caught up with its room's newest acknowledged message."""
        with anyio.move_on_after(within):
            while True:
                if not any(m.busy for m in self.members) and not self.lagging():
                    break
                await anyio.sleep(0.2)
        return self.lagging()

    def close(self) -> None:
        """End every member (each closes its socket; those still in a room count as stayed)."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
