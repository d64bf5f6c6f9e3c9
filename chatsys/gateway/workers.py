"""``--workers N``: N full gateway processes sharing one port through SO_REUSEPORT.

Each worker is an ordinary ``chatsys gateway`` with ``--workers 1`` and its own subscriptions
to A, so a room with members on two workers is fanned out by both — correctly, since every
worker subscribes to A. The parent only starts them, forwards the stop, and exits non-zero if
one dies on its own.
"""

from __future__ import annotations

import logging
import sys

import anyio
import anyio.abc

from chatsys.runtime.children import spawn, terminate, wait_any, watch
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
    try:
        async with anyio.create_task_group() as tg:
            for i in range(settings.workers):
                procs.append(await spawn(command))
                tg.start_soon(watch, f"gateway worker {i + 1}", procs[-1], died, stop)
            log.info("%d gateway workers on port %d: pids %s", len(procs), settings.port,
                     ", ".join(str(p.pid) for p in procs))
            await wait_any(stop, died)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for i, proc in enumerate(procs):
                    tg.start_soon(terminate, f"gateway worker {i + 1}", proc,
                                  settings.shutdown_grace)
    if died.is_set():
        raise SystemExit(1)
