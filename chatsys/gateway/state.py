"""What the gateway's routes share: settings, backends, the fan-out hub, and drain state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio

from chatsys.gateway.backends import Backends
from chatsys.gateway.fanout import RoomHub
from chatsys.runtime.settings import Settings
from chatsys.runtime.supervision import TaskBoard
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import Message


@dataclass
class Gateway:
    settings: Settings
    backends: Backends
    hub: RoomHub
    tasks: TaskBoard = field(default_factory=TaskBoard)
    draining: bool = False
    sockets: int = 0
    # Probes may come every second from several kubelets: answer from a short-lived result.
    _ready: tuple[float, bool] = (0.0, False)
    _idle: anyio.Event = field(default_factory=anyio.Event)

    async def backends_ready(self, max_age: float = 1.0) -> bool:
        checked_at, ok = self._ready
        if time.monotonic() - checked_at > max_age:
            ok = await self.backends.ready()
            self._ready = (time.monotonic(), ok)
        return ok

    def acquire_socket(self) -> None:
        self.sockets += 1

    def release_socket(self) -> None:
        self.sockets -= 1
        if self.sockets == 0:
            self._idle.set()
            self._idle = anyio.Event()

    async def wait_idle(self) -> None:
        """Until no WebSocket handler is running."""
        if self.sockets:
            await self._idle.wait()

    @classmethod
    def create(cls, settings: Settings) -> Gateway:
        backends = Backends(settings)
        async def newest(room: str) -> list[Message]:
            return await backends.history(room, "", settings.history_limit)

        hub = RoomHub(backends.subscribe, newest, join_timeout=settings.grpc_timeout,
                      history_limit=settings.history_limit)
        return cls(settings, backends, hub)
