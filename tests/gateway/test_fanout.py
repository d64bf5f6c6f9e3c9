"""The gateway's fan-out hub under failures of its own tasks (pure logic: a scripted A).

The room streams come from a scripted ``subscribe``; what is checked is the hub's own
bookkeeping: a room whose stream fails unexpectedly is followed again, a room whose members
left stops its stream from its own task, and a hub that dies closes its members so they
reconnect, then serves new rooms again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial

import anyio
import pytest

from chatsys.gateway.connection import WS_1011_INTERNAL_ERROR, Connection
from chatsys.gateway.fanout import RoomHub
from chatsys.runtime import supervision
from chatsys.runtime.supervision import Policy, TaskBoard, supervise
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import Message, RoomEvent, Subscribed

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "RESTART_FIRST", 0.001)


class ScriptedA:
    """Subscribe streams that say ``subscribed`` and then carry what the test publishes."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.fail_next = 0  # streams that raise a bug-like error right after subscribing
        self._send, self._receive = anyio.create_memory_object_stream[RoomEvent](100)

    async def subscribe(self, room: str, since: str) -> AsyncIterator[RoomEvent]:
        self.opened.append(room)
        try:
            yield RoomEvent(subscribed=Subscribed())
            if self.fail_next:
                self.fail_next -= 1
                raise KeyError("a bug in the stream")
            async for event in self._receive.clone():
                yield event
        finally:
            self.closed.append(room)

    async def history(self, room: str) -> list[Message]:
        return []

    async def publish(self, room: str, message_id: str) -> None:
        await self._send.send(RoomEvent(message=Message(id=message_id, room=room, text="t")))


def _member(room: str) -> Connection:
    return Connection(session=f"s-{room}", user="u", room=room, queue_limit=100)


async def _until(check: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not check():  # noqa: ASYNC110  (a condition on plain attributes, no event)
            await anyio.sleep(0.01)


async def _next_frame(conn: Connection) -> str | None:
    with anyio.fail_after(5):
        return await conn.next_frame()


async def test_a_room_stream_that_fails_is_followed_again() -> None:
    a = ScriptedA()
    a.fail_next = 1
    hub = RoomHub(a.subscribe, a.history, join_timeout=5, history_limit=10)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        conn = _member("r1")
        await hub.join(conn)
        await _until(lambda: len(a.opened) >= 2)  # the failed stream, then its replacement
        await a.publish("r1", "0001")
        assert '"0001"' in (await _next_frame(conn) or "")
        hub.leave(conn)
        tg.cancel_scope.cancel()


async def test_leaving_stops_the_rooms_stream_and_new_rooms_still_open() -> None:
    a = ScriptedA()
    hub = RoomHub(a.subscribe, a.history, join_timeout=5, history_limit=10)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        for name in ("r1", "r2", "r3"):
            conn = _member(name)
            await hub.join(conn)
            hub.leave(conn)
            await _until(lambda name=name: name in a.closed)
        assert hub.rooms == {}
        tg.cancel_scope.cancel()


async def test_a_dead_hub_closes_its_members_and_comes_back() -> None:
    a = ScriptedA()
    hub = RoomHub(a.subscribe, a.history, join_timeout=5, history_limit=10)
    board = TaskBoard()
    async with anyio.create_task_group() as tg:
        await tg.start(partial(supervise, "fan-out hub", hub.run, policy=Policy.RESTART,
                               board=board, signals_start=True))
        old = _member("r1")
        await hub.join(old)
        assert hub._tg is not None
        hub._tg.cancel_scope.cancel()  # the hub's task group ends from inside: a failure
        await old.wait_closing()
        assert old.close_code == WS_1011_INTERNAL_ERROR
        await _until(lambda: hub._tg is not None and board.ready)
        new = _member("r2")
        await hub.join(new)
        await a.publish("r2", "0002")
        assert '"0002"' in (await _next_frame(new) or "")
        hub.leave(new)
        tg.cancel_scope.cancel()
