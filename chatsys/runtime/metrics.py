"""Prometheus metrics: grpc-ecosystem names from grpclib events, and the exposition endpoint.

grpclib reports each call as events on the server or channel; the callbacks run in the task
handling that call, so a context variable carries the start time from the request event to
the trailing-metadata event without any per-call bookkeeping object.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Iterable
from typing import Any

from grpclib import events
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from chatsys.stubs.chatsys.chat.v1 import CHATSYS_CHAT_V1_CHAT_PROTO_DESCRIPTOR
from chatsys.stubs.chatsys.files.v1 import CHATSYS_FILES_V1_FILES_PROTO_DESCRIPTOR
from chatsys.stubs.chatsys.users.v1 import CHATSYS_USERS_V1_USERS_PROTO_DESCRIPTOR

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LABELS = ("grpc_type", "grpc_service", "grpc_method")


def _method_types() -> dict[str, str]:
    """'/pkg.Service/Method' → grpc_type, read from the compiled descriptors."""
    kinds = {(False, False): "unary", (False, True): "server_stream",
             (True, False): "client_stream", (True, True): "bidi_stream"}
    types: dict[str, str] = {}
    for fd in (CHATSYS_CHAT_V1_CHAT_PROTO_DESCRIPTOR, CHATSYS_FILES_V1_FILES_PROTO_DESCRIPTOR,
               CHATSYS_USERS_V1_USERS_PROTO_DESCRIPTOR):
        for service in fd.services_by_name.values():
            for method in service.methods:
                key = f"/{service.full_name}/{method.name}"
                types[key] = kinds[(method.client_streaming, method.server_streaming)]
    types["/grpc.health.v1.Health/Check"] = "unary"
    types["/grpc.health.v1.Health/Watch"] = "server_stream"
    types["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"] = "bidi_stream"
    types["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"] = "bidi_stream"
    return types


METHOD_TYPES = _method_types()


def _labels(method_name: str) -> tuple[str, str, str]:
    service, _, method = method_name.lstrip("/").partition("/")
    return METHOD_TYPES.get(method_name, "unary"), service, method


class _GrpcMetrics:
    def __init__(self, side: str) -> None:
        self.started = Counter(f"grpc_{side}_started_total",
                               f"RPCs started on the {side}.", _LABELS)
        self.handled = Counter(f"grpc_{side}_handled_total",
                               f"RPCs completed on the {side}, by status code.",
                               (*_LABELS, "grpc_code"))
        self.seconds = Histogram(f"grpc_{side}_handling_seconds",
                                 f"RPC latency seen by the {side}.", _LABELS,
                                 buckets=LATENCY_BUCKETS)
        # Children looked up once per method (and status): labels() per call cost more than
        # the increment itself on the gateway's per-message Append path.
        self._methods: dict[str, tuple[tuple[str, str, str], Any, Any]] = {}
        self._handled: dict[tuple[tuple[str, str, str], str], Any] = {}
        self.call: contextvars.ContextVar[tuple[tuple[str, str, str], Any, float] | None] = (
            contextvars.ContextVar(f"grpc_{side}_call", default=None))

    def begin(self, method_name: str) -> None:
        method = self._methods.get(method_name)
        if method is None:
            labels = _labels(method_name)
            method = (labels, self.started.labels(*labels), self.seconds.labels(*labels))
            self._methods[method_name] = method
        labels, started, seconds = method
        started.inc()
        self.call.set((labels, seconds, time.perf_counter()))

    def end(self, status: Any) -> None:
        self.finish(status.name)

    def finish(self, code: str) -> None:
        """Count the current call as handled with ``code`` (a no-op if none is running)."""
        call = self.call.get()
        if call is None:
            return
        labels, seconds, started = call
        self.call.set(None)
        handled = self._handled.get((labels, code))
        if handled is None:
            handled = self._handled[labels, code] = self.handled.labels(*labels, code)
        handled.inc()
        seconds.observe(time.perf_counter() - started)


SERVER = _GrpcMetrics("server")
CLIENT = _GrpcMetrics("client")

# Client-side balancing (the gateway's pools): per-endpoint picks show the balance, ejections
# and retries show failovers. `service` is users/chat/files, `endpoint` is host:port.
CLIENT_CALLS = Counter("chatsys_grpc_client_calls_total",
                       "Calls (attempts) sent to each endpoint of a backend service.",
                       ("service", "endpoint"))
CLIENT_EJECTIONS = Counter("chatsys_grpc_client_ejections_total",
                           "Times an endpoint was taken out of rotation after a failed call.",
                           ("service", "endpoint"))
CLIENT_RETRIES = Counter("chatsys_grpc_client_retries_total",
                         "Calls retried on another endpoint after the first one failed.",
                         ("service", "method"))
CLIENT_ENDPOINTS = Gauge("chatsys_grpc_client_endpoints",
                         "Endpoints currently known for a backend service.", ("service",))
RESUBSCRIBES = Counter("chatsys_room_resubscribes_total",
                       "Room subscriptions re-established (resuming with since) after their "
                       "stream to A ended.")


def instrument_server(server: Any) -> None:
    async def on_request(event: events.RecvRequest) -> None:
        SERVER.begin(event.method_name)

    async def on_trailers(event: events.SendTrailingMetadata) -> None:
        SERVER.end(event.status)

    events.listen(server, events.RecvRequest, on_request)
    events.listen(server, events.SendTrailingMetadata, on_trailers)


def instrument_channel(channel: Any) -> None:
    async def on_request(event: events.SendRequest) -> None:
        CLIENT.begin(event.method_name)

    async def on_trailers(event: events.RecvTrailingMetadata) -> None:
        CLIENT.end(event.status)

    events.listen(channel, events.SendRequest, on_request)
    events.listen(channel, events.RecvTrailingMetadata, on_trailers)


def record_client_failure(exc: BaseException) -> None:
    """A call that ended without trailers (connection refused, reset) still counts."""
    CLIENT.finish("UNAVAILABLE")


class _AsyncioTasks(Collector):
    """``chatsys_asyncio_tasks``: the event loop's live tasks, counted at scrape time, so a
    leak of tasks (one left behind per join or per fault) shows as a rising line."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily("chatsys_asyncio_tasks", "Live asyncio tasks of the process.",
                                value=len(asyncio.all_tasks(self._loop)))


_counted_loops: set[int] = set()


def count_asyncio_tasks() -> None:
    """Export the running loop's task count (once per loop)."""
    loop = asyncio.get_running_loop()
    if id(loop) not in _counted_loops:
        _counted_loops.add(id(loop))
        REGISTRY.register(_AsyncioTasks(loop))


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def start_exposition_server(host: str, port: int) -> int:
    """Serve /metrics on its own port (A and B); returns the bound port."""
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return int(server.server_address[1])


def histogram(name: str, doc: str, labels: Iterable[str] = (),
              buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
    return Histogram(name, doc, tuple(labels), buckets=buckets)
