"""Group commit for appends: many concurrent appends, one transaction, then publish, then ack.

One task owns the write path and keeps exactly one batch in flight. For each batch it commits
every message in one transaction (in the store's thread), then publishes the committed messages
to the hub in id order, and only then resolves each caller's future. So a subscriber sees a
room's messages in id order, and nobody is acknowledged before the message is durable. Under
load, batches grow by themselves: whatever queued during one commit goes into the next.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Counter, Histogram

from chatsys.chat.hub import Hub
from chatsys.chat.store import MessageStore
from chatsys.errors import Internal, Unavailable
from chatsys.stubs.chatsys.chat.v1 import Message, RoomEvent

log = logging.getLogger("chatsys.chat.batcher")
MAX_BATCH = 1000
MAX_PENDING = 50_000  # queued appends beyond this are refused (UNAVAILABLE) rather than buffered

BATCH_SIZE = Histogram("chatsys_append_batch_size", "Messages committed per transaction.",
                       buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000))
COMMIT_SECONDS = Histogram("chatsys_append_commit_seconds", "Time to commit one append batch.",
                           buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                    0.5, 1, 2.5))
STORED = Counter("chatsys_messages_stored_total", "Messages committed to the store.")
DELIVERIES = Counter("chatsys_hub_deliveries_total", "Events queued for subscribers by the hub.")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Batcher:
    def __init__(self, store: MessageStore, hub: Hub, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.hub = hub
        self.max_batch = max_batch
        self._pending: list[tuple[Message, asyncio.Future[Message]]] = []
        self._wake = asyncio.Event()
        self._closing = False

    async def append(self, message: Message) -> Message:
        """Store ``message`` (id empty); returns it with id and ts once committed and published."""
        if self._closing:
            raise Unavailable("the chat service is shutting down")
        if len(self._pending) >= MAX_PENDING:
            raise Unavailable("the chat service is overloaded")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending.append((message, future))
        self._wake.set()
        return await future

    async def run(self) -> None:
        """The write loop; returns after :meth:`close` once everything queued is committed."""
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[Message, asyncio.Future[Message]]]) -> None:
        started = time.perf_counter()
        try:
            stored = await self.store.append([m for m, _ in batch], _now_ms())
        except Exception:
            log.exception("could not store %d messages", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(Internal("the message could not be stored"))
            return
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        BATCH_SIZE.observe(len(batch))
        STORED.inc(len(stored))
        for message, (_, future) in zip(stored, batch, strict=True):
            DELIVERIES.inc(self.hub.publish(message.room, RoomEvent(message=message)))
            if not future.done():
                future.set_result(message)

    def close(self) -> None:
        """Refuse new appends; :meth:`run` returns after committing what is queued."""
        self._closing = True
        self._wake.set()
