"""The in-process fan-out hub: each room's subscribers get every published event, in order.

Publishing never waits: each subscription has a bounded queue, and one that is full is marked
overflowed instead of blocking the publisher or growing memory. Its stream then ends (the
servicer answers RESOURCE_EXHAUSTED) and the gateway re-subscribes with ``since``, which replays
what it missed from the store. The hub knows nothing about gRPC.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque

from chatsys.stubs.chatsys.chat.v1.chat_pb2 import RoomEvent

QUEUE_SIZE = 8192  # events one subscription may lag behind before it is cut off


class Overflowed(Exception):
    """The subscriber fell more than its queue size behind."""


class HubClosed(Exception):
    """The server is stopping."""


class Subscription:
    def __init__(self, room: str, maxsize: int) -> None:
        self.room = room
        self.maxsize = maxsize
        self._queue: deque[RoomEvent] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def push(self, event: RoomEvent) -> None:
        if self.overflowed or self.closed:
            return
        if len(self._queue) >= self.maxsize:
            self.overflowed = True
            self._queue.clear()
        else:
            self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def get(self) -> RoomEvent:
        """The next event; raises :class:`Overflowed` or :class:`HubClosed` when it ends."""
        while True:
            if self.overflowed:
                raise Overflowed(self.room)
            if self.closed:
                raise HubClosed(self.room)
            if self._queue:
                return self._queue.popleft()
            self._ready.clear()
            await self._ready.wait()


class Hub:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._rooms: defaultdict[str, set[Subscription]] = defaultdict(set)
        self.closed = False

    def subscribe(self, room: str) -> Subscription:
        sub = Subscription(room, self.queue_size)
        if self.closed:
            sub.close()
        else:
            self._rooms[room].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._rooms.get(sub.room)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._rooms[sub.room]

    def publish(self, room: str, event: RoomEvent) -> int:
        """Queue ``event`` for every subscriber of ``room``; returns how many got it."""
        subs = self._rooms.get(room, ())
        for sub in subs:
            sub.push(event)
        return len(subs)

    def subscribers(self, room: str) -> int:
        return len(self._rooms.get(room, ()))

    def close(self) -> None:
        """End every subscription (server stop); later subscriptions end at once."""
        self.closed = True
        for subs in self._rooms.values():
            for sub in subs:
                sub.close()
