"""Process lifecycle: the event loop, signals, and a graceful stop with a hard deadline.

A service is ``async def main(stop: anyio.Event) -> None``: it runs until ``stop`` is set, then
drains and returns. SIGINT/SIGTERM set ``stop``; if the drain overruns the grace period (or a
second signal arrives) the root scope is cancelled. No service installs its own handlers.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable

import anyio

log = logging.getLogger("chatsys.lifecycle")
Main = Callable[[anyio.Event], Awaitable[None]]
# Generation thresholds: CPython's defaults are (2000, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a server holding thousands of live sockets.

    With CPython's default thresholds a gateway accepting joins quickly ran a full collection
    each time its heap grew by a quarter, walking every object of every open socket while the
    event loop stood still: those stalls were the tail of the connect latency. Freezing what
    start-up allocated and raising the thresholds removed it without costing memory (the
    figures: docs/performance.md, "Figures behind design choices"). Reference cycles are still
    collected, only less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


async def _watch_signals(stop: anyio.Event, scope: anyio.CancelScope, grace: float) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down (grace %.1fs)", signal.Signals(signum).name, grace)
            stop.set()
            break
        with anyio.move_on_after(grace):
            async for _ in signals:
                log.warning("second signal: stopping now")
                break
        scope.cancel()


async def supervise(main: Main, grace: float) -> None:
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, stop, tg.cancel_scope, grace)
        await main(stop)
        tg.cancel_scope.cancel()


def run(main: Main, *, grace: float) -> None:
    """Run ``main`` on asyncio (uvloop when installed) until it returns or a signal stops it."""
    tune_gc()
    anyio.run(supervise, main, grace, backend="asyncio",
              backend_options={"use_uvloop": _uvloop_available()})
