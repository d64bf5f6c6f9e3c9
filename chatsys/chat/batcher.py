"""Group commit for appends: many concurrent appends, one transaction, then publish, then ack.

One task owns the write path and keeps exactly one batch in flight. For each batch it commits
every message in one transaction, then hands the committed messages to the broker in id order,
and only then resolves each caller's future. So nobody is acknowledged before the message is
durable, and with the local broker a subscriber sees a room's messages in id order before the
sender's ack (with Redis the replicas' stream readers deliver them, in the stream's order).
Under load, batches grow by themselves: whatever queued during one commit goes into the next.

Only an append refused *before* it was queued fails with UNAVAILABLE (shutting down,
overloaded): the gateway may retry those on another replica without risking a duplicate. A
failed commit is ambiguous (the store may have it) and fails with
:class:`~chatsys.errors.StoreFailed`: ``unavailable`` to the client, ABORTED on the wire so
that nothing retries it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Counter, Histogram

from chatsys.chat.broker import Broker
from chatsys.chat.store import MessageStore
from chatsys.errors import ChatError, Internal, StoreFailed, Unavailable
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import Message

log = logging.getLogger("chatsys.chat.batcher")
MAX_BATCH = 1000
MAX_PENDING = 50_000  # queued appends beyond this are refused (UNAVAILABLE) rather than buffered

BATCH_SIZE = Histogram("chatsys_append_batch_size", "Messages committed per transaction.",
                       buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000))
COMMIT_SECONDS = Histogram("chatsys_append_commit_seconds", "Time to commit one append batch.",
                           buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                    0.5, 1, 2.5))
STORED = Counter("chatsys_messages_stored_total", "Messages committed to the store.")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Batcher:
    def __init__(self, store: MessageStore, broker: Broker, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.broker = broker
        self.max_batch = max_batch
        self._pending: list[tuple[Message, asyncio.Future[Message]]] = []
        self._wake = asyncio.Event()
        self._closing = False

    async def append(self, message: Message) -> Message:
        """Store ``message`` (id empty); returns it with id and ts once committed and published."""
        return await self._queue([message])[0]

    async def append_many(self, messages: list[Message]) -> list[Message | ChatError]:
        """Store several messages, queued together (all or none): each one's stored form or
        the error that stopped it, in order."""
        outcomes: list[Message | ChatError] = []
        for future in self._queue(messages):
            try:
                outcomes.append(await future)
            except ChatError as exc:
                outcomes.append(exc)
        return outcomes

    def _queue(self, messages: list[Message]) -> list[asyncio.Future[Message]]:
        if self._closing:
            raise Unavailable("the chat service is shutting down")
        if len(self._pending) + len(messages) > MAX_PENDING:
            raise Unavailable("the chat service is overloaded")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Message]] = [loop.create_future() for _ in messages]
        self._pending.extend(zip(messages, futures, strict=True))
        self._wake.set()
        return futures

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
            try:
                await self._commit(batch)
            except BaseException:
                # Whoever waits on this batch gets an answer, however the loop ends.
                _fail(batch, Internal("the message could not be stored"))
                raise

    async def _commit(self, batch: list[tuple[Message, asyncio.Future[Message]]]) -> None:
        started = time.perf_counter()
        try:
            stored = await self.store.append([m for m, _ in batch], _now_ms())
        except Exception:
            log.exception("could not store %d messages", len(batch))
            _fail(batch, StoreFailed("storage is unavailable: the message may not have been "
                                     "stored"))
            return
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        BATCH_SIZE.observe(len(batch))
        STORED.inc(len(stored))
        for message, (_, future) in zip(stored, batch, strict=True):
            self.broker.published(message)
            if not future.done():
                future.set_result(message)

    @property
    def closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Refuse new appends; :meth:`run` returns after committing what is queued."""
        self._closing = True
        self._wake.set()


def _fail(batch: list[tuple[Message, asyncio.Future[Message]]], error: ChatError) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(type(error)(error.message))
