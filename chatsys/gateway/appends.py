"""Coalesced appends: every socket's sends share a few ``AppendBatch`` calls to A.

One gRPC call per chat message cost the gateway more CPU than anything but the sockets
themselves (headers, a new HTTP/2 stream, deadline and metrics bookkeeping per message), and
cost A as much again. Here a send joins a queue; ``LANES`` long-lived lanes each take whatever
has queued, send it as one batch and hand every sender its own outcome. An idle lane sends a
lone message at once, so a quiet gateway adds no latency; under load the batches grow by
themselves while the lanes are busy, and the cost per message falls as the rate rises.

A batch is retried, lost or refused as a whole exactly as one ``Append`` was (see
:mod:`chatsys.gateway.clients.chat`); each message's own failure (a bad request, a failed
commit) comes back to its sender alone. Each sender waits at most ``--grpc-timeout`` from the
moment it queued. A sender that gives up (timed out, or its socket closed) before its message
left the queue is dropped from the batch; one whose message is already on the wire may still be
stored, as with any call cancelled in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import anyio

from chatsys.errors import ChatError, Internal, Unavailable
from chatsys.gateway import metrics as m
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import AppendRequest, Stored

log = logging.getLogger("chatsys.gateway.appends")
LANES = 2
MAX_BATCH = 64  # texts of up to 16 KB each stay well inside gRPC's 4 MiB message limit
SendBatch = Callable[[list[AppendRequest]], Awaitable[list[Stored | ChatError]]]
Pending = tuple[AppendRequest, asyncio.Future[Stored]]


class AppendQueue:
    def __init__(self, send_batch: SendBatch, *, timeout: float, lanes: int = LANES,
                 max_batch: int = MAX_BATCH) -> None:
        self._send_batch = send_batch
        self.timeout = timeout
        self.lanes = lanes
        self.max_batch = max_batch
        self._pending: list[Pending] = []
        self._wake = asyncio.Event()
        self._open = False

    async def append(self, request: AppendRequest) -> Stored:
        """Store one message through the next batch: its id and ts, or its ChatError."""
        if not self._open:  # stopping, or restarting after a failure (supervised)
            raise Unavailable("the gateway cannot send messages right now, try again")
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        self._wake.set()
        # The sender's deadline runs from here, queueing included, as one call's did: behind a
        # stuck A, a queue of thousands must fail in --grpc-timeout, not batch after batch.
        # asyncio.timeout, not anyio.fail_after: it costs about half as much, once per message.
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            raise Unavailable("a backend service is unavailable, try again") from None

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

    def _take(self) -> list[Pending]:
        """The next batch, without senders that already gave up."""
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
            m.APPEND_BATCH_SIZE.observe(len(batch))
            try:
                outcomes = await self._send_batch([request for request, _ in batch])
            except ChatError as exc:
                _fail(batch, exc)
                continue
            except Exception:
                log.exception("an append batch failed")
                _fail(batch, Internal("internal error"))
                continue
            except BaseException:  # cancelled: the gateway is stopping
                _fail(batch, Unavailable("the gateway is shutting down"))
                raise
            if len(outcomes) != len(batch):
                log.error("AppendBatch answered %d outcomes for %d appends",
                          len(outcomes), len(batch))
                _fail(batch, Internal("internal error"))
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, ChatError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


def _fail(batch: list[Pending], error: ChatError) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(type(error)(error.message))
