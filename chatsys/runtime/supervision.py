"""Supervised long-lived tasks: none ends silently, and readiness knows which are down.

Every long-lived task of a process (the gateway's fan-out hub, append lanes and pool
resolvers; A's batcher and Redis reader; the lab's scrapers) runs under :func:`supervise`.
Its end is *expected* only when the scope around it is cancelled (the process is stopping) or
when its ``expected_end`` says so (a batcher that was closed). Any other end is a failure: it
raised, returned, or was cancelled by something that is not its own scope. A failure is
logged with its traceback, counted in ``chatsys_task_failures_total{task}``, and then

- :attr:`Policy.RESTART`: the task is started again after a backoff (0.1 s doubling to 5 s,
  back to 0.1 s once an attempt has run for a while); or
- :attr:`Policy.FATAL`: :class:`TaskFailed` is raised into the process's root task group,
  which ends the process with a non-zero status so that its orchestrator restarts it.

While a task is not running (before its first start, between attempts) the :class:`TaskBoard`
it was registered with reports it, and the process's readiness is false.

Each attempt runs in a fresh child task, so whatever an attempt leaves on its task (such as a
cancellation request a library made and never withdrew) ends with it.

Cancel scopes (the rule this code base follows)
-----------------------------------------------
A cancel scope is cancelled only by the task that entered it or, for a task group's own scope,
by one of that group's tasks (the "first to finish stops the rest" idiom: the group's host is
then waiting at the end of the group, a place it knows). Any other task that wants work to stop
sets an :class:`anyio.Event` that the owner waits on, and the owner cancels its own scope.
Cancelling a scope from outside is allowed by anyio, but the task that owns it is then
cancelled at whatever point it happens to be, from a stack it cannot see: that is how a stale
cancellation in a library once turned a room's ordinary end into the death of the whole fan-out
hub.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus
from prometheus_client import Counter

log = logging.getLogger("chatsys.supervision")
RESTART_FIRST, RESTART_MAX = 0.1, 5.0
STABLE_SECONDS = 10.0  # an attempt that ran this long resets the backoff

FAILURES = Counter("chatsys_task_failures_total",
                   "Unexpected ends of a supervised long-lived task.", ["task"])


class Policy(enum.Enum):
    RESTART = "restart"
    FATAL = "fatal"


class TaskFailed(Exception):
    """A task that the process cannot run without ended: the process must stop non-zero."""


class TaskBoard:
    """Which supervised tasks are down right now; readiness is false while any is."""

    def __init__(self) -> None:
        self._down: set[str] = set()

    @property
    def ready(self) -> bool:
        return not self._down

    @property
    def down(self) -> list[str]:
        return sorted(self._down)

    def mark(self, name: str, *, up: bool) -> None:
        if up:
            self._down.discard(name)
        else:
            self._down.add(name)

    async def probe(self) -> None:
        """For health checks that take a probe: raises while a task is down."""
        if self._down:
            raise RuntimeError(f"supervised tasks down: {', '.join(self.down)}")


Run = Callable[..., Awaitable[None]]


def _stopping() -> bool:
    """The scope around the caller is cancelled: the task's end is the process stopping."""
    return anyio.current_effective_deadline() == -math.inf


async def _attempt(run: Run, signals_start: bool, ended: list[BaseException | None], *,
                   task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """One run of the task in its own child task; how it ended goes into ``ended``."""
    try:
        if signals_start:
            await run(task_status=task_status)
        else:
            task_status.started()
            await run()
    except anyio.get_cancelled_exc_class() as exc:
        if _stopping():
            raise
        ended.append(exc)  # cancelled, but not by a scope around it
    except Exception as exc:
        ended.append(exc)
    else:
        ended.append(None)


async def supervise(name: str, run: Run, *, policy: Policy, board: TaskBoard | None = None,
                    signals_start: bool = False, metric: str | None = None,
                    expected_end: Callable[[], bool] = lambda: False,
                    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run ``run()`` (or ``run(task_status=...)`` when ``signals_start``) for the process's
    life; see the module docstring. Reports started once the first attempt has started.

    ``metric`` labels its failures when ``name`` is one of many (a room's name)."""
    board = board or TaskBoard()  # a task no readiness depends on keeps its own
    delay = RESTART_FIRST
    first = True
    board.mark(name, up=False)
    while True:
        ended: list[BaseException | None] = []
        began = anyio.current_time()
        async with anyio.create_task_group() as tg:
            try:
                await tg.start(_attempt, run, signals_start, ended)
            except RuntimeError:
                if not ended:  # not "exited without calling task_status.started()"
                    raise
            else:
                board.mark(name, up=True)
                if first:
                    first = False
                    task_status.started()
        board.mark(name, up=False)
        outcome = ended[0] if ended else None
        if outcome is None and expected_end():
            board.mark(name, up=True)  # done, as it should be: not a reason to be unready
            return
        FAILURES.labels(metric or name).inc()
        if outcome is None:
            log.error("task %s returned, but it should run as long as the process", name)
        else:
            log.error("task %s failed", name, exc_info=outcome)
        if policy is Policy.FATAL:
            raise TaskFailed(f"task {name} ended unexpectedly") from outcome
        if anyio.current_time() - began > STABLE_SECONDS:
            delay = RESTART_FIRST
        log.warning("restarting task %s in %.1fs", name, delay)
        await anyio.sleep(delay)
        delay = min(delay * 2, RESTART_MAX)
