"""The one gRPC server bootstrap that modules A and B share.

It registers the services with ``grpc.health.v1`` health and server reflection, instruments
them for Prometheus, and flips health to SERVING only once the port listens and the storage
answers; on stop it reports NOT_SERVING first, so load balancers move away before the port
closes.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus
from grpclib.health.check import ServiceCheck, ServiceStatus
from grpclib.health.service import OVERALL, Health
from h2.settings import SettingCodes

from chatsys.compat.grpclib import (
    ProtocolServer,
    advertise_settings,
    reflection_services,
    service_name,
)
from chatsys.runtime import metrics
from chatsys.runtime.h2_writes import CoalescingH2Protocol
from chatsys.runtime.settings import Settings
from chatsys.stubs.google_proto_descriptor_pool import default_google_proto_descriptor_pool

log = logging.getLogger("chatsys.grpc")


def _describe_builtin_services() -> None:
    """Reflection answers from our stubs' pool; health is described there too."""
    from grpclib.health.v1 import health_pb2

    try:
        default_google_proto_descriptor_pool.FindFileByName(health_pb2.DESCRIPTOR.name)
    except KeyError:
        default_google_proto_descriptor_pool.AddSerializedFile(health_pb2.DESCRIPTOR.serialized_pb)


_describe_builtin_services()
Probe = Callable[[], Awaitable[Any]]
MAX_CONCURRENT_STREAMS = 1 << 20


class _ManyStreamsProtocol(CoalescingH2Protocol):
    """Advertises a large SETTINGS_MAX_CONCURRENT_STREAMS instead of h2's default of 100 (and
    writes through :class:`~chatsys.runtime.h2_writes.CoalescingTransport`).

    A gateway holds one Subscribe stream per room with local members, all on one connection
    per A endpoint; with h2's default the 101st room's stream (and then every other call on
    that connection) waits for a stream to close. grpclib offers no setting for it.
    """

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        advertise_settings(self, {SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS})


class _Server(ProtocolServer):
    protocol = _ManyStreamsProtocol


async def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on the first address ``host`` resolves to: bound here, so its
    port (the real one for ``--port 0``) is known without asking the server for it."""
    infos = await anyio.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return socket.create_server(address, family=family)


LIVENESS = "liveness"


class _Liveness:
    """The health service name ``liveness``: SERVING whenever the process answers at all.

    Kubernetes' liveness probes ask for it, readiness probes for the overall status (every
    service's checks: storage, supervised tasks). A dependency's outage, such as Redis, then
    takes the replicas out of rotation without restarting them all. (grpclib names a health
    entry after the service part of its first method's path.)
    """

    def __mapping__(self) -> dict[str, Any]:
        return {f"/{LIVENESS}/": None}


PROBE_SECONDS = 1.0


def _probe_check(probe: Probe) -> ServiceCheck:
    async def check() -> bool:
        # Our own deadline: ServiceCheck's check_timeout wakes only code that enters its
        # wrapper, which a storage ping does not, and redis-py's retries with backoff kept a
        # health check waiting far longer than that while Redis was down.
        with anyio.move_on_after(PROBE_SECONDS):
            await probe()
            return True
        return False

    return ServiceCheck(check, check_ttl=2.0, check_timeout=PROBE_SECONDS)


async def serve_grpc(
    settings: Settings,
    services: Sequence[Any],
    probes: Sequence[Probe],
    stop: anyio.Event,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``stop``; reports the bound port through ``task_status``."""
    serving = ServiceStatus()
    checks = [serving, *(_probe_check(p) for p in probes)]
    names = [service_name(s) for s in services]
    health = Health({**{svc: checks for svc in services}, OVERALL: checks, _Liveness(): []})
    # Both reflection versions: grpcurl speaks v1, grpcio-reflection clients still v1alpha.
    reflected = [*names, "grpc.health.v1.Health"]
    reflection = reflection_services(reflected, default_google_proto_descriptor_pool)
    server = _Server([*services, health, *reflection])
    metrics.instrument_server(server)
    sock = await listen(settings.host, settings.port)
    try:
        await server.start(sock=sock)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    serving.set(True)
    log.info("gRPC %s listening on %s:%d", ", ".join(names), settings.host, port)
    task_status.started(port)
    try:
        await stop.wait()
        serving.set(False)
        log.info("draining gRPC server")
        await anyio.sleep(settings.drain_timeout)
    finally:
        serving.set(False)
        server.close()
        with anyio.move_on_after(settings.shutdown_grace, shield=True):
            await server.wait_closed()
