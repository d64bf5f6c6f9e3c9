"""``chatsys all``: P, A and B as separate OS processes on one machine, started and stopped
together.

A and B get free loopback ports; the gateway is told where they are. The system is ready when
the gateway's ``/readyz`` says so. On Ctrl-C or SIGTERM the gateway drains first (its clients
get 1001 and can resume with ``since``), then A and B stop; any child that dies on its own
takes the rest down with a non-zero exit.
"""

from __future__ import annotations

import logging
import sys
from contextlib import suppress
from functools import partial

import anyio
import anyio.abc
import httpx

from chatsys.runtime import lifecycle
from chatsys.runtime.children import free_port, spawn, terminate, wait_any, watch
from chatsys.runtime.settings import Settings, options_for

log = logging.getLogger("chatsys.all")
READY_TIMEOUT = 60.0


def _gateway_flags(settings: Settings) -> list[str]:
    """Every gateway setting that ``all`` also takes, passed on as a flag."""
    flags: list[str] = []
    for opt in options_for(["gateway"]):
        if "all" in opt.verbs:
            flags += [opt.flag, str(getattr(settings, opt.name))]
    return flags


def commands(settings: Settings) -> dict[str, list[str]]:
    a_port, a_metrics, b_port, b_metrics = (free_port() for _ in range(4))
    common = ["--log-level", settings.log_level, "--log-format", settings.log_format,
              "--shutdown-grace", str(settings.shutdown_grace)]
    data = ["--data-dir", str(settings.data_dir)]
    store = ["--store", settings.store] if settings.store else []
    a = f"127.0.0.1:{a_port}"
    python = [sys.executable, "-m", "chatsys"]
    return {
        "A": [*python, "users", "chat", "--host", "127.0.0.1", "--port", str(a_port),
              "--metrics-port", str(a_metrics), *data, *store, *common,
              "--max-text-chars", str(settings.max_text_chars),
              "--history-limit", str(settings.history_limit), "--drain-timeout", "0"],
        "B": [*python, "files", "--host", "127.0.0.1", "--port", str(b_port),
              "--metrics-port", str(b_metrics), *data, *common,
              "--max-file-bytes", str(settings.max_file_bytes), "--drain-timeout", "0"],
        "P": [*python, "gateway", *_gateway_flags(settings), "--users-addr", a,
              "--chat-addr", a, "--files-addr", f"127.0.0.1:{b_port}"],
    }


async def _wait_ready(url: str, children: dict[str, anyio.abc.Process]) -> None:
    async with httpx.AsyncClient(timeout=2.0) as client:
        with anyio.fail_after(READY_TIMEOUT):
            while True:
                for name, proc in children.items():
                    if proc.returncode is not None:
                        raise RuntimeError(f"{name} exited with {proc.returncode} while starting")
                with suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                await anyio.sleep(0.1)


async def serve(settings: Settings, stop: anyio.Event) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cmds = commands(settings)
    children: dict[str, anyio.abc.Process] = {}
    died = anyio.Event()
    failed = False
    try:
        async with anyio.create_task_group() as tg:
            for name in ("A", "B", "P"):
                children[name] = await spawn(cmds[name])
                tg.start_soon(watch, name, children[name], died, stop)
            host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
            url = f"http://{host}:{settings.port}"
            await _wait_ready(f"{url}/readyz", children)
            log.info("chatsys is ready on %s (P, A and B running as pids %s)", url,
                     ", ".join(str(p.pid) for p in children.values()))
            await wait_any(stop, died)
            failed = died.is_set()
            stop.set()
            tg.cancel_scope.cancel()
    except (RuntimeError, TimeoutError) as exc:
        log.error("chatsys did not start: %s", exc)
        failed = True
    finally:
        with anyio.CancelScope(shield=True):
            grace = settings.shutdown_grace
            for name in ("P", "A", "B"):
                if name in children and await terminate(name, children[name], grace) != 0:
                    failed = True  # a child that did not stop cleanly fails the whole run
    if failed:
        raise SystemExit(1)


def run(settings: Settings) -> None:
    lifecycle.run(partial(serve, settings), grace=settings.shutdown_grace * 3)
