"""Cross-replica fan-out over Redis: each A replica feeds its hub from the room streams.

One reader task per replica issues ``XREAD BLOCK`` over the streams of the rooms that have
subscribers on this replica (messages: the room's history stream; presence: a short, expiring
stream beside it). Redis orders each room's stream once, so every replica delivers a room's
messages in the same order, whichever replica appended them.

No gap: when a room gets its first local subscriber, :meth:`RedisBroker.subscribe` reads the
stream's newest id *after* registering with the hub and reads on from exactly there; the
servicer then replays history from the store, and skips live messages it already replayed.

A blocked XREAD only sees the streams it was called with, so adding a room wakes the reader by
appending to this replica's own wake stream, which every XREAD includes. That works even if
the XADD lands before the XREAD starts (the entry is simply already there), unlike unblocking
a client by id.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from chatsys.chat.broker import DELIVERIES
from chatsys.chat.hub import Hub, Subscription
from chatsys.chat.redis_store import decode, room_key
from chatsys.runtime.storage import connect_redis, redis_client
from chatsys.runtime.supervision import Policy, supervise
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import Message, Presence, RoomEvent

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("chatsys.chat.redis_broker")
PRESENCE_KEY = "chatsys:presence:{}"
WAKE_KEY = "chatsys:wake:{}"
PRESENCE_KEEP = 100  # presence is live-only; a short tail is enough for readers to catch up
PRESENCE_TTL_MS = 3_600_000
WAKE_TTL_MS = 60_000
BLOCK_MS = 2_000
READ_COUNT = 1_000
RETRY_FIRST, RETRY_MAX = 0.1, 2.0


def presence_key(room: str) -> str:
    return PRESENCE_KEY.format(room)


@dataclass(eq=False)
class _Watch:
    """Where the reader is in one room's two streams."""

    room: str
    pos: str
    presence_pos: str


def _presence_event(value: str | int) -> int:
    """An event as publish_presence stored it; anything else reads as unspecified."""
    event = int(value)
    return event if event in (Presence.EVENT_JOIN, Presence.EVENT_LEAVE) \
        else Presence.EVENT_UNSPECIFIED


def _last_id(entries: list[Any]) -> str:
    return str(entries[0][0]) if entries else "0-0"


class RedisBroker:
    def __init__(self, commands: Redis, reader: Redis, hub: Hub) -> None:
        self.hub = hub
        self._redis = commands
        self._reader = reader  # its own connection: it spends its life blocked in XREAD
        self._watches: dict[str, _Watch] = {}
        self._wake_key = WAKE_KEY.format(secrets.token_hex(8))
        self._wake_pos = "0-0"

    @classmethod
    async def open(cls, url: str, hub: Hub) -> RedisBroker:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        commands = await connect_redis(url)
        # No socket timeout (XREAD blocks on purpose) and no silent retries: the read loop
        # sees every failure and resumes from its own positions.
        reader = redis_client(url, socket_timeout=None, single_connection_client=True,
                              retry=Retry(NoBackoff(), 0), client_name="chatsys-a-reader")
        return cls(commands, reader, hub)

    async def subscribe(self, room: str) -> Subscription:
        sub = self.hub.subscribe(room)
        if room in self._watches or self.hub.closed:
            return sub
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xrevrange(room_key(room), count=1)
                pipe.xrevrange(presence_key(room), count=1)
                newest, newest_presence = await pipe.execute()
            if room not in self._watches:  # another subscriber may have got there first
                self._watches[room] = _Watch(room, _last_id(newest), _last_id(newest_presence))
                await self._wake()
        except BaseException:
            self.unsubscribe(sub)
            raise
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.hub.unsubscribe(sub)
        if self.hub.subscribers(sub.room) == 0:
            self._watches.pop(sub.room, None)

    def published(self, message: Message) -> None:
        """Nothing to do: the reader delivers it from the stream, like any replica's message."""

    async def publish_presence(self, presence: Presence) -> None:
        key = presence_key(presence.room)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"user": presence.user, "session": presence.session,
                            "event": int(presence.event)},
                      maxlen=PRESENCE_KEEP, approximate=True)
            pipe.pexpire(key, PRESENCE_TTL_MS)
            await pipe.execute()

    async def _wake(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self._wake_key, {"w": 1}, maxlen=1, approximate=False)
            pipe.pexpire(self._wake_key, WAKE_TTL_MS)
            await pipe.execute()

    async def run(self, stop: anyio.Event) -> None:
        async with anyio.create_task_group() as tg:
            # Redis errors are retried inside the loop; anything else restarts it from the
            # positions it had reached.
            tg.start_soon(partial(supervise, "room stream reader", self._read_loop,
                                  policy=Policy.RESTART))
            await stop.wait()
            self.hub.close()
            tg.cancel_scope.cancel()
        with anyio.move_on_after(2, shield=True):
            try:
                await self._redis.delete(self._wake_key)
            except Exception as exc:  # best effort: the key expires by itself
                log.debug("could not delete %s: %s", self._wake_key, exc)
            await self._reader.aclose()
            await self._redis.aclose()

    async def _read_loop(self) -> None:
        from redis.exceptions import RedisError

        delay = RETRY_FIRST
        while True:
            streams: dict[str, str] = {self._wake_key: self._wake_pos}
            targets: dict[str, tuple[_Watch, bool]] = {}
            for watch in self._watches.values():
                streams[room_key(watch.room)] = watch.pos
                streams[presence_key(watch.room)] = watch.presence_pos
                targets[room_key(watch.room)] = (watch, True)
                targets[presence_key(watch.room)] = (watch, False)
            try:
                reply = await self._reader.xread(streams, count=READ_COUNT,  # type: ignore[arg-type]
                                                 block=BLOCK_MS)
            except (RedisError, OSError) as exc:
                log.warning("reading room streams failed (%s); retrying in %.1fs", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            for key, entries in reply or []:  # RESP2 (our clients): [[key, [(id, fields)]]]
                if key == self._wake_key:
                    if entries:
                        self._wake_pos = str(entries[-1][0])
                    continue
                watch, is_message = targets[key]
                if self._watches.get(watch.room) is not watch:
                    continue  # unwatched (and maybe re-watched from a newer position) meanwhile
                for entry_id, fields in entries:
                    if is_message:
                        watch.pos = entry_id
                        event = RoomEvent(message=decode(watch.room, entry_id, fields))
                    else:
                        watch.presence_pos = entry_id
                        event = RoomEvent(presence=Presence(
                            room=watch.room, user=fields.get("user", ""),
                            session=fields.get("session", ""),
                            event=_presence_event(fields.get("event", 0))))
                    DELIVERIES.inc(self.hub.publish(watch.room, event))
