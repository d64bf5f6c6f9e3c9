"""The shared gRPC bootstrap binds its own socket: ``--port 0`` reports the port it got."""

from __future__ import annotations

import anyio
import pytest
from grpclib.client import Channel

from chatsys.runtime.grpc_server import serve_grpc
from chatsys.runtime.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_port_zero_reports_the_bound_port_and_serves_health() -> None:
    from grpclib.health.v1.health_grpc import HealthStub
    from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

    settings = Settings(host="127.0.0.1", port=0, drain_timeout=0.0, shutdown_grace=2.0)
    stop = anyio.Event()

    async def ping() -> None:
        pass

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_grpc, settings, [], [ping], stop)
            assert port > 0
            channel = Channel("127.0.0.1", port)
            try:
                reply = await HealthStub(channel).Check(HealthCheckRequest(service=""))
                assert reply.status == HealthCheckResponse.SERVING
            finally:
                channel.close()
            stop.set()
