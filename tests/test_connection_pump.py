"""Writing a connection from send callbacks (pure logic: the server's send is a plain function
that hands back futures, as Granian's does)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatsys.gateway.connection import WS_1013_TRY_AGAIN_LATER, Connection

pytestmark = pytest.mark.anyio


class Wire:
    """A server send: each call hands back a future that the test completes by hand."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.pending: list[asyncio.Future[None]] = []

    def send(self, frame: str) -> asyncio.Future[None]:
        self.frames.append(frame)
        sent = asyncio.get_running_loop().create_future()
        self.pending.append(sent)
        return sent

    async def complete_all(self) -> None:
        """Complete sends one at a time until none is in flight."""
        while self.pending:
            self.pending.pop(0).set_result(None)
            for _ in range(3):  # the done callback runs on the next loop iteration
                await asyncio.sleep(0)


class DoneAtOnce:
    """A send future that is already done and calls back inside ``add_done_callback``."""

    _asyncio_future_blocking = False  # what makes asyncio (and the pump) take it for a future

    def add_done_callback(self, callback: Any) -> None:
        callback(self)

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        return None


def _conn(limit: int = 100) -> Connection:
    return Connection(session="s", user="u", room="r", queue_limit=limit)


async def _started(conn: Connection, send: Any) -> asyncio.Task[None]:
    task = asyncio.ensure_future(conn.pump(send))
    await asyncio.sleep(0)
    return task


async def test_frames_go_out_in_order_one_in_flight_at_a_time() -> None:
    conn, wire = _conn(), Wire()
    conn.offer("a")
    conn.offer("b")
    task = await _started(conn, wire.send)
    assert wire.frames == ["a"]  # "b" waits for "a" to be written
    conn.offer("c")
    assert wire.frames == ["a"]
    await wire.complete_all()
    assert wire.frames == ["a", "b", "c"]
    conn.offer("d")  # idle again: sent from offer itself
    assert wire.frames == ["a", "b", "c", "d"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_duplicates_of_the_welcome_are_skipped() -> None:
    conn, wire = _conn(), Wire()
    conn.watermark = "0000000000000002"
    for n in (1, 2, 3):
        conn.offer(f"m{n}", f"000000000000000{n}")
    task = await _started(conn, wire.send)
    await wire.complete_all()
    assert wire.frames == ["m3"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_failed_send_ends_the_pump_with_its_error_and_nothing_more_is_sent() -> None:
    conn, wire = _conn(), Wire()
    conn.offer("a")
    conn.offer("b")
    task = await _started(conn, wire.send)
    wire.pending.pop().set_exception(ConnectionResetError("gone"))
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(task, 1)
    conn.offer("c")
    assert wire.frames == ["a"]


async def test_a_send_that_raises_fails_this_socket_not_the_offering_fan_out() -> None:
    conn = _conn()

    def send(frame: str) -> asyncio.Future[None]:
        raise RuntimeError("transport closed")

    task = await _started(conn, send)
    assert conn.offer("a")  # no exception into the caller (the room's fan-out loop)
    with pytest.raises(RuntimeError, match="transport closed"):
        await asyncio.wait_for(task, 1)


class PlainAwaitable:
    """What Granian hands back for a send on a closing socket: an awaitable that is no future
    (no ``add_done_callback``), done at once or raising."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    def __await__(self) -> Any:
        if self.error is not None:
            raise self.error
        return None
        yield  # a generator: awaiting it finishes at once


async def test_sends_that_are_not_futures_are_awaited_in_order_and_can_fail() -> None:
    conn = _conn()
    sent: list[str] = []

    def send(frame: str) -> Any:
        sent.append(frame)
        return PlainAwaitable(ConnectionResetError("closing") if frame == "c" else None)

    task = await _started(conn, send)
    for frame in "abcd":
        assert conn.offer(frame)  # never raises into the fan-out
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(task, 1)
    assert sent == ["a", "b", "c"]  # in order, and nothing after the failed one


async def test_closing_stops_writing_and_cancelling_stops_pumping() -> None:
    conn, wire = _conn(limit=2), Wire()
    task = await _started(conn, wire.send)
    conn.offer("a")
    conn.offer("b")
    conn.offer("c")
    assert not conn.offer("d")  # a slow consumer: outbox full
    assert conn.close_code == WS_1013_TRY_AGAIN_LATER
    await wire.complete_all()
    assert wire.frames == ["a"]  # the outbox was dropped with the close
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    conn.close_code = None  # even if the connection were reopened, the pump is gone
    conn.offer("e")
    assert wire.frames == ["a"]


async def test_sends_that_complete_at_once_do_not_recurse() -> None:
    conn = _conn(limit=10_000)
    sent: list[str] = []

    def send(frame: str) -> Any:
        sent.append(frame)
        return DoneAtOnce()

    for n in range(5_000):  # far deeper than the interpreter's recursion limit
        conn.offer(str(n))
    task = await _started(conn, send)
    assert len(sent) == 5_000
    assert sent[:3] == ["0", "1", "2"] and sent[-1] == "4999"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
