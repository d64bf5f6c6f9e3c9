"""One retrying caller per gRPC service: deadline, round robin over a pool, retry policy, and
the mapping of whatever fails on the wire to a contract error.

Every call gets one deadline (``--grpc-timeout``) and endpoints from the service's
:class:`~chatsys.runtime.grpc_clients.ChannelPool`, round robin. What may be retried on another
endpoint depends on what a repeat could do (:class:`Retry`):

- reads (authenticate, history, stat, download, health) and ending a session are retried after
  any failure that says "that endpoint is broken": connection refused or lost, UNAVAILABLE;
- writes (append, upload, create session) only when the request certainly did no work: the
  connection could not be opened, or the server refused it with UNAVAILABLE (A answers
  UNAVAILABLE only *before* queueing an append). A write whose connection broke mid-call is
  ambiguous — it may be stored — so it fails with ``unavailable`` instead of risking a
  duplicate.

Whatever goes wrong on the wire comes out as one of :mod:`chatsys.errors`' types, so the
WebSocket and HTTP layers only ever render contract errors.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from chatsys.errors import BACKEND_DOWN, ChatError, Internal, Unavailable, from_grpc, from_status
from chatsys.runtime import metrics
from chatsys.runtime.grpc_clients import ChannelPool, Endpoint, NoEndpoint

log = logging.getLogger("chatsys.gateway.clients")
T = TypeVar("T")
Item = TypeVar("Item")
WIRE_ERRORS = (GRPCError, StreamTerminatedError, OSError, TimeoutError)
MAX_ATTEMPTS = 3


class Retry(enum.Enum):
    UNSENT = "unsent"  # only if the request did no work (writes)
    BROKEN = "broken"  # after any failure of the endpoint (reads)


def did_no_work(exc: BaseException) -> bool:
    """The request never reached a server, or the server refused it before doing anything."""
    if isinstance(exc, GRPCError):
        return exc.status is Status.UNAVAILABLE
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError)


def endpoint_broken(exc: BaseException) -> bool:
    """The failure says more about the endpoint than about the request."""
    return did_no_work(exc) or isinstance(exc, StreamTerminatedError)


def _retryable(exc: BaseException, retry: Retry) -> bool:
    return did_no_work(exc) if retry is Retry.UNSENT else endpoint_broken(exc)


def outcome_of(message: Message, ok_field: str) -> Any:
    """One request's outcome in a batch reply: ``message``'s ``outcome`` oneof holds either
    ``ok_field`` (the result, returned) or ``failure`` (the status the request's own call would
    have had, returned as its contract error, like a failed call's)."""
    kind = message.WhichOneof("outcome")
    if kind == ok_field:
        return getattr(message, ok_field)
    if kind == "failure":
        failure = message.failure  # type: ignore[attr-defined]
        return from_status(failure.status, failure.detail)
    return Internal("an empty outcome")


def seconds_left(deadline: float) -> float:
    """What is left until ``deadline`` (on ``anyio.current_time()``'s clock) as a call's
    timeout: at least a millisecond, as a timeout must be positive (a call made too late then
    fails with its deadline)."""
    return max(0.001, deadline - anyio.current_time())


async def batch_or_one_each(batch: Callable[[float], Awaitable[list[T | ChatError]]],
                            one: Callable[[Item, float], Awaitable[T]], items: Sequence[Item],
                            seconds: float, *, per_item: bool = True) -> list[T | ChatError]:
    """``batch(seconds)``, or, where A is from before the batch method and answers
    UNIMPLEMENTED (a rolling upgrade that reaches the gateways first), ``one(item, left)`` for
    each item in turn, all within one deadline ``seconds`` away.

    The fallback answers as the batch would: where the batch method answers each item on its
    own (``per_item``), a single call's gRPC status is that item's outcome; where it succeeds or
    fails as a whole, the first failed call fails the whole call. Any other failure (the
    connection, the deadline) is raised for :meth:`Caller.call` to retry or fail as a whole,
    which may repeat the items already done: use this only where a repeat is harmless (appends
    are not, see ``chat._append_one_by_one``)."""
    try:
        return await batch(seconds)
    except GRPCError as exc:
        if exc.status is not Status.UNIMPLEMENTED:
            raise
    deadline = anyio.current_time() + seconds
    outcomes: list[T | ChatError] = []
    for item in items:
        try:
            outcomes.append(await one(item, seconds_left(deadline)))
        except GRPCError as exc:
            if not per_item:
                raise
            outcomes.append(from_grpc(exc))
    return outcomes


class Caller:
    """Deadline-bound, retried calls to one service's endpoints."""

    def __init__(self, pool: ChannelPool, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout

    async def call(self, method: str, call: Callable[[Channel, float], Awaitable[T]], *,
                   retry: Retry, budget: float | None = None, long_lived: bool = False) -> T:
        """``call(channel, seconds_left)`` on the next endpoint, then on others if allowed.

        ``budget`` (default ``--grpc-timeout``) is the deadline of all attempts together."""
        pool = self.pool
        deadline = anyio.current_time() + (budget or self.timeout)
        tried: list[Endpoint] = []
        while True:
            try:
                endpoint, channel = pool.pick(avoid=tried, long_lived=long_lived)
            except NoEndpoint:
                raise Unavailable(BACKEND_DOWN) from None
            try:
                result = await call(channel, seconds_left(deadline))
            except WIRE_ERRORS as exc:
                metrics.record_client_failure(exc)
                if endpoint_broken(exc):
                    pool.failed(endpoint)
                tried.append(endpoint)
                if (_retryable(exc, retry) and len(tried) < MAX_ATTEMPTS
                        and len(tried) < len(pool.endpoints)
                        and anyio.current_time() < deadline):
                    metrics.CLIENT_RETRIES.labels(pool.service, method).inc()
                    log.info("%s.%s failed on %s (%s); retrying on another endpoint",
                             pool.service, method, endpoint, type(exc).__name__)
                    continue
                raise from_grpc(exc) from None
            pool.succeeded(endpoint)
            return result

    async def open_stream(self, method: str,
                          open_stream: Callable[[Channel, float], AsyncIterator[T]], *,
                          long_lived: bool = False) -> tuple[T, AsyncIterator[T], Endpoint]:
        """Open a server stream and read its first message within the deadline, retrying on
        another endpoint like a read; returns that message, the open stream and its endpoint."""
        opened: list[Endpoint] = []

        async def first(channel: Channel, left: float) -> tuple[T, AsyncIterator[T]]:
            stream = open_stream(channel, left)
            try:
                with anyio.fail_after(left):
                    item = await anext(stream)
            except StopAsyncIteration:
                raise Internal(f"{method} ended before it started") from None
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()  # type: ignore[attr-defined]
                raise
            opened.append(self.pool.endpoint_of(channel))
            return item, stream

        item, stream = await self.call(method, first, retry=Retry.BROKEN, long_lived=long_lived)
        return item, stream, opened[-1]

    def stream_failed(self, endpoint: Endpoint, exc: BaseException) -> ChatError:
        """The contract error for an open stream that broke; ejects its endpoint if to blame."""
        metrics.record_client_failure(exc)
        if endpoint_broken(exc):
            self.pool.failed(endpoint)
        return from_grpc(exc)  # type: ignore[arg-type]
