"""Room history in Redis (scaled-out module A): one Redis Stream per room.

Redis assigns each entry its id when it is added, so every A replica appending to a room gets
one order for that room for free. Raw stream ids (``1700000000000-10``) do not sort as strings
(``...-10`` < ``...-9``), while the contract promises ids that do: clients see the fixed-width
form ``0001700000000000-0000000010`` (16 digits of milliseconds, 10 of sequence), and
:func:`stream_id` turns either form back into what Redis expects. Streams are capped with
``MAXLEN ~ retention`` (cheap, whole-node trimming); reads never return more than
``retention`` entries, so what a room "keeps" is the same rule as SQLite's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatsys.chat.store import order_key, stored_form
from chatsys.runtime.storage import check_redis_durability, connect_redis
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import FileRef, Message

if TYPE_CHECKING:
    from redis.asyncio import Redis

ROOM_KEY = "chatsys:room:{}"
MAX_STREAM_MS = 2**64 - 1


def room_key(room: str) -> str:
    return ROOM_KEY.format(room)


def message_id(stream_id: str) -> str:
    """The contract's form of a stream id: fixed width, so ids compare as strings."""
    ms, _, seq = stream_id.partition("-")
    return f"{int(ms):016d}-{int(seq or 0):010d}"


def stream_id(message_id: str) -> str:
    """A message id (fixed-width, raw, or a bare number) as a Redis stream id."""
    ms, seq = order_key(message_id)
    return f"{ms}-{seq}"


def encode(msg: Message, ts_ms: int) -> dict[str, str | int]:
    fields: dict[str, str | int] = {"user": msg.user, "session": msg.session, "ts": ts_ms}
    body = msg.WhichOneof("body")
    if body == "text":
        fields["text"] = msg.text
    elif body == "file":
        fields.update(file_id=msg.file.id, file_name=msg.file.name, file_size=msg.file.size,
                      file_type=msg.file.content_type)
    return fields


def decode(room: str, entry_id: str, fields: dict[str, str]) -> Message:
    msg = Message(id=message_id(entry_id), room=room, user=fields.get("user", ""),
                  session=fields.get("session", ""), ts=int(fields.get("ts", 0)))
    if "text" in fields:
        msg.text = fields["text"]
    else:
        msg.file.CopyFrom(FileRef(id=fields.get("file_id", ""), name=fields.get("file_name", ""),
                                  size=int(fields.get("file_size", 0)),
                                  content_type=fields.get("file_type", "")))
    return msg


class RedisMessageStore:
    def __init__(self, client: Redis, writer: Redis, retention: int) -> None:
        self._redis = client
        self._writer = writer
        self.retention = retention

    @classmethod
    async def open(cls, url: str, *, retention: int) -> RedisMessageStore:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = await connect_redis(url)
        await check_redis_durability(client)
        # Appends never retry by themselves: a transaction whose reply was lost may have been
        # applied, and sending it again would store the batch twice.
        writer = await connect_redis(url, retry=Retry(NoBackoff(), 0))
        return cls(client, writer, retention)

    async def append(self, batch: Sequence[Message], ts_ms: int) -> list[Message]:
        """One MULTI/EXEC: the batch is stored whole or not at all, in order.

        With ``appendfsync always`` Redis replies only after the AOF holds the batch, so
        returning here means durable (the ack rule of the Protocol).
        """
        if not batch:
            return []
        async with self._writer.pipeline(transaction=True) as pipe:
            for msg in batch:
                pipe.xadd(room_key(msg.room), encode(msg, ts_ms),  # type: ignore[arg-type]
                          maxlen=self.retention, approximate=True)
            ids = await pipe.execute()
        stored = []
        for msg, entry_id in zip(batch, ids, strict=True):
            stored.append(stored_form(msg, message_id(entry_id), ts_ms))
        return stored

    async def last(self, room: str, limit: int) -> list[Message]:
        limit = max(0, min(limit, self.retention))
        if limit == 0:
            return []
        entries = await self._redis.xrevrange(room_key(room), count=limit)
        return [decode(room, entry_id, fields) for entry_id, fields in reversed(entries)]

    async def after(self, room: str, since: str) -> list[Message]:
        start = stream_id(since)
        if order_key(since)[0] > MAX_STREAM_MS:
            return []
        # Newest first with the retention bound, so a long gap returns what is still kept.
        entries = await self._redis.xrevrange(room_key(room), min=f"({start}",
                                              count=self.retention)
        return [decode(room, entry_id, fields) for entry_id, fields in reversed(entries)]

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        """Nothing is buffered: every append was acknowledged by Redis before it returned."""
        await self._writer.aclose()
        await self._redis.aclose()
