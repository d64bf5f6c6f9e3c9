"""chatsys.compat.grpclib: the grpclib behaviour it corrects, checked on grpclib itself.

If grpclib changes how its wrapper wakes a blocked task, these tests fail and the compat
module must be revisited (see its docstring).
"""

from __future__ import annotations

import asyncio

import anyio
import grpclib
import pytest
from grpclib.exceptions import StreamTerminatedError
from grpclib.utils import Wrapper

from chatsys.compat import grpclib as compat

pytestmark = pytest.mark.anyio


def test_the_installed_grpclib_is_one_the_fix_was_written_for() -> None:
    assert grpclib.__version__ in compat.SUPPORTED
    assert Wrapper.cancel is compat._cancel and Wrapper.__exit__ is compat._exit


async def _blocked_until_the_wrapper_fails(wrapper: Wrapper) -> None:
    with pytest.raises(StreamTerminatedError):
        with wrapper:
            await anyio.sleep_forever()


async def test_a_task_woken_by_the_wrapper_keeps_no_cancellation_request() -> None:
    wrapper = Wrapper()
    async with anyio.create_task_group() as tg:
        task: list[asyncio.Task[object]] = []

        async def blocked() -> None:
            task.append(asyncio.current_task())  # type: ignore[arg-type]
            await _blocked_until_the_wrapper_fails(wrapper)
            assert task[0].cancelling() == 0
            # A cancel scope cancelled later in the same task swallows its own cancellation.
            with anyio.CancelScope() as scope:
                scope.cancel()
                await anyio.sleep(1)
            assert scope.cancelled_caught

        tg.start_soon(blocked)
        await anyio.wait_all_tasks_blocked()
        wrapper.cancel(StreamTerminatedError("Connection lost"))


async def test_an_outer_cancellation_still_wins() -> None:
    """A scope cancelled at the same moment as the wrapper still ends the task."""
    wrapper = Wrapper()
    with anyio.CancelScope() as outer:
        async def cancel_both() -> None:
            await anyio.wait_all_tasks_blocked()
            outer.cancel()
            wrapper.cancel(StreamTerminatedError("Connection lost"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_both)
            try:
                with wrapper:
                    await anyio.sleep_forever()
            except StreamTerminatedError:
                await anyio.sleep_forever()  # the scope's cancellation comes again here
    assert outer.cancelled_caught
