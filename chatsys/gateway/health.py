"""Readiness of the gateway's dependencies: can modules A and B serve?"""

from __future__ import annotations

from collections.abc import Iterable

from chatsys.gateway.clients.caller import WIRE_ERRORS
from chatsys.runtime.grpc_clients import ChannelPool

MAX_CHECK_SECONDS = 2.0


async def ready(pools: Iterable[ChannelPool], seconds: float) -> bool:
    """Every service can serve: some endpoint of each pool answers SERVING."""
    for pool in pools:
        if not await _any_serving(pool, min(seconds, MAX_CHECK_SECONDS)):
            return False
    return True


async def _any_serving(pool: ChannelPool, seconds: float) -> bool:
    # Imported on first use, not with this module: grpclib's health messages and grpcio's
    # (grpcio-health-checking) register the same protobuf symbols, which one process
    # refuses twice, and a process that only appends (tests, tools) must not exclude it.
    from grpclib.health.v1.health_grpc import HealthStub
    from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

    for endpoint in pool.endpoints:
        try:
            reply = await HealthStub(pool.channel(endpoint)).Check(
                HealthCheckRequest(service=""), timeout=seconds)
        except WIRE_ERRORS:
            continue
        if reply.status == HealthCheckResponse.SERVING:
            return True
    return False
