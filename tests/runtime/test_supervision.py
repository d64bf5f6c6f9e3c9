"""chatsys.runtime.supervision: no long-lived task ends silently."""

from __future__ import annotations

import asyncio
from functools import partial

import anyio
import pytest

from chatsys.runtime import supervision
from chatsys.runtime.supervision import Policy, TaskBoard, TaskFailed, supervise

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "RESTART_FIRST", 0.001)


async def test_a_failed_task_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    board = TaskBoard()
    attempts = 0
    third = anyio.Event()

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ValueError(f"attempt {attempts}")
        third.set()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(supervise, "flaky", flaky, policy=Policy.RESTART, board=board))
            await third.wait()
            await anyio.wait_all_tasks_blocked()
            assert board.ready  # up again
            tg.cancel_scope.cancel()
    failures = [r for r in caplog.records if r.message == "task flaky failed"]
    assert len(failures) == 2 and all(r.exc_info for r in failures)  # with their tracebacks


async def test_a_fatal_task_ends_the_process() -> None:
    async def broken() -> None:
        raise ValueError("bug")

    with pytest.raises(ExceptionGroup) as info, anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(supervise, "broken", broken, policy=Policy.FATAL))
    assert info.group_contains(TaskFailed)


async def test_a_task_that_returns_is_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ExceptionGroup) as info, anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(supervise, "quitter", anyio.lowlevel.checkpoint,
                                  policy=Policy.FATAL))
    assert info.group_contains(TaskFailed)
    assert "task quitter returned" in caplog.text


async def test_an_expected_end_is_not_a_failure() -> None:
    board = TaskBoard()
    done = True
    with anyio.fail_after(10):
        await supervise("closer", anyio.lowlevel.checkpoint, policy=Policy.FATAL, board=board,
                        expected_end=lambda: done)
    assert board.ready


async def test_a_cancellation_from_outside_its_scope_is_a_failure() -> None:
    """A task cancelled by a bare Task.cancel() (no scope of its own cancelled) did not end
    because the process stops: it is restarted, in a fresh task."""
    tasks: list[asyncio.Task[object]] = []
    second = anyio.Event()

    async def victim() -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        if len(tasks) == 2:
            second.set()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(supervise, "victim", victim, policy=Policy.RESTART))
            await anyio.wait_all_tasks_blocked()
            tasks[0].cancel()
            await second.wait()
            tg.cancel_scope.cancel()
    assert tasks[0] is not tasks[1]


async def test_readiness_is_false_until_started_and_while_restarting(
        caplog: pytest.LogCaptureFixture) -> None:
    board = TaskBoard()
    fail, failed, restart_may_start = anyio.Event(), anyio.Event(), anyio.Event()
    attempts = 0

    async def task(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 2:
            failed.set()
            await restart_may_start.wait()
        task_status.started()
        if attempts == 1:
            await fail.wait()
            raise ValueError("down")
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(partial(supervise, "task", task, policy=Policy.RESTART, board=board,
                                   signals_start=True))
            assert board.ready
            fail.set()
            await failed.wait()  # the second attempt has begun and not yet started
            assert not board.ready and board.down == ["task"]
            restart_may_start.set()
            await anyio.wait_all_tasks_blocked()
            assert board.ready
            tg.cancel_scope.cancel()
    assert "task task failed" in caplog.text
