"""The message store Protocol and its factory.

Retention: each room keeps its newest :data:`RETENTION` messages (10,000 by default). Older
ones are pruned as new ones arrive, and no query ever returns more than the retention bound, so
"every message after ``since``" means every message the room still keeps after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from chatsys.runtime.settings import Settings
from chatsys.runtime.storage import by_backend
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import Message

RETENTION = 10_000
MAX_HISTORY = 1000  # the most a History call without `since` returns


def order_key(message_id: str) -> tuple[int, int]:
    """Sort key of a message id, whatever its backend and width.

    ``"0000000000000042"`` (SQLite row), ``"0001700000000000-0000000003"`` (a Redis stream id
    in the fixed-width form ids are issued in) and the raw ``"1700000000000-3"`` all parse, so
    the store can compare any id a client sends back.
    """
    head, _, tail = message_id.partition("-")
    return int(head or 0), int(tail or 0)


def stored_form(draft: Message, message_id: str, ts_ms: int) -> Message:
    """What a store returns for an appended draft: a copy with its id and timestamp set."""
    stored = Message()
    stored.CopyFrom(draft)
    stored.id = message_id
    stored.ts = ts_ms
    return stored


class MessageStore(Protocol):
    retention: int

    async def append(self, batch: Sequence[Message], ts_ms: int) -> list[Message]:
        """Store ``batch`` (ids empty) in one transaction, in order; returns them with id and ts.

        Ids grow in append order within a room. When this returns, the batch is durable.
        """

    async def last(self, room: str, limit: int) -> list[Message]:
        """The newest ``limit`` kept messages of ``room``, oldest first."""

    async def after(self, room: str, since: str) -> list[Message]:
        """Every kept message of ``room`` after id ``since``, oldest first."""

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


async def open_message_store(settings: Settings, *, retention: int = RETENTION) -> MessageStore:
    url = settings.store_url

    async def sqlite() -> MessageStore:
        from chatsys.chat.sqlite_store import SqliteMessageStore

        return await SqliteMessageStore.open(url, retention=retention)

    async def redis() -> MessageStore:
        from chatsys.chat.redis_store import RedisMessageStore

        return await RedisMessageStore.open(url, retention=retention)

    return await by_backend(url, sqlite=sqlite, redis=redis)
