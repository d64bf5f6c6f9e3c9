"""A connection's outbox and close state (pure logic, no socket)."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from chatsys.gateway.connection import WS_1001_GOING_AWAY, WS_1013_TRY_AGAIN_LATER, Connection

pytestmark = pytest.mark.anyio


def _conn(limit: int = 100) -> Connection:
    return Connection(session="s", user="u", room="r", queue_limit=limit)


async def test_frames_come_out_in_order_and_a_waiting_writer_is_woken() -> None:
    conn = _conn()
    conn.offer("a")
    assert await conn.next_frame() == "a"
    got: list[str | None] = []
    async with anyio.create_task_group() as tg:
        async def take() -> None:
            got.append(await conn.next_frame())

        tg.start_soon(take)
        await asyncio.sleep(0)  # the writer finds the outbox empty and waits
        conn.offer("b")
    assert got == ["b"]


async def test_duplicates_of_the_welcome_are_skipped() -> None:
    conn = _conn()
    conn.watermark = "0000000000000002"
    for n in (1, 2, 3):
        conn.offer(f"m{n}", f"000000000000000{n}")
    conn.offer("pong")  # no id: never a duplicate
    assert [conn.pop(), conn.pop(), conn.pop()] == ["m3", "pong", None]


async def test_a_full_outbox_closes_with_1013_and_drops_what_it_held() -> None:
    conn = _conn(limit=2)
    assert conn.offer("a") and conn.offer("b")
    assert not conn.offer("c")
    assert (conn.close_code, conn.close_reason) == (WS_1013_TRY_AGAIN_LATER, "slow consumer")
    assert conn.pop() is None
    assert not conn.offer("d")  # closing: nothing more is queued
    with anyio.fail_after(5):
        await conn.wait_closing()
        assert await conn.next_frame() is None


async def test_the_first_close_request_wins_and_wakes_the_writer() -> None:
    conn = _conn()
    async with anyio.create_task_group() as tg:
        async def take() -> None:
            assert await conn.next_frame() is None

        tg.start_soon(take)
        await asyncio.sleep(0)
        conn.request_close(WS_1001_GOING_AWAY, "server going away")
        conn.request_close(WS_1013_TRY_AGAIN_LATER, "slow consumer")
    assert (conn.close_code, conn.close_reason) == (WS_1001_GOING_AWAY, "server going away")


async def test_a_listener_is_called_on_offer_instead_of_waking_next_frame() -> None:
    conn = _conn()
    calls: list[str | None] = []
    conn.on_offer(lambda: calls.append(conn.pop()))
    conn.offer("a")
    conn.on_offer(None)
    conn.offer("b")
    assert calls == ["a"]
    assert conn.pop() == "b"
