"""Faults as sequences: after a module dies, the ordinary things are tried again.

A test that only carries on an existing conversation after a fault misses a gateway that keeps
its old rooms working but can no longer open new ones. Each test here kills a module, lets the
room's members leave, then has new users join *new* rooms, send, and upload, on every gateway,
and checks that readiness said the truth throughout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from chatsys.runtime.topology import Topology
from tests.chat_client import ChatClient, refused, wait_status
from tests.redis_support import RedisServer
from tests.system.test_scale_out import gateway_ports, open_streams, start_topology

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def _converse(port_a: int, port_b: int, room: str) -> tuple[ChatClient, ChatClient]:
    ana = await ChatClient.connect(port_a, "ana", room)
    bo = await ChatClient.connect(port_b, "bo", room)
    ref = await ana.send_text("hello")
    assert (await ana.ack_or_error(ref, seconds=10))["type"] == "ack"
    await bo.wait_for(lambda f: f["type"] == "message" and f["text"] == "hello", 10)
    return ana, bo


async def _send_until_acked(client: ChatClient, text: str, seconds: float) -> dict[str, object]:
    """Sends during a fault may be refused with ``unavailable``; one must get through."""
    with anyio.fail_after(seconds):
        while True:
            frame = await client.ack_or_error(await client.send_text(text), seconds=seconds)
            if frame["type"] == "ack":
                return frame
            assert frame["code"] == "unavailable", frame
            await anyio.sleep(0.1)


async def _everything_works(port: int, room: str) -> None:
    """A new user in a new room: joins, sends (seen by a room mate), uploads, leaves."""
    cy = await ChatClient.connect(port, "cy", room, seconds=15)
    di = await ChatClient.connect(port, "di", room, seconds=15)
    ack = await _send_until_acked(cy, f"first words in {room}", 15)
    seen = await di.wait_for(lambda f: f["type"] == "message", 15)
    assert seen["id"] == ack["id"]
    upload = await cy.upload("note.txt", b"x" * 10_240, "text/plain")
    assert upload.status_code == 201, upload.text
    await cy.close()
    await di.close()
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200


async def test_new_rooms_after_an_a_replica_is_killed(tmp_path: Path,
                                                      redis_server: RedisServer) -> None:
    """Two gateways, two A replicas on Redis: after one A dies and the old room empties,
    every gateway still opens new rooms (it once refused them all with 503 'shutting down'
    while /readyz said 200)."""
    async with start_topology(tmp_path, redis_server) as topo:
        ports = gateway_ports(topo)
        ana, bo = await _converse(ports[0], ports[1], "before")
        # The replica holding the room's subscription streams: their loss is the fault.
        victim = max(topo.members_of("A"), key=open_streams)
        assert open_streams(victim) >= 1
        await topo.kill(victim)
        await _send_until_acked(ana, "after the kill", 30)
        await bo.wait_for(lambda f: f["type"] == "message" and f["text"] == "after the kill",
                          15)
        await ana.close()
        await bo.close()
        for round_ in range(3):
            for gateway, port in enumerate(ports):
                await _everything_works(port, f"new-{gateway}-{round_}")


def _one_of_each(tmp: Path, **options: Any) -> Topology:
    """P, A and B as three processes (as ``start_system`` runs them), so a test can kill one
    and start it again on its ports."""
    return Topology(tmp, gateway_flags=["--server=granian", "--drain-timeout=0.2",
                                        "--grpc-timeout=2"], **options)


async def test_new_rooms_after_a_is_killed_and_restarted(tmp_path: Path) -> None:
    """One A on SQLite, killed and restarted under a live gateway: once the room's members
    leave, joins to new rooms work (they were refused forever, with readiness 200)."""
    async with _one_of_each(tmp_path).running() as topo:
        [port] = gateway_ports(topo)
        ana, bo = await _converse(port, port, "before")
        a = topo.member("A-0")
        await topo.kill(a)
        await topo.restart(a)  # on the port the gateway knows, once it listens
        await wait_status(f"http://127.0.0.1:{port}/readyz", 200, 20)
        await _send_until_acked(ana, "after the restart", 30)
        await bo.wait_for(
            lambda f: f["type"] == "message" and f["text"] == "after the restart", 15)
        await ana.close()
        await bo.close()
        for round_ in range(3):
            await _everything_works(port, f"new-{round_}")


async def test_a_redis_outage_is_unavailable_then_everything_works(tmp_path: Path) -> None:
    """Redis killed under A: sends fail with the contract's ``unavailable`` (a backend is
    down), never ``internal``; once Redis is back, old and new rooms work again."""
    async with _one_of_each(tmp_path, redis=True).running() as topo:
        [port] = gateway_ports(topo)
        ana, bo = await _converse(port, port, "before")
        redis = topo.member("redis")
        await topo.kill(redis)
        frame = await ana.ack_or_error(await ana.send_text("while Redis is down"), seconds=15)
        assert frame["type"] == "error" and frame["code"] == "unavailable", frame
        status, body = await refused(port, "user=cy&room=during")  # no session store
        assert (status, body["error"]["code"]) == (503, "unavailable"), body
        await topo.restart(redis)  # on the same port and append-only file
        await _send_until_acked(ana, "Redis is back", 30)
        await bo.wait_for(lambda f: f["type"] == "message" and f["text"] == "Redis is back",
                          15)
        await ana.close()
        await bo.close()
        await _everything_works(port, "after-redis")
