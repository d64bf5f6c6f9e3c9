"""Coalesced calls: concurrent requests of one kind share a few batch calls to a service.

One gRPC call per request cost the gateway more CPU than anything but the sockets themselves
(headers, a new HTTP/2 stream, deadline and metrics bookkeeping per call), and cost A as much
again; in a join or leave storm thousands of concurrent calls also made h2's per-stream
bookkeeping grow with the number of open streams. So chat messages (``AppendBatch``), new and
ended sessions (``CreateSessions``, ``EndSessions``) and presence (``PublishPresenceBatch``)
each go through a :class:`Coalescer`: a request joins a queue; ``lanes`` long-lived lanes each
take whatever has queued, send it as one batch and hand every caller its own outcome. An idle
lane sends a lone request at once, so a quiet gateway adds no latency; under load the batches
grow by themselves while the lanes are busy, and the cost per request falls as the rate rises.

A batch is retried, lost or refused as a whole exactly as one call was (the clients' batch
functions decide, see :mod:`chatsys.gateway.clients.caller`); each request's own failure (a
bad request, a failed commit) comes back to its caller alone. Each caller waits at most
``--grpc-timeout`` from the moment it queued. A caller that gives up (timed out, or its socket
closed) before its request left the queue is dropped from the batch; one whose request is
already on the wire may still take effect, as with any call cancelled in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
from prometheus_client import Histogram

from chatsys.errors import BACKEND_DOWN, ChatError, Internal, Unavailable

log = logging.getLogger("chatsys.gateway.coalescing")
LANES = 2
MAX_BATCH = 64  # texts of up to 16 KB each stay well inside gRPC's 4 MiB message limit
Request = TypeVar("Request")
Result = TypeVar("Result")


class Coalescer(Generic[Request, Result]):
    """``await call(request)`` through the next batch of ``send_batch``, which answers one
    outcome (a result or a ChatError) per request, in order; :meth:`run` is the lanes."""

    def __init__(self, method: str,
                 send_batch: Callable[[list[Request]], Awaitable[list[Result | ChatError]]], *,
                 timeout: float, sizes: Histogram, lanes: int = LANES,
                 max_batch: int = MAX_BATCH) -> None:
        self.method = method
        self._send_batch = send_batch
        self.timeout = timeout
        self._sizes = sizes
        self.lanes = lanes
        self.max_batch = max_batch
        self._pending: list[tuple[Request, asyncio.Future[Result]]] = []
        self._wake = asyncio.Event()
        self._open = False

    async def call(self, request: Request) -> Result:
        """``request``'s own outcome: its result, or its ChatError raised."""
        if not self._open:  # stopping, or restarting after a failure (supervised)
            raise Unavailable("the gateway cannot reach its backends right now, try again")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        self._wake.set()
        # The caller's deadline runs from here, queueing included, as one call's did: behind a
        # stuck A, a queue of thousands must fail in --grpc-timeout, not batch after batch.
        # asyncio.timeout, not anyio.fail_after: it costs about half as much, once per request.
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            raise Unavailable(BACKEND_DOWN) from None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        """The lanes, until cancelled (supervised by the gateway: restarted if they fail)."""
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.lanes):
                    tg.start_soon(self._lane)
                self._open = True
                task_status.started()
        finally:
            self._open = False
            pending, self._pending = self._pending, []
            _fail(pending, Unavailable("the gateway is shutting down"))

    def _take(self) -> list[tuple[Request, asyncio.Future[Result]]]:
        """The next batch, without callers that already gave up."""
        items = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        return [item for item in items if not item[1].done()]

    async def _lane(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take()
            if not batch:
                continue
            self._sizes.observe(len(batch))
            try:
                outcomes = await self._send_batch([request for request, _ in batch])
            except ChatError as exc:
                _fail(batch, exc)
                continue
            except Exception:
                log.exception("a %s batch failed", self.method)
                _fail(batch, Internal("internal error"))
                continue
            except BaseException:  # cancelled: the gateway is stopping
                _fail(batch, Unavailable("the gateway is shutting down"))
                raise
            if len(outcomes) != len(batch):
                log.error("%s answered %d outcomes for %d requests",
                          self.method, len(outcomes), len(batch))
                _fail(batch, Internal("internal error"))
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, ChatError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


def _fail(batch: list[tuple[Request, asyncio.Future[Result]]], error: ChatError) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(type(error)(error.message))
