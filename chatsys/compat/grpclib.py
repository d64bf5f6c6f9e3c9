"""grpclib's private names that chatsys relies on, and the one fix it applies to grpclib.

Written against grpclib 0.4.7-0.4.9 (pyproject.toml: ``grpclib>=0.4.7,<0.5``);
``tests/compat/test_grpclib.py`` fails if what is relied on here changes. Nothing else in
chatsys reaches into grpclib's private names: where grpclib has a public way (binding the
server's socket to learn its port, for one), chatsys uses that instead.

What is relied on, and why
--------------------------
- ``Channel._protocol_factory`` and ``Server._protocol_factory``: the only place a connection's
  ``H2Protocol`` is made. :class:`ProtocolChannel` and :class:`ProtocolServer` let a subclass
  name its own protocol class (chatsys's writes one socket write per loop iteration, and its
  server advertises more concurrent streams); the server's factory must still run, since it
  registers the connection's handler with the server.
- ``H2Protocol.connection._connection``, the h2 connection under grpclib's: the only way to
  change the SETTINGS a connection advertises (:func:`advertise_settings`).
- ``Configuration(_keepalive_*, _http2_*)``: the keepalive options, underscored in grpclib as
  experimental (:func:`keepalive_configuration`).
- ``ServerReflection(_service_names=, _pool=)`` and ``grpclib.reflection._deprecated`` (the
  v1alpha service): reflection over our own descriptor pool, in both versions clients speak
  (:func:`reflection_services`). The public ``ServerReflection.extend`` reads only protobuf's
  default pool.
- ``grpclib.utils._service_name``: a servable's full service name (:func:`service_name`).

Balanced cancellation in ``grpclib.utils.Wrapper``
--------------------------------------------------
When a connection is lost or a deadline passes, grpclib wakes every task blocked on that
stream with ``Task.cancel()`` and, as the task leaves the wrapper, replaces the
``CancelledError`` with its own error (``StreamTerminatedError``, ``TimeoutError``). It never
calls ``Task.uncancel()``, so the task keeps a cancellation request that nobody will ever
consume: ``Task.cancelling()`` stays above zero for the rest of the task's life.

Cancel scopes (anyio's, and ``asyncio.timeout``) read that count to tell their own
cancellation from one meant for an outer scope. With a stale request left over, the next
cancel scope that is cancelled in that task does not swallow its ``CancelledError``: it
escapes the scope and ends the task as if it had been cancelled from outside. In the gateway
that was a room's subscription task (its stream lost with a killed A replica, and later its
room emptied): the ``CancelledError`` escaped the room's scope, took the fan-out hub down
with it, and every join to a new room was refused from then on.

:func:`install` makes the wrapper undo, with ``Task.uncancel()``, each cancellation it made
itself once it has turned it into its own error, so a task that saw a stream fail is left
exactly as it was before the call.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection, Mapping
from types import TracebackType
from typing import Any, ClassVar

import grpclib
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.protocol import H2Protocol
from grpclib.server import Server
from grpclib.utils import Wrapper, _service_name

SUPPORTED = ("0.4.7", "0.4.8", "0.4.9")
_ORIGINAL_EXIT = Wrapper.__exit__


class ProtocolChannel(Channel):
    """A client channel whose connections are ``protocol`` instances (an ``H2Protocol``)."""

    protocol: ClassVar[type[H2Protocol]] = H2Protocol

    def _protocol_factory(self) -> H2Protocol:
        made = super()._protocol_factory()
        return self.protocol(made.handler, made.config, made.h2_config)


class ProtocolServer(Server):
    """A server whose connections are ``protocol`` instances (an ``H2Protocol``)."""

    protocol: ClassVar[type[H2Protocol]] = H2Protocol

    def _protocol_factory(self) -> H2Protocol:
        made = super()._protocol_factory()  # registers its handler with the server
        return self.protocol(made.handler, made.config, made.h2_config)


def advertise_settings(protocol: H2Protocol, settings: Mapping[int, int]) -> None:
    """Send new local HTTP/2 SETTINGS on a connection (from ``connection_made`` on)."""
    protocol.connection._connection.update_settings(dict(settings))
    protocol.connection.flush()


def keepalive_configuration(seconds: float) -> Configuration:
    """A ping every ``seconds``, also on idle connections and with no cap on pings without
    data; an unanswered ping closes the connection after ``seconds`` more."""
    return Configuration(_keepalive_time=seconds, _keepalive_timeout=seconds,
                         _keepalive_permit_without_calls=True,
                         _http2_max_pings_without_data=0,
                         _http2_min_sent_ping_interval_without_data=seconds / 2)


def reflection_services(names: Collection[str], pool: Any) -> list[Any]:
    """Server reflection v1 and v1alpha for ``names``, answered from descriptor ``pool``."""
    # Imported here, not with this module: grpcio's reflection registers the same protobuf
    # symbols, which one process refuses twice, and every gRPC client imports this module.
    from grpclib.reflection._deprecated import ServerReflection as ServerReflectionV1Alpha
    from grpclib.reflection.service import ServerReflection

    return [ServerReflection(_service_names=names, _pool=pool),
            ServerReflectionV1Alpha(_service_names=names, _pool=pool)]


def service_name(servable: Any) -> str:
    """``package.Service`` of a servicer, as grpclib's health and reflection name it."""
    return _service_name(servable)


def _cancel(self: Wrapper, error: Exception) -> None:
    """``Wrapper.cancel``, counting the cancellations it requests per task."""
    self._error = error
    made: Counter[asyncio.Task[object]] = self.__dict__.setdefault("_chatsys_cancels", Counter())
    for task in self._tasks:
        task.cancel()
        made[task] += 1
    self.cancelled = True


def _exit(self: Wrapper, exc_type: type[BaseException] | None, exc_val: BaseException | None,
          exc_tb: TracebackType | None) -> None:
    task = asyncio.current_task()
    made: Counter[asyncio.Task[object]] | None = self.__dict__.get("_chatsys_cancels")
    count = made.pop(task, 0) if made is not None and task is not None else 0
    if task is not None and count and exc_type is asyncio.CancelledError:
        # The CancelledError being replaced is ours: drop the requests that caused it.
        for _ in range(count):
            task.uncancel()
    _ORIGINAL_EXIT(self, exc_type, exc_val, exc_tb)


def install() -> None:
    """Apply the fix (idempotent). Refuses a grpclib version it was not checked against."""
    if grpclib.__version__ not in SUPPORTED:
        raise RuntimeError(f"chatsys.compat.grpclib was written for grpclib {SUPPORTED}, "
                           f"found {grpclib.__version__}")
    Wrapper.cancel = _cancel  # type: ignore[method-assign]
    Wrapper.__exit__ = _exit  # type: ignore[method-assign]


install()
