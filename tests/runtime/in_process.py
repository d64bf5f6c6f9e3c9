"""P, A and B in ONE process, each started with ``await tg.start(serve, ...)`` on port 0, then a
real WebSocket join and message round trip: ``python -m tests.runtime.in_process SERVER DIR``.

It runs in an interpreter of its own because A's gRPC server describes health with grpclib's
``health_pb2``, which cannot share a protobuf descriptor pool with grpcio's ``grpc_health``
(loaded by ``tests/runtime/test_grpc_health_reflection.py``): the two define the same symbols.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from chatsys.runtime.settings import Settings
from tests.chat_client import ChatClient


async def round_trip(port: int) -> None:
    alice = await ChatClient.connect(port, "alice", "lobby")
    bob = await ChatClient.connect(port, "bob", "lobby")
    ref = await alice.send_text("hello")
    ack = await alice.ack_or_error(ref)
    assert ack["type"] == "ack", ack
    for member in (alice, bob):
        got = await member.wait_for(lambda f: f["type"] == "message")
        assert (got["id"], got["text"]) == (ack["id"], "hello"), got
        await member.ws.close()


async def serve_and_chat(server: str, data_dir: Path) -> None:
    # Imported here, so that test_topology can import round_trip without them (docstring).
    from chatsys import services
    from chatsys.gateway import main as gateway

    common = Settings(host="127.0.0.1", port=0, metrics_port=0, data_dir=data_dir,
                      drain_timeout=0, shutdown_grace=2)
    stop = anyio.Event()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            a = await tg.start(services.serve, common.replace(verbs=("users", "chat")), stop)
            b = await tg.start(services.serve, common.replace(verbs=("files",)), stop)
            assert 0 not in (a.port, a.metrics_port, b.port, b.metrics_port), (a, b)
            p = await tg.start(gateway.serve, common.replace(
                verbs=("gateway",), server=server, users_addr=f"127.0.0.1:{a.port}",
                chat_addr=f"127.0.0.1:{a.port}", files_addr=f"127.0.0.1:{b.port}"), stop)
            await round_trip(p.port)
            stop.set()
    print(f"in-process round trip on P {p.port}, A {a.port}, B {b.port}: ok")


if __name__ == "__main__":
    anyio.run(serve_and_chat, sys.argv[1], Path(sys.argv[2]), backend="asyncio")
