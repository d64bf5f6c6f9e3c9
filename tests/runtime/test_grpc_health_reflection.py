"""Health and reflection seen by independent clients: the official grpcio packages, and grpclib."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.grpc_services import Service, start
from tests.redis_support import start_redis
from tests.support import wait_until

pytestmark = pytest.mark.slow  # starts real processes


@pytest.fixture(scope="module")
def module_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with start(["users", "chat"], tmp_path_factory.mktemp("a") / "data") as svc:
        yield svc


@pytest.fixture(scope="module")
def module_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with start(["files"], tmp_path_factory.mktemp("b") / "data") as svc:
        yield svc


def _channel(svc: Service) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{svc.port}")


@pytest.mark.parametrize(("which", "services"), [
    ("a", ["", "chatsys.users.v1.UserService", "chatsys.chat.v1.ChatService", "liveness"]),
    ("b", ["", "chatsys.files.v1.FileService", "liveness"]),
])
def test_health_serving(which: str, services: list[str], module_a: Service,
                        module_b: Service) -> None:
    svc = module_a if which == "a" else module_b
    with _channel(svc) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in services:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.RpcError) as exc:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND


def test_liveness_is_the_process_alone(tmp_path: Path) -> None:
    """Redis down: A is not ready (overall NOT_SERVING) but alive ("liveness" SERVING), so
    Kubernetes takes it out of rotation without restarting it; ready again once Redis is."""
    with start_redis(tmp_path / "redis") as redis, \
            start(["users", "chat"], tmp_path / "a", f"--store={redis.url()}") as a, \
            _channel(a) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def status(name: str) -> int:
            return stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status

        serving = health_pb2.HealthCheckResponse.SERVING
        assert status("") == serving and status("liveness") == serving
        redis.proc.signal(signal.SIGKILL)
        redis.proc.wait(10)
        wait_until(lambda: status("") == health_pb2.HealthCheckResponse.NOT_SERVING,
                   timeout=20, what="A reports NOT_SERVING")
        assert status("liveness") == serving
        with start_redis(redis.dir, port=redis.port):
            wait_until(lambda: status("") == serving, timeout=20, what="A ready again")


def test_reflection_module_a(module_a: Service) -> None:
    with _channel(module_a) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"chatsys.users.v1.UserService", "chatsys.chat.v1.ChatService",
                "grpc.health.v1.Health"} <= services
        pool = DescriptorPool(db)
        chat = pool.FindServiceByName("chatsys.chat.v1.ChatService")
        assert {m.name for m in chat.methods} == {"Append", "AppendBatch", "History",
                                                  "PublishPresence", "PublishPresenceBatch",
                                                  "Subscribe"}
        assert pool.FindMessageTypeByName("chatsys.chat.v1.RoomEvent").fields_by_name["message"]
        assert pool.FindServiceByName("grpc.health.v1.Health").methods_by_name["Check"]
        user_file = pool.FindFileContainingSymbol("chatsys.users.v1.UserService")
        assert user_file.name == "chatsys/users/v1/users.proto"


def test_reflection_module_b(module_b: Service) -> None:
    with _channel(module_b) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert "chatsys.files.v1.FileService" in services
        assert "chatsys.chat.v1.ChatService" not in services
        pool = DescriptorPool(db)
        upload = pool.FindServiceByName("chatsys.files.v1.FileService").methods_by_name["Upload"]
        assert upload.client_streaming and not upload.server_streaming


@pytest.mark.anyio
async def test_reflection_v1_with_grpclib(module_a: Service) -> None:
    """The v1 protocol (what grpcurl speaks), through grpclib's own client."""
    import anyio
    from google.protobuf.descriptor_pb2 import FileDescriptorProto
    from grpclib.client import Channel
    from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
    from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest

    channel = Channel("127.0.0.1", module_a.port)
    try:
        with anyio.fail_after(5):
            async with ServerReflectionStub(channel).ServerReflectionInfo.open() as stream:
                await stream.send_message(ServerReflectionRequest(list_services=""))
                listed = await stream.recv_message()
                await stream.send_message(ServerReflectionRequest(
                    file_containing_symbol="chatsys.chat.v1.Message"))
                found = await stream.recv_message()
                await stream.end()
    finally:
        channel.close()
    assert listed is not None and found is not None
    names = {s.name for s in listed.list_services_response.service}
    assert "chatsys.chat.v1.ChatService" in names
    raw = found.file_descriptor_response.file_descriptor_proto
    assert raw, found
    assert FileDescriptorProto.FromString(raw[0]).package == "chatsys.chat.v1"


