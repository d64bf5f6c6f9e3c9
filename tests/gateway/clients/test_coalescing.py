"""The gateway's call coalescing (pure logic: the batch sender is a plain function)."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from chatsys.errors import BadRequest, ChatError, Unavailable
from chatsys.gateway.clients.coalescing import Coalescer
from chatsys.gateway.metrics import BATCH_SIZE
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import AppendRequest, Stored

pytestmark = pytest.mark.anyio
SIZES = BATCH_SIZE.labels("test")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _request(text: str) -> AppendRequest:
    return AppendRequest(room="r", user="u", text=text)


async def _append_noting_error(queue: Coalescer[AppendRequest, Stored], text: str,
                               codes: list[str]) -> None:
    try:
        await queue.call(_request(text))
    except ChatError as exc:
        codes.append(exc.code)


class Batches:
    """The batches a fake sender saw, and a way to wait for the n-th."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []
        self._changed = anyio.Event()

    def add(self, requests: list[AppendRequest]) -> None:
        self.seen.append([r.text or "" for r in requests])
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, count: int) -> None:
        while len(self.seen) < count:
            await self._changed.wait()


async def test_concurrent_appends_share_batches_and_get_their_own_outcome() -> None:
    batches = Batches()
    release = anyio.Event()

    async def send(requests: list[AppendRequest]) -> list[Stored | ChatError]:
        batches.add(requests)
        await release.wait()
        return [BadRequest(f"no {r.text}") if r.text == "bad" else Stored(id=r.text)
                for r in requests]

    queue = Coalescer("AppendBatch", send, sizes=SIZES, timeout=5, lanes=1, max_batch=3)
    results: dict[str, str] = {}

    async def one(text: str) -> None:
        try:
            results[text] = (await queue.call(_request(text))).id
        except ChatError as exc:
            results[text] = f"{exc.code}: {exc.message}"

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(queue.run)
            async with anyio.create_task_group() as senders:
                for text in ["a", "b", "bad", "c", "d"]:
                    senders.start_soon(one, text)
                    await anyio.lowlevel.checkpoint()  # queued in this order
                await batches.until(1)
                release.set()
            tg.cancel_scope.cancel()
    # The first sends alone (its lane was idle); the rest queued meanwhile and go together,
    # at most max_batch at a time.
    assert batches.seen == [["a"], ["b", "bad", "c"], ["d"]]
    assert results == {"a": "a", "b": "b", "bad": "bad_request: no bad", "c": "c", "d": "d"}


async def test_a_failed_batch_fails_each_of_its_senders() -> None:
    async def send(requests: list[AppendRequest]) -> list[Stored | ChatError]:
        raise Unavailable("A is down")

    queue = Coalescer("AppendBatch", send, sizes=SIZES, timeout=5, lanes=2)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(queue.run)
            for _ in range(3):
                with pytest.raises(Unavailable, match="A is down"):
                    await queue.call(_request("x"))
            tg.cancel_scope.cancel()


async def test_a_wrong_number_of_outcomes_is_internal_not_a_hang() -> None:
    async def send(requests: list[AppendRequest]) -> list[Stored | ChatError]:
        return []

    queue = Coalescer("AppendBatch", send, sizes=SIZES, timeout=5, lanes=1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(queue.run)
            with pytest.raises(ChatError) as info:
                await queue.call(_request("x"))
            assert info.value.code == "internal"
            tg.cancel_scope.cancel()


async def test_stopping_fails_queued_and_in_flight_appends_and_refuses_new_ones() -> None:
    started = anyio.Event()

    async def send(requests: list[AppendRequest]) -> list[Stored | ChatError]:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError

    queue = Coalescer("AppendBatch", send, sizes=SIZES, timeout=5, lanes=1)
    errors: list[str] = []

    with anyio.fail_after(5):
        async with anyio.create_task_group() as outer:
            async with anyio.create_task_group() as tg:
                await tg.start(queue.run)
                outer.start_soon(_append_noting_error, queue, "in flight", errors)
                await started.wait()
                outer.start_soon(_append_noting_error, queue, "queued", errors)
                await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
    assert errors == ["unavailable", "unavailable"]
    with pytest.raises(Unavailable):
        await queue.call(_request("late"))


async def test_a_sender_that_gave_up_is_left_out_of_the_next_batch() -> None:
    batches = Batches()
    release = anyio.Event()

    async def send(requests: list[AppendRequest]) -> list[Stored | ChatError]:
        batches.add(requests)
        await release.wait()
        return [Stored(id=r.text) for r in requests]

    queue = Coalescer("AppendBatch", send, sizes=SIZES, timeout=5, lanes=1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(queue.run)
            tg.start_soon(queue.call, _request("first"))
            await batches.until(1)
            with anyio.move_on_after(0.01):
                await queue.call(_request("gave up"))
            tg.start_soon(queue.call, _request("kept"))
            await anyio.sleep(0.01)
            release.set()
            await batches.until(2)
            tg.cancel_scope.cancel()
    assert batches.seen == [["first"], ["kept"]]


async def test_behind_a_stuck_batch_every_sender_times_out_on_its_own_deadline() -> None:
    """A hung A must not hold a queue of senders for batch after batch of timeouts."""
    sent: list[list[str]] = []

    async def send(requests: list[AppendRequest]) -> list[Stored | ChatError]:
        sent.append([r.text for r in requests])
        await anyio.sleep_forever()
        raise AssertionError

    queue = Coalescer("AppendBatch", send, sizes=SIZES, timeout=0.2, lanes=1, max_batch=2)
    codes: list[str] = []

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(queue.run)
            async with anyio.create_task_group() as senders:
                for i in range(10):  # five batches' worth behind one lane
                    senders.start_soon(_append_noting_error, queue, str(i), codes)
            tg.cancel_scope.cancel()
    assert codes == ["unavailable"] * 10
    assert len(sent) == 1  # the rest timed out in the queue, not batch after batch
