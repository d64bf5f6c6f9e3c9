"""``--workers N``: N full gateway processes sharing one port through SO_REUSEPORT.

Each worker is an ordinary ``chatsys gateway`` with ``--workers 1`` and its own subscriptions
to A, so a room with members on two workers is fanned out by both — correctly, since every
worker subscribes to A. The parent only starts them, forwards the stop, and exits non-zero if
one dies on its own.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from contextlib import suppress

import anyio
import anyio.abc

from chatsys.runtime.settings import Settings, options_for

log = logging.getLogger("chatsys.gateway.workers")


def worker_command(settings: Settings) -> list[str]:
    flags: list[str] = []
    for opt in options_for(["gateway"]):
        value = 1 if opt.name == "workers" else getattr(settings, opt.name)
        flags += [opt.flag, str(value)]
    return [sys.executable, "-m", "chatsys", "gateway", *flags]


async def serve_workers(settings: Settings, stop: anyio.Event) -> None:
    command = worker_command(settings)
    procs: list[anyio.abc.Process] = []
    died = anyio.Event()

    async def watch(proc: anyio.abc.Process) -> None:
        code = await proc.wait()
        if not stop.is_set():
            log.error("gateway worker %d exited with %s", proc.pid, code)
            died.set()

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(settings.workers):
                proc = await anyio.open_process(command, stdin=subprocess.DEVNULL, stdout=None,
                                                stderr=None, start_new_session=True,
                                                env=dict(os.environ))
                procs.append(proc)
                tg.start_soon(watch, proc)
            log.info("%d gateway workers on port %d: pids %s", len(procs), settings.port,
                     ", ".join(str(p.pid) for p in procs))
            async with anyio.create_task_group() as first:
                async def until(event: anyio.Event) -> None:
                    await event.wait()
                    first.cancel_scope.cancel()

                first.start_soon(until, stop)
                first.start_soon(until, died)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            for proc in procs:
                with suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            with anyio.move_on_after(settings.shutdown_grace):
                for proc in procs:
                    await proc.wait()
            for proc in procs:
                if proc.returncode is None:
                    with suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
    if died.is_set():
        raise SystemExit(1)
