"""The fan-out hub in-process: order, isolation, overflow and close never block a publisher."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from chatsys.chat.hub import Hub, HubClosed, Overflowed
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import Message, RoomEvent

pytestmark = pytest.mark.anyio


def event(i: int) -> RoomEvent:
    return RoomEvent(message=Message(id=f"{i:016d}", room="r", text=str(i)))


async def test_order_and_rooms() -> None:
    hub = Hub(queue_size=10)
    a, other = hub.subscribe("r"), hub.subscribe("x")
    for i in range(5):
        assert hub.publish("r", event(i)) == 1
    with anyio.fail_after(1):
        assert [(await a.get()).message.id for _ in range(5)] == [f"{i:016d}" for i in range(5)]
    hub.unsubscribe(a)
    assert hub.publish("r", event(9)) == 0
    assert hub.subscribers("x") == 1
    hub.unsubscribe(other)


async def test_overflow_ends_only_the_slow_subscriber() -> None:
    hub = Hub(queue_size=3)
    slow, fast = hub.subscribe("r"), hub.subscribe("r")
    with anyio.fail_after(1):
        for i in range(5):
            hub.publish("r", event(i))  # never blocks, however far behind `slow` is
            assert (await fast.get()).message is not None
        with pytest.raises(Overflowed):
            await slow.get()


async def test_close_wakes_waiters() -> None:
    hub = Hub()
    sub = hub.subscribe("r")
    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:
            async def wait() -> None:
                with pytest.raises(HubClosed):
                    await sub.get()

            tg.start_soon(wait)
            await anyio.lowlevel.checkpoint()
            hub.close()
        with pytest.raises(HubClosed):
            await hub.subscribe("r").get()
