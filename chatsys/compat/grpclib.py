"""grpclib's private names that chatsys relies on, and the one fix it applies to grpclib.

Written against grpclib 0.4.7-0.4.9 (pyproject.toml: ``grpclib>=0.4.7,<0.5``);
``tests/test_compat_grpclib.py`` fails if what is relied on here changes.

Balanced cancellation in ``grpclib.utils.Wrapper``
--------------------------------------------------
When a connection is lost or a deadline passes, grpclib wakes every task blocked on that
stream with ``Task.cancel()`` and, as the task leaves the wrapper, replaces the
``CancelledError`` with its own error (``StreamTerminatedError``, ``TimeoutError``). It never
calls ``Task.uncancel()``, so the task keeps a cancellation request that nobody will ever
consume: ``Task.cancelling()`` stays above zero for the rest of the task's life.

Cancel scopes (anyio's, and ``asyncio.timeout``) read that count to tell their own
cancellation from one meant for an outer scope. With a stale request left over, the next
cancel scope that is cancelled in that task does not swallow its ``CancelledError``: it
escapes the scope and ends the task as if it had been cancelled from outside. In the gateway
that was a room's subscription task (its stream lost with a killed A replica, and later its
room emptied): the ``CancelledError`` escaped the room's scope, took the fan-out hub down
with it, and every join to a new room was refused from then on.

:func:`install` makes the wrapper undo, with ``Task.uncancel()``, each cancellation it made
itself once it has turned it into its own error, so a task that saw a stream fail is left
exactly as it was before the call.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from types import TracebackType

import grpclib
from grpclib.utils import Wrapper

SUPPORTED = ("0.4.7", "0.4.8", "0.4.9")
_ORIGINAL_EXIT = Wrapper.__exit__


def _cancel(self: Wrapper, error: Exception) -> None:
    """``Wrapper.cancel``, counting the cancellations it requests per task."""
    self._error = error
    made: Counter[asyncio.Task[object]] = self.__dict__.setdefault("_chatsys_cancels", Counter())
    for task in self._tasks:
        task.cancel()
        made[task] += 1
    self.cancelled = True


def _exit(self: Wrapper, exc_type: type[BaseException] | None, exc_val: BaseException | None,
          exc_tb: TracebackType | None) -> None:
    task = asyncio.current_task()
    made: Counter[asyncio.Task[object]] | None = self.__dict__.get("_chatsys_cancels")
    count = made.pop(task, 0) if made is not None and task is not None else 0
    if task is not None and count and exc_type is asyncio.CancelledError:
        # The CancelledError being replaced is ours: drop the requests that caused it.
        for _ in range(count):
            task.uncancel()
    _ORIGINAL_EXIT(self, exc_type, exc_val, exc_tb)


def install() -> None:
    """Apply the fix (idempotent). Refuses a grpclib version it was not checked against."""
    if grpclib.__version__ not in SUPPORTED:
        raise RuntimeError(f"chatsys.compat.grpclib was written for grpclib {SUPPORTED}, "
                           f"found {grpclib.__version__}")
    Wrapper.cancel = _cancel  # type: ignore[method-assign]
    Wrapper.__exit__ = _exit  # type: ignore[method-assign]


install()
