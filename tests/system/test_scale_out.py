"""Scale-out end to end: Redis, two A replicas, two B replicas on one shared directory, and two
gateways that each balance over both replicas of A and of B — all real processes.

- clients on different gateways chat in one room, both ways, and 100 messages spread over
  both A replicas (their own ``grpc_server_handled_total`` says so);
- files uploaded through one gateway download through the other;
- SIGKILL of one A replica mid-conversation: a few sends at most get ``unavailable``, the
  same WebSockets keep working, and every acknowledged message reaches every member exactly
  once, in one order.

Every process is started, signalled, killed, restarted on its ports and stopped by
:mod:`chatsys.runtime.topology`, as ``chatsys all``, the lab and chaos run them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection

from chatsys.runtime.topology import Member as TopologyMember
from chatsys.runtime.topology import Topology
from chatsys.stubs.chatsys.chat.v1 import (
    AppendRequest,
    ChatServiceStub,
    HistoryRequest,
    SubscribeRequest,
)
from tests.chat_client import ChatClient
from tests.redis_support import RedisServer, flush_db
from tests.support import unused_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
SCALE_DB = 2  # the contract suite empties database 1 of the same server


def start_topology(tmp: Path, redis: RedisServer, *gateway_extra: str,
                   gateways: int = 2) -> contextlib.AbstractAsyncContextManager[Topology]:
    """Two A replicas on ``redis`` (database SCALE_DB, emptied), two B replicas on one
    directory, and ``gateways`` gateways balancing over all of them; every process stopped
    on exit, even when the start fails."""
    flush_db(redis.port, SCALE_DB)
    return Topology(tmp, gateways=gateways, a_replicas=2, b_replicas=2,
                    store=redis.url(SCALE_DB), data_dir=tmp / "shared-files",
                    gateway_flags=["--drain-timeout=0.2", "--grpc-timeout=5",
                                   "--rate-limit=1000", "--rate-burst=1000",
                                   *gateway_extra]).running()


def gateway_ports(topology: Topology) -> list[int]:
    return [m.port for m in topology.members_of("P")]


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def scrape(port: int, path: str = "/metrics") -> str:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).text


class Member:
    """A chat client whose frames are all read by one task, for tests that send and receive
    at once: acks, errors and messages land in their own lists, in arrival order."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.ws: ClientConnection = client.ws
        self.messages: list[dict[str, Any]] = list(client.welcome["history"])
        self.acks: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, dict[str, Any]] = {}
        self.closed: int | None = None
        self.changed = anyio.Event()

    async def read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "message":
                self.messages.append(frame)
            elif kind == "ack":
                self.acks[frame["ref"]] = frame
            elif kind == "error":
                self.errors[str(frame.get("ref"))] = frame
            self.changed.set()
            self.changed = anyio.Event()
        self.closed = self.ws.close_code

    async def wait(self, done: Any, seconds: float) -> None:
        """Until ``done()`` is true, re-checked after every frame."""
        with anyio.fail_after(seconds):
            while not done():
                await self.changed.wait()

    def ids(self) -> list[str]:
        return [m["id"] for m in self.messages]



@pytest.fixture
async def topology(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Topology]:
    async with start_topology(tmp_path, redis_server) as topo:
        yield topo


async def _members(topo: Topology, room: str, users: list[tuple[str, int]]) -> list[Member]:
    ports = gateway_ports(topo)
    return [Member(await ChatClient.connect(ports[g], user, room)) for user, g in users]


