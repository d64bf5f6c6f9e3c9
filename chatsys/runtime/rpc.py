"""Servicer method decorators: contract errors become gRPC statuses, bugs become INTERNAL.

Servicers raise :class:`chatsys.errors.ChatError` subclasses; these wrappers map them through
:func:`chatsys.errors.to_grpc` (the one mapping), turn a storage outage (Redis gone, see
:func:`chatsys.runtime.storage.is_outage`) into :class:`~chatsys.errors.StoreFailed`
(``unavailable`` to the client, never retried: a write may have landed), and any other
exception into a logged INTERNAL status, so one bad request never takes the server down and
never leaks a traceback to the client. Cancellation passes through untouched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from grpclib.exceptions import GRPCError

from chatsys.errors import ChatError, Internal, StoreFailed, to_grpc
from chatsys.runtime.storage import is_outage

log = logging.getLogger("chatsys.rpc")
R = TypeVar("R")


def _translate(name: str, exc: Exception) -> GRPCError:
    if isinstance(exc, GRPCError):
        return exc
    if isinstance(exc, ChatError):
        return to_grpc(exc)
    if is_outage(exc):
        log.warning("%s failed: storage unavailable (%s: %s)", name, type(exc).__name__, exc)
        return to_grpc(StoreFailed("storage is unavailable, try again"))
    log.exception("%s failed", name)
    return to_grpc(Internal("internal error"))


def unary(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> R:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            raise _translate(fn.__qualname__, exc) from exc

    return wrapper


def stream(fn: Callable[..., AsyncIterator[R]]) -> Callable[..., AsyncIterator[R]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[R]:
        try:
            # aclosing: if our consumer stops early, the handler's `finally` runs now, not at GC.
            async with contextlib.aclosing(fn(*args, **kwargs)) as items:
                async for item in items:
                    yield item
        except Exception as exc:
            raise _translate(fn.__qualname__, exc) from exc

    return wrapper
