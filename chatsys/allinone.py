"""``chatsys all``: P, A and B as separate OS processes on one machine, started and stopped
together (by :mod:`chatsys.runtime.topology`).

A and B bind ports of their own choosing and report them; the gateway is told where they are
and listens on ``--port``. The system is ready when the gateway's ``/readyz`` says so. On
Ctrl-C or SIGTERM the gateway drains first (its clients get 1001 and can resume with
``since``), then A and B stop; any child that dies on its own takes the rest down with a
non-zero exit. With ``--ready-file`` the gateway's port is written there once it is ready.
"""

from __future__ import annotations

import logging
import tempfile
from functools import partial
from pathlib import Path

import anyio

from chatsys.runtime import lifecycle, ready
from chatsys.runtime.children import wait_any
from chatsys.runtime.settings import Settings, options_for
from chatsys.runtime.topology import Topology, TopologyError

log = logging.getLogger("chatsys.all")
# Where the topology puts them itself, or that only `all` reads.
NOT_PASSED_ON = {"host", "port", "ready_file"}


def _gateway_flags(settings: Settings) -> list[str]:
    """Every gateway setting that ``all`` also takes, passed on as a flag."""
    flags: list[str] = []
    for opt in options_for(["gateway"]):
        if "all" in opt.verbs and opt.name not in NOT_PASSED_ON:
            flags += [opt.flag, str(getattr(settings, opt.name))]
    return flags


def topology(settings: Settings, workdir: Path) -> Topology:
    common = ["--log-level", settings.log_level, "--log-format", settings.log_format,
              "--shutdown-grace", str(settings.shutdown_grace)]
    return Topology(
        workdir, data_dir=settings.data_dir, store=settings.store, log_files=False,
        common_flags=common, grace=settings.shutdown_grace,
        a_flags=["--max-text-chars", str(settings.max_text_chars),
                 "--history-limit", str(settings.history_limit)],
        b_flags=["--max-file-bytes", str(settings.max_file_bytes)],
        gateway_flags=_gateway_flags(settings), gateway_host=settings.host,
        gateway_port=settings.port)


async def serve(settings: Settings, stop: anyio.Event) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    with tempfile.TemporaryDirectory(prefix="chatsys-all-") as workdir:
        system = topology(settings, Path(workdir))
        try:
            async with anyio.create_task_group() as tg:
                async def start() -> None:
                    await system.start()
                    tg.cancel_scope.cancel()

                tg.start_soon(start)
                await stop.wait()  # a signal while starting: stop what has started
                tg.cancel_scope.cancel()
            if not stop.is_set():
                url = system.gateway_urls[0]
                log.info("chatsys is ready on %s (P, A and B running as pids %s)", url,
                         ", ".join(str(m.proc.pid) for m in system.members if m.proc))
                ready.write(settings.ready_file, system.members[-1].ports)
                died = anyio.Event()
                async with anyio.create_task_group() as tg:
                    async def first_exit() -> None:
                        member = await system.wait_any_exit()
                        if not stop.is_set():
                            assert member.proc is not None
                            log.error("%s (pid %d) exited unexpectedly with %s", member.name,
                                      member.proc.pid, member.proc.returncode)
                            died.set()

                    tg.start_soon(first_exit)
                    await wait_any(stop, died)
                    failed = died.is_set()
                    tg.cancel_scope.cancel()
        except* TopologyError as group:
            log.error("chatsys did not start: %s", group.exceptions[0])
            failed = True
        finally:
            codes = await system.stop()
        # A child that did not stop cleanly fails the whole run.
        failed = failed or any(code != 0 for code in codes.values())
    if failed:
        raise SystemExit(1)


def run(settings: Settings) -> None:
    lifecycle.run(partial(serve, settings), grace=settings.shutdown_grace * 3)