async def test_chat_across_gateways_and_a_replicas(topology: Topology) -> None:
    ana, bo = await _members(topology, "scale", [("ana", 0), ("bo", 1)])
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ana.read)
            tg.start_soon(bo.read)
            # Both ways, one message each, seen by both.
            await ana.client.send({"type": "text", "text": "hi from gw1", "ref": "a0"})
            await bo.wait(lambda: bo.messages, 15)
            await bo.client.send({"type": "text", "text": "hi from gw2", "ref": "b0"})
            await ana.wait(lambda: len(ana.messages) == 2, 15)
            assert [m["text"] for m in ana.messages] == ["hi from gw1", "hi from gw2"]
            before = [metric(scrape(a.metrics_port), "chatsys_messages_stored_total")
                      for a in topology.members_of("A")]
            # 100 more, from both gateways at once.
            for i in range(50):
                await ana.client.send({"type": "text", "text": f"a{i}", "ref": f"a{i + 1}"})
                await bo.client.send({"type": "text", "text": f"b{i}", "ref": f"b{i + 1}"})
            for member in (ana, bo):
                await member.wait(lambda m=member: len(m.messages) == 102, 30)
            await ana.wait(lambda: len(ana.acks) == 51, 15)
            await bo.wait(lambda: len(bo.acks) == 51, 15)
            tg.cancel_scope.cancel()
    assert not ana.errors and not bo.errors
    assert ana.ids() == bo.ids() == sorted(ana.ids()) and len(set(ana.ids())) == 102
    after = [metric(scrape(a.metrics_port), "chatsys_messages_stored_total")
             for a in topology.members_of("A")]
    spread = [x - y for x, y in zip(after, before, strict=True)]
    assert sum(spread) == 100 and min(spread) >= 25, spread  # round robin: about 50 each
    # Each gateway saw both A endpoints and counts its calls per endpoint.
    for port in gateway_ports(topology):
        text = scrape(port)
        for a in topology.members_of("A"):
            assert metric(text, "chatsys_grpc_client_calls_total", service="chat",
                          endpoint=f"127.0.0.1:{a.port}") > 0
    await ana.client.close()
    await bo.client.close()


async def test_files_cross_gateways_and_b_replicas(topology: Topology) -> None:
    ana = await ChatClient.connect(gateway_ports(topology)[0], "ana", "files")
    bo = await ChatClient.connect(gateway_ports(topology)[1], "bo", "files")
    blobs = [os.urandom(10_240 + i) for i in range(6)]
    with anyio.fail_after(60):
        for i, blob in enumerate(blobs):
            up = await ana.upload(f"f{i}.bin", blob, "application/octet-stream")
            assert up.status_code == 201, up.text
            down = await bo.download(up.json()["url"])
            assert down.status_code == 200 and down.content == blob
    uploads = [metric(scrape(b.metrics_port), "grpc_server_handled_total",
                      grpc_method="Upload", grpc_code="OK") for b in topology.members_of("B")]
    assert min(uploads) >= 2, uploads  # both B replicas took uploads
    await ana.close()
    await bo.close()


async def test_killing_an_a_replica_mid_conversation(topology: Topology) -> None:
    members = await _members(topology, "failover", [("ana", 0), ("bo", 1), ("cy", 0), ("di", 1)])
    senders = members[:2]
    per_sender, kill_at = 150, 50
    killed = anyio.Event()
    # Kill the replica that holds the most of the gateways' room subscriptions (streams still
    # open: started but not handled), so the subscription failover is what gets tested.
    streams = [open_streams(a) for a in topology.members_of("A")]
    victim = topology.members_of("A")[streams.index(max(streams))]
    assert max(streams) >= 1, streams

    async def send(member: Member, tag: str) -> None:
        for i in range(per_sender):
            await member.client.send({"type": "text", "text": f"{tag}{i}", "ref": f"{tag}{i}"})
            if i == kill_at and tag == "a":
                await topology.kill(victim)
                killed.set()
            await anyio.sleep(0.02)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for member in members:
                tg.start_soon(member.read)
            async with anyio.create_task_group() as sending:
                sending.start_soon(send, senders[0], "a")
                sending.start_soon(send, senders[1], "b")
            for member in senders:
                await member.wait(lambda m=member: len(m.acks) + len(m.errors) == per_sender, 60)
            acked = {a["id"] for m in senders for a in m.acks.values()}
            for member in members:
                await member.wait(lambda m=member: acked <= set(m.ids()), 60)
            tg.cancel_scope.cancel()
    assert killed.is_set()
    errors = [e for m in senders for e in m.errors.values()]
    assert {e["code"] for e in errors} <= {"unavailable"}, errors
    assert len(errors) <= 10, errors  # only what was in flight on the killed replica
    assert len(acked) >= 2 * per_sender - 10
    for member in members:
        ids = member.ids()
        assert member.closed is None  # the same WebSocket, still open
        assert len(ids) == len(set(ids)), "a message was delivered twice"
        assert ids == sorted(ids), "messages out of order"
        assert acked <= set(ids)
    assert members[0].ids() == members[1].ids() == members[2].ids() == members[3].ids()
    ejections = sum(metric(scrape(port), "chatsys_grpc_client_ejections_total", service="chat",
                           endpoint=f"127.0.0.1:{victim.port}")
                    for port in gateway_ports(topology))
    assert ejections >= 1
    resubscribed = sum(metric(scrape(port), "chatsys_room_resubscribes_total")
                       for port in gateway_ports(topology))
    assert resubscribed >= 1  # the room's stream really moved to the surviving replica
    for member in members:
        await member.client.close()


