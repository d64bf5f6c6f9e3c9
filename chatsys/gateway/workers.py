"""``--workers N``: N full gateway processes sharing one port through SO_REUSEPORT.

Each worker is an ordinary ``chatsys gateway`` with ``--workers 1`` and its own subscriptions
to A, so a room with members on two workers is fanned out by both — correctly, since every
worker subscribes to A. The parent only starts them, forwards the stop, and exits non-zero if
one dies on its own. With ``--ready-file`` it reports the shared port once every worker has.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import anyio
import anyio.abc

from chatsys.runtime import ready
from chatsys.runtime.children import spawn, terminate, wait_any, watch
from chatsys.runtime.settings import Settings, options_for
from chatsys.runtime.sockets import shared_port_socket

log = logging.getLogger("chatsys.gateway.workers")
READY_TIMEOUT = 60.0


def worker_command(settings: Settings, ready_file: str = "") -> list[str]:
    flags: list[str] = []
    for opt in options_for(["gateway"]):
        value = 1 if opt.name == "workers" else getattr(settings, opt.name)
        if opt.name == "ready_file":
            value = ready_file
        flags += [opt.flag, str(value)]
    return [sys.executable, "-m", "chatsys", "gateway", *flags]


async def serve_workers(settings: Settings, stop: anyio.Event) -> None:
    with contextlib.ExitStack() as reserved:
        if settings.port == 0:
            # A port they can all bind: this socket binds it beside them and never listens,
            # so it takes no connection, yet no other program can take the port meanwhile.
            sock = reserved.enter_context(shared_port_socket(settings.host, 0))
            settings = settings.replace(port=sock.getsockname()[1])
        await _serve_workers(settings, stop)


async def _serve_workers(settings: Settings, stop: anyio.Event) -> None:
    procs: list[anyio.abc.Process] = []
    died = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            for i in range(settings.workers):
                # Each worker reports its own readiness; ours follows once all of them have.
                own = f"{settings.ready_file}.{i + 1}" if settings.ready_file else ""
                procs.append(await spawn(worker_command(settings, own)))
                tg.start_soon(watch, f"gateway worker {i + 1}", procs[-1], died, stop)
            if settings.ready_file:
                try:
                    with anyio.fail_after(READY_TIMEOUT):
                        for i, proc in enumerate(procs):
                            await ready.wait(Path(f"{settings.ready_file}.{i + 1}"), proc)
                    ready.write(settings.ready_file, ready.Ports(settings.port))
                except (ready.NotReady, TimeoutError) as exc:
                    log.error("gateway workers not ready: %s", exc or "timed out")
                    died.set()
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
