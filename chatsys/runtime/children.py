"""Child processes of a supervisor (:mod:`chatsys.runtime.topology` for ``chatsys all``, the
lab, bench, chaos and the system tests; ``gateway --workers N``).

Children run in their own sessions, so a terminal's Ctrl-C reaches only the supervisor, which
then stops them in the order it chooses; a child that dies on its own is reported so the
supervisor can take the rest down.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path

import anyio
import anyio.abc

log = logging.getLogger("chatsys.children")


async def spawn(command: Sequence[str], *, log_path: Path | None = None,
                cwd: Path | None = None, env: Mapping[str, str] | None = None,
                ) -> anyio.abc.Process:
    """Start a child in its own session with stdin closed; its output goes to ours, or is
    appended (stdout and stderr together) to ``log_path``."""
    if log_path is None:
        return await anyio.open_process(list(command), stdin=subprocess.DEVNULL, stdout=None,
                                        stderr=None, start_new_session=True, cwd=cwd, env=env)
    with log_path.open("ab") as out:
        return await anyio.open_process(list(command), stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        cwd=cwd, env=env)


async def watch(name: str, proc: anyio.abc.Process, died: anyio.Event,
                stop: anyio.Event) -> None:
    """Set ``died`` if ``proc`` exits before we were asked to stop."""
    code = await proc.wait()
    if not stop.is_set():
        log.error("%s (pid %d) exited unexpectedly with %s", name, proc.pid, code)
        died.set()


async def wait_any(*events: anyio.Event) -> None:
    async with anyio.create_task_group() as tg:
        async def until(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(until, event)


def send_signal(proc: anyio.abc.Process, signum: int, *, whole_group: bool = False) -> None:
    """Signal a child (a no-op once it has exited).

    ``whole_group``: signal the child's whole session (helpers it started, such as Locust's
    workers or a Redis AOF rewrite). Only while the child is unreaped: once reaped, its pid, and
    so its group id, may already belong to an unrelated process, whose group a late signal
    would hit."""
    if proc.returncode is not None:
        return
    with suppress(ProcessLookupError, PermissionError):
        if whole_group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)


async def terminate(name: str, proc: anyio.abc.Process, grace: float, *,
                    whole_group: bool = False) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code (``whole_group``:
    see :func:`send_signal`)."""
    if proc.returncode is None:
        send_signal(proc, signal.SIGTERM, whole_group=whole_group)
        with anyio.move_on_after(grace):
            await proc.wait()
        if proc.returncode is None:
            log.warning("%s did not stop within %.0fs: killing it", name, grace)
            send_signal(proc, signal.SIGKILL, whole_group=whole_group)
            await proc.wait()
    log.info("%s stopped (exit %s)", name, proc.returncode)
    return proc.returncode or 0
