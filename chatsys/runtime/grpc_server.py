"""The one gRPC server bootstrap that modules A and B share.

It registers the services with ``grpc.health.v1`` health and server reflection, instruments
them for Prometheus, and flips health to SERVING only once the port listens and the storage
answers; on stop it reports NOT_SERVING first, so load balancers move away before the port
closes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus
from grpclib.health.check import ServiceCheck, ServiceStatus
from grpclib.health.service import OVERALL, Health
from grpclib.protocol import H2Protocol
from grpclib.reflection._deprecated import ServerReflection as ServerReflectionV1Alpha
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server
from grpclib.utils import _service_name
from h2.settings import SettingCodes

import chatsys.compat.grpclib  # noqa: F401  (grpclib's cancellations balanced: see there)
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
        self.connection._connection.update_settings(
            {SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS})
        self.connection.flush()


class _Server(Server):
    def _protocol_factory(self) -> H2Protocol:
        made = super()._protocol_factory()  # registers its handler with the server
        return _ManyStreamsProtocol(made.handler, made.config, made.h2_config)


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
        # health check waiting 8 s while Redis was down.
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
    names = [_service_name(s) for s in services]
    health = Health({**{svc: checks for svc in services}, OVERALL: checks, _Liveness(): []})
    # Both reflection versions: grpcurl speaks v1, grpcio-reflection clients still v1alpha.
    reflected = [*names, "grpc.health.v1.Health"]
    reflection = [
        ServerReflection(_service_names=reflected, _pool=default_google_proto_descriptor_pool),
        ServerReflectionV1Alpha(_service_names=reflected,
                                _pool=default_google_proto_descriptor_pool),
    ]
    server = _Server([*services, health, *reflection])
    metrics.instrument_server(server)
    await server.start(settings.host, settings.port, reuse_port=False)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
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
