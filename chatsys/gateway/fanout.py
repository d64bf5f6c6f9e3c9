"""Fan-out: one subscription to A per room with local members, each event encoded once.

A room's subscription task reads A's event stream, encodes each event to its JSON frame once,
and offers that same string to every member's outbox without awaiting any socket. If the
stream breaks (its A replica died or is stopping), the task re-subscribes at once — the pool
has ejected the dead endpoint, so this lands on another replica — with ``since`` set to the
last message it saw (``"0"`` if the room had none: everything the room holds is then new), so
A replays what was missed: members see no gap and — ids compared as strings, the
contract's order — no repeat. Later attempts back off. This module knows nothing of Quart;
the transport hands it :class:`Connection` objects.

Who cancels what (see :mod:`chatsys.runtime.supervision`): the last member to leave a room only
sets the room's ``abandoned`` event; the room's own task cancels its stream. A room's stream is
supervised (an unexpected end is logged and the stream restarted), and so is the hub itself:
if it ever stops, its rooms' members are closed with 1011 so they reconnect, and the hub
starts again empty.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from functools import partial

import anyio
from anyio.abc import TaskGroup

from chatsys.errors import ChatError, Unavailable
from chatsys.gateway import frames
from chatsys.gateway import metrics as m
from chatsys.gateway.connection import WS_1011_INTERNAL_ERROR, Connection
from chatsys.runtime.metrics import RESUBSCRIBES
from chatsys.runtime.supervision import Policy, supervise
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import Message, RoomEvent

log = logging.getLogger("chatsys.gateway.fanout")
Subscribe = Callable[[str, str], AsyncIterator[RoomEvent]]
History = Callable[[str], Awaitable[list[Message]]]
RETRY_FIRST, RETRY_MAX = 0.1, 2.0
STABLE = 1.0  # seconds a subscription must have been live for its loss to be retried at once


class Room:
    def __init__(self, name: str, history_limit: int) -> None:
        self.name = name
        self.members: set[Connection] = set()
        self.live = anyio.Event()
        self.last_id = ""
        self.abandoned = anyio.Event()  # set by the last leaver; the room's task then stops
        # The newest messages as encoded frames: a join needs no call to A for its welcome.
        self.recent: deque[str] = deque(maxlen=history_limit)
        self.primed = False

    def remember(self, message: Message) -> str | None:
        """Record a message in order; its frame, or None if it was already seen."""
        if self.last_id and message.id <= self.last_id:
            return None
        self.last_id = message.id
        frame = frames.message(message)
        self.recent.append(frame)
        return frame

    def broadcast(self, frame: str, message_id: str | None) -> None:
        delivered = 0
        for member in list(self.members):
            if member.offer(frame, message_id):
                delivered += 1
        m.FANOUT_DELIVERIES.inc(delivered)


class RoomHub:
    """Rooms with local members and their subscriptions; runs inside the gateway's task group."""

    def __init__(self, subscribe: Subscribe, history: History, *, join_timeout: float,
                 history_limit: int) -> None:
        self._subscribe = subscribe
        self._history = history
        self.join_timeout = join_timeout
        self.history_limit = history_limit
        self.rooms: dict[str, Room] = {}
        self._tg: TaskGroup | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Host the rooms' tasks until cancelled (supervised by the gateway)."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            # Whatever ended the hub ended every room's stream: their members must reconnect
            # (with `since`) to a hub that follows their rooms again.
            rooms, self.rooms = list(self.rooms.values()), {}
            for room in rooms:
                for member in list(room.members):
                    member.request_close(WS_1011_INTERNAL_ERROR, "internal error, reconnect")

    async def join(self, conn: Connection) -> list[str]:
        """Add ``conn`` to its room once the room's subscription is live (or raise Unavailable).

        Returns the room's newest message frames for the welcome; ``conn``'s watermark is set
        so that nothing in them is delivered to it twice.
        """
        room = self.rooms.get(conn.room)
        if room is None:
            if self._tg is None:  # stopping, or restarting after a failure
                raise Unavailable("the gateway cannot follow new rooms right now, try again")
            room = self.rooms[conn.room] = Room(conn.room, self.history_limit)
            self._tg.start_soon(self._follow, room)
        room.members.add(conn)
        try:
            with anyio.fail_after(self.join_timeout):
                await room.live.wait()
        except TimeoutError:
            self.leave(conn)
            raise Unavailable("chat service is unavailable, try again") from None
        except BaseException:
            self.leave(conn)
            raise
        conn.watermark = room.last_id or None
        return list(room.recent)

    def leave(self, conn: Connection) -> None:
        room = self.rooms.get(conn.room)
        if room is None:
            return
        room.members.discard(conn)
        if not room.members:
            del self.rooms[conn.room]
            room.abandoned.set()

    def close_all(self, code: int, reason: str) -> None:
        for room in list(self.rooms.values()):
            for member in list(room.members):
                member.request_close(code, reason)

    async def _follow(self, room: Room) -> None:
        """The room's task: its supervised stream, until the room is abandoned."""
        m.SUBSCRIPTIONS.inc()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(supervise, f"room {room.name}", partial(self._stream, room),
                                      policy=Policy.RESTART, metric="room_subscription"))
                await room.abandoned.wait()
                tg.cancel_scope.cancel()
        finally:
            m.SUBSCRIPTIONS.dec()

    async def _stream(self, room: Room) -> None:
        """Follow A's event stream of the room, resubscribing whenever it breaks."""
        delay = RETRY_FIRST
        while True:
            live_since: float | None = None
            try:
                # aclosing: a stream left by an exception is closed here, in this task, not
                # later by the event loop's generator finaliser in another one.
                async with aclosing(self._subscribe(room.name, _resume_from(room))) as events:
                    async for event in events:
                        if event.WhichOneof("event") == "subscribed":
                            await self._prime(room)
                            room.live.set()
                            live_since = anyio.current_time()
                        else:
                            self._dispatch(room, event)
            except ChatError as exc:
                log.warning("room %s: subscription lost (%s), resubscribing after %s",
                            room.name, exc, room.last_id or "the start")
            room.live = _reset(room.live)
            # A stream that had been live a while lost its replica: retry at once
            # (elsewhere). One that keeps failing backs off.
            if live_since is not None and anyio.current_time() - live_since > STABLE:
                delay = RETRY_FIRST
            else:
                await anyio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            RESUBSCRIBES.inc()

    async def _prime(self, room: Room) -> None:
        """Once per room: the newest messages, read after the subscription is in place, so
        together with what the stream delivers from now on nothing is missed."""
        if room.primed:
            return
        for message in await self._history(room.name):
            room.remember(message)
        room.primed = True

    @staticmethod
    def _dispatch(room: Room, event: RoomEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "message":
            message = event.message
            frame = room.remember(message)
            if frame is not None:
                room.broadcast(frame, message.id)
        elif kind == "presence":
            room.broadcast(frames.presence(event.presence), None)


def _resume_from(room: Room) -> str:
    """``since`` for (re)subscribing: nothing before priming, then the newest id seen."""
    if room.last_id:
        return room.last_id
    return "0" if room.primed else ""


def _reset(event: anyio.Event) -> anyio.Event:
    """A set 'live' event is replaced so new joiners wait; waiting joiners keep the old one."""
    return anyio.Event() if event.is_set() else event