def open_streams(replica: TopologyMember) -> float:
    """Subscribe streams a replica has started and not yet ended."""
    text = scrape(replica.metrics_port)
    return (metric(text, "grpc_server_started_total", grpc_method="Subscribe")
            - metric(text, "grpc_server_handled_total", grpc_method="Subscribe"))


async def test_a_frozen_replica_is_left_by_keepalive(tmp_path: Path,
                                                     redis_server: RedisServer) -> None:
    """SIGSTOP, unlike SIGKILL, leaves the TCP connection open and silent (as a lost node
    does): only the gateway's HTTP/2 keepalive notices, and the room's stream moves on."""
    async with start_topology(tmp_path, redis_server, "--grpc-keepalive=0.5", "--grpc-timeout=2",
                              gateways=1) as topo:
        members = [Member(await ChatClient.connect(gateway_ports(topo)[0], name, "frozen"))
                   for name in ("ana", "bo")]
        victim = max(topo.members_of("A"), key=open_streams)
        assert open_streams(victim) >= 1
        victim.signal(signal.SIGSTOP)
        try:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for member in members:
                        tg.start_soon(member.read)
                    sender = members[0]
                    acked: list[str] = []
                    for i in range(10):  # sends that reach the frozen replica time out
                        ref = f"f{i}"
                        await sender.client.send({"type": "text", "text": ref, "ref": ref})
                        await sender.wait(lambda r=ref: r in sender.acks or r in sender.errors,
                                          10)
                        if ref in sender.acks:
                            acked.append(sender.acks[ref]["id"])
                    assert len(acked) >= 5, sender.errors
                    for member in members:
                        await member.wait(lambda m=member: set(acked) <= set(m.ids()), 20)
                    tg.cancel_scope.cancel()
        finally:
            victim.signal(signal.SIGCONT)
    assert {e["code"] for e in sender.errors.values()} <= {"unavailable"}
    for member in members:
        assert member.closed is None and member.ids() == sorted(set(member.ids()))
        await member.client.close()


def test_a_without_redis_exits_with_a_clear_error(tmp_path: Path) -> None:
    port = unused_port()  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "chatsys", "users", "chat", f"--store=redis://127.0.0.1:{port}/0",
         "--host=127.0.0.1", "--port=0", "--metrics-port=0", f"--data-dir={tmp_path}"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot reach Redis" in result.stderr + result.stdout


async def test_redis_killed_and_restarted_loses_no_ack(tmp_path: Path) -> None:
    """SIGKILL of Redis itself: what was acknowledged is still there after its restart (AOF,
    appendfsync always), and a live subscription on A carries on from where it was."""
    async with Topology(tmp_path, redis=True).running() as topology:
        redis = topology.member("redis")
        ch = Channel("127.0.0.1", topology.member("A-0").port)
        chat = ChatServiceStub(ch)
        got: list[str] = []
        seen = anyio.Event()

        async def follow() -> None:
            nonlocal seen
            async for event in chat.subscribe(SubscribeRequest(room="phoenix")):
                if event.message is not None and event.message.text:
                    got.append(event.message.text)
                    seen.set()
                    seen = anyio.Event()

        async def append(text: str) -> str:
            reply = await chat.append(AppendRequest(room="phoenix", user="ana", text=text),
                                      timeout=10)
            assert reply.message is not None
            return reply.message.id

        try:
            with anyio.fail_after(90):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(follow)
                    while not got:  # the subscription is live once a message comes through
                        await append("before")
                        with anyio.move_on_after(1):
                            await seen.wait()
                    acked = [await append(f"acked{i}") for i in range(5)]
                    await topology.kill(redis)
                    await topology.restart(redis)  # on its port and append-only file
                    later = await _append_until_up(append, "after")
                    history = await chat.history(HistoryRequest(room="phoenix"), timeout=10)
                    while "after" not in got:
                        await seen.wait()
                    tg.cancel_scope.cancel()
        finally:
            ch.close()
    kept = [m.id for m in history.messages]
    assert set(acked) <= set(kept) and later in kept
    assert got[-6:] == [f"acked{i}" for i in range(5)] + ["after"]


async def _append_until_up(append: Any, text: str) -> str:
    """A's first appends fail while Redis restarts; retry (a refused append stores nothing)."""
    while True:
        try:
            return str(await append(text))
        except GRPCError:
            await anyio.sleep(0.2)
