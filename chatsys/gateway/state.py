"""What the gateway's routes share: settings, the gRPC clients, the fan-out hub, drain state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio

from chatsys.gateway import health
from chatsys.gateway.auth import Authenticator
from chatsys.gateway.clients.caller import Caller
from chatsys.gateway.clients.chat import ChatClient
from chatsys.gateway.clients.files import FilesClient
from chatsys.gateway.clients.users import UsersClient
from chatsys.gateway.fanout import RoomHub
from chatsys.runtime.grpc_clients import ChannelPool, parse_target
from chatsys.runtime.settings import Settings
from chatsys.runtime.supervision import TaskBoard
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import Message
from chatsys.tokens import signer_for


@dataclass
class Gateway:
    settings: Settings
    pools: tuple[ChannelPool, ...]  # users, chat, files: each resolved and closed here
    users: UsersClient
    chat: ChatClient
    files: FilesClient
    auth: Authenticator
    hub: RoomHub
    tasks: TaskBoard = field(default_factory=TaskBoard)
    draining: bool = False
    sockets: int = 0
    pending_joins: int = 0  # upgrades admitted and not yet accepted (--max-pending-joins)
    # Probes may come every second from several kubelets: answer from a short-lived result.
    _ready: tuple[float, bool] = (0.0, False)
    _idle: anyio.Event = field(default_factory=anyio.Event)

    async def backends_ready(self, max_age: float = 1.0) -> bool:
        checked_at, ok = self._ready
        if time.monotonic() - checked_at > max_age:
            ok = await health.ready(self.pools, self.settings.grpc_timeout)
            self._ready = (time.monotonic(), ok)
        return ok

    def acquire_socket(self) -> None:
        self.sockets += 1

    def release_socket(self) -> None:
        self.sockets -= 1
        if self.sockets == 0:
            self._idle.set()
            self._idle = anyio.Event()

    @contextmanager
    def pending_join(self) -> Iterator[None]:
        """Count one join from its admission until its upgrade is accepted (or refused)."""
        self.pending_joins += 1
        try:
            yield
        finally:
            self.pending_joins -= 1

    async def wait_idle(self) -> None:
        """Until no WebSocket handler is running."""
        if self.sockets:
            await self._idle.wait()

    def close(self) -> None:
        """Close every channel to A and B."""
        for pool in self.pools:
            pool.close()

    @classmethod
    def create(cls, settings: Settings) -> Gateway:
        def caller(service: str, address: str) -> Caller:
            pool = ChannelPool(parse_target(address), service=service,
                               keepalive=settings.grpc_keepalive)
            return Caller(pool, settings.grpc_timeout)

        users = UsersClient(caller("users", settings.users_addr))
        chat = ChatClient(caller("chat", settings.chat_addr))
        files = FilesClient(caller("files", settings.files_addr))

        async def newest(room: str) -> list[Message]:
            return await chat.history(room, "", settings.history_limit)

        hub = RoomHub(chat.subscribe, newest, join_timeout=settings.grpc_timeout,
                      history_limit=settings.history_limit)
        pools = (users.caller.pool, chat.caller.pool, files.caller.pool)
        return cls(settings, pools, users, chat, files,
                   Authenticator(signer_for(settings.auth_secret), users), hub)
