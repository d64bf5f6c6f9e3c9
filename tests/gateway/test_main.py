"""Restarts, dependency faults and graceful drain, with every process real."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests import grpc_services
from tests.chat_client import ChatClient, refused, wait_status
from tests.gateway_support import SERVERS, Gateway, start_all, start_gateway, start_system
from tests.support import port_open, running

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.mark.parametrize("server", SERVERS)
async def test_restart_keeps_everything_and_since_resumes(tmp_path: Path, server: str) -> None:
    data = tmp_path / "data"
    with start_all(data, tmp_path, server) as system:
        alice = await ChatClient.connect(system.port, "alice", "lobby")
        bob = await ChatClient.connect(system.port, "bob", "lobby")
        acked = []
        for i in range(10):
            ref = await alice.send_text(f"before {i}")
            acked.append((await alice.ack_or_error(ref))["id"])
        upload = await alice.upload("notes.txt", b"kept across restarts", "text/plain")
        file_id = upload.json()["id"]
        await alice.send({"type": "file", "file_id": file_id, "ref": "f"})
        acked.append((await alice.ack_or_error("f"))["id"])
        seen = await bob.messages(5)
        resume_from = seen[-1]["id"]
        system.proc.signal(signal.SIGTERM)
        assert system.proc.wait(30) == 0
        with anyio.fail_after(5):
            await bob.ws.wait_closed()
        assert bob.ws.close_code == 1001  # going away: reconnect with since
    with start_all(data, tmp_path, server, system.port) as system:
        bob = await ChatClient.connect(system.port, "bob", "lobby", since=resume_from)
        history = bob.welcome["history"]
        assert [m["id"] for m in history] == acked[5:]  # no gap, no repeat
        assert [m.get("text") for m in history[:5]] == [f"before {i}" for i in range(5, 10)]
        assert history[-1]["kind"] == "file" and history[-1]["file"]["id"] == file_id
        download = await bob.download(history[-1]["file"]["url"])
        assert download.status_code == 200 and download.content == b"kept across restarts"
        fresh = await ChatClient.connect(system.port, "carol", "lobby")
        assert [m["id"] for m in fresh.welcome["history"]] == acked
        ref = await fresh.send_text("after restart")
        ack = await fresh.ack_or_error(ref)
        assert ack["type"] == "ack" and ack["id"] > acked[-1]
        live = await bob.wait_for(lambda f: f["type"] == "message")
        assert live["id"] == ack["id"]
        await bob.close()
        await fresh.close()


@pytest.mark.parametrize("server", SERVERS)
async def test_sigterm_drains_with_1001_and_exits_0(tmp_path: Path, server: str) -> None:
    with start_system(tmp_path, server, "--drain-timeout=1") as system:
        clients = [await ChatClient.connect(system.port, f"u{i}", "drain") for i in range(5)]
        started = time.monotonic()
        system.gateway.proc.signal(signal.SIGTERM)
        await wait_status(f"{system.gateway.base}/readyz", 503, 1)
        for client in clients:
            with anyio.fail_after(10):
                await client.ws.wait_closed()
            assert client.ws.close_code == 1001
        assert system.gateway.proc.wait(20) == 0
        assert time.monotonic() - started < 15


@pytest.mark.parametrize("server", SERVERS)
async def test_chat_down_is_unavailable_then_recovers(tmp_path: Path, server: str) -> None:
    with start_system(tmp_path, server) as system:
        alice = await ChatClient.connect(system.port, "alice", "fault")
        bob = await ChatClient.connect(system.port, "bob", "fault")
        ref = await alice.send_text("before the fault")
        first = (await alice.ack_or_error(ref))["id"]
        a_args = system.a.proc.args
        system.a.proc.signal(signal.SIGKILL)
        system.a.proc.wait(10)
        ref = await alice.send_text("while A is down")
        frame = await alice.ack_or_error(ref, seconds=10)
        assert frame["type"] == "error" and frame["code"] == "unavailable"
        await alice.send({"type": "ping", "ref": "still-open"})
        await alice.wait_for(lambda f: f["type"] == "pong")
        await wait_status(f"{system.gateway.base}/readyz", 503, 5)
        status, body = await refused(system.port, "user=carol&room=fault")
        assert status == 503 and body["error"]["code"] == "unavailable"
        # A comes back on the same port and data: the gateway reconnects by itself.
        with running(a_args, ready=lambda: port_open(system.a.port), log_dir=tmp_path):
            await wait_status(f"{system.gateway.base}/readyz", 200, 20)
            with anyio.fail_after(20):
                while True:
                    ref = await alice.send_text("after recovery")
                    frame = await alice.ack_or_error(ref, seconds=10)
                    if frame["type"] == "ack":
                        break
                    assert frame["code"] == "unavailable"
                    await anyio.sleep(0.2)
            live = await bob.wait_for(
                lambda f: f["type"] == "message" and f.get("text") == "after recovery", 15)
            assert live["id"] > first
            carol = await ChatClient.connect(system.port, "carol", "fault")
            assert [m["text"] for m in carol.welcome["history"]] == [
                "before the fault", "after recovery"]
            await carol.close()
        await alice.close()
        await bob.close()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("server", SERVERS)
async def test_workers_share_the_port_and_fan_out(tmp_path: Path, server: str) -> None:
    with start_system(tmp_path, server, "--workers=2") as system:
        assert len(_children(system.gateway.proc.pid)) == 2
        members = [await ChatClient.connect(system.port, f"w{i}", "workers") for i in range(12)]
        ref = await members[0].send_text("to every worker")
        ack = await members[0].ack_or_error(ref)
        assert ack["type"] == "ack"
        for member in members:
            got = await member.wait_for(lambda f: f["type"] == "message")
            assert got["id"] == ack["id"]
        for member in members:
            await member.close()
        system.gateway.proc.signal(signal.SIGTERM)
        assert system.gateway.proc.wait(30) == 0


def _stuck_client(port: int, room: str) -> socket.socket:
    """Completes the upgrade, then never reads again (a tiny receive buffer fills at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/chat?user=stuck&room={room} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    return sock


def _closes_1013(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    for line in text.splitlines():
        if line.startswith('chatsys_ws_closes_total{code="1013"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("server", SERVERS)
async def test_slow_consumer_is_closed_1013_and_stalls_nobody(tmp_path: Path,
                                                              server: str) -> None:
    # Healthy members never have more than one burst in flight (the sender: an ack and a
    # message per text), well under the bound, however slowly this machine runs them.
    burst = 20
    with start_system(tmp_path, server, f"--send-queue={3 * burst}", "--rate-limit=2000",
                      "--rate-burst=2000") as system:
        stuck = _stuck_client(system.port, "slow")
        try:
            sender = await ChatClient.connect(system.port, "sender", "slow")
            reader = await ChatClient.connect(system.port, "reader", "slow")
            with anyio.fail_after(60):
                sent = 0
                while _closes_1013(system.port) < 1:
                    refs = [await sender.send_text("z" * 3900) for _ in range(burst)]
                    for ref in refs:
                        assert (await sender.ack_or_error(ref, seconds=10))["type"] == "ack"
                    sent += len(refs)
                    assert len(await reader.messages(len(refs), seconds=10)) == len(refs)
            # Everyone else is served on: the flood went on and every message arrived.
            ref = await sender.send_text("after the slow consumer left")
            assert (await sender.ack_or_error(ref))["type"] == "ack"
            got = await reader.wait_for(lambda f: f.get("text") == "after the slow consumer left")
            assert got["type"] == "message" and sent >= burst
        finally:
            stuck.close()


async def test_files_down_is_503_and_chat_goes_on(tmp_path: Path) -> None:
    with start_system(tmp_path) as system:
        alice = await ChatClient.connect(system.port, "alice", "nofiles")
        system.b.proc.signal(signal.SIGKILL)
        system.b.proc.wait(10)
        reply = await alice.upload("a.txt", b"x", "text/plain")
        assert reply.status_code == 503 and reply.json()["error"]["code"] == "unavailable"
        await alice.send({"type": "file", "file_id": "a" * 32, "ref": "f"})
        frame = await alice.ack_or_error("f", seconds=10)
        assert frame["type"] == "error" and frame["code"] == "unavailable"
        ref = await alice.send_text("text still works")
        assert (await alice.ack_or_error(ref))["type"] == "ack"
        await wait_status(f"{system.gateway.base}/readyz", 503, 5)
        await alice.close()


async def _metric(port: int, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` with ``labels`` on a /metrics at ``port``."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


async def _stage_count(gateway: Gateway, stage: str) -> float:
    return await _metric(gateway.port, "chatsys_ws_connect_stage_seconds_count", stage=stage)


async def _wait_metric(port: int, name: str, value: float, seconds: float = 15,
                       **labels: str) -> None:
    with anyio.fail_after(seconds):
        while True:
            if await _metric(port, name, **labels) == value:
                return
            await anyio.sleep(0.05)


@contextlib.contextmanager
def _users_apart(tmp: Path) -> Iterator[tuple[grpc_services.Service, grpc_services.Service,
                                             Gateway]]:
    """UserService and ChatService in processes of their own, so one fails without the other."""
    data = tmp / "data"
    data.mkdir()
    with grpc_services.start(["users"], data) as users, \
            grpc_services.start(["chat"], data) as chat, \
            grpc_services.start(["files"], data) as files, \
            start_gateway(chat.port, files.port, tmp, "granian",
                          f"--users-addr=127.0.0.1:{users.port}") as gateway:
        yield users, chat, gateway


async def test_a_failed_session_leaves_no_member_in_the_room(tmp_path: Path) -> None:
    """The room is joined while CreateSession is under way: a session that fails (UserService
    frozen: the call's deadline passes) takes the joined connection out of the room again."""
    with _users_apart(tmp_path) as (users, _chat, gateway):
        joined, sessions = (await _stage_count(gateway, "room_join"),
                            await _stage_count(gateway, "session"))
        users.proc.signal(signal.SIGSTOP)
        try:
            status, body = await refused(gateway.port, "user=alice&room=nosession")
        finally:
            users.proc.signal(signal.SIGCONT)
        assert status == 503 and body["error"]["code"] == "unavailable"
        assert await _stage_count(gateway, "room_join") == joined + 1  # the join got through
        assert await _stage_count(gateway, "session") == sessions
        # No member left: the room is abandoned and its subscription to A ends.
        await _wait_metric(gateway.port, "chatsys_room_subscriptions", 0)
        alice = await ChatClient.connect(gateway.port, "alice", "nosession", seconds=20)
        await alice.close()


async def test_a_failed_join_ends_the_session_it_created(tmp_path: Path) -> None:
    with _users_apart(tmp_path) as (users, chat, gateway):
        ended = await _metric(users.metrics_port, "grpc_server_handled_total",
                              grpc_method="EndSessions")
        chat.proc.signal(signal.SIGKILL)
        chat.proc.wait(10)
        status, body = await refused(gateway.port, "user=alice&room=nochat")
        assert status == 503 and body["error"]["code"] == "unavailable"
        await _wait_metric(users.metrics_port, "grpc_server_handled_total", ended + 1,
                           grpc_method="EndSessions")
        await _wait_metric(gateway.port, "chatsys_room_subscriptions", 0)


async def _join(port: int, user: str, room: str, outcomes: list[str | int]) -> None:
    """Join and leave again; the outcome is "welcome" or the refusal's HTTP status."""
    try:
        client = await ChatClient.connect(port, user, room, seconds=60)
    except websockets.InvalidStatus as exc:
        outcomes.append(exc.response.status_code)
        return
    outcomes.append("welcome")
    await client.close()


async def test_joins_beyond_the_pending_bound_are_refused_before_a(tmp_path: Path) -> None:
    """With A frozen, a first join waits on it; a second one, over --max-pending-joins=1, is
    refused at once without a call to A; once A runs again the first ends and joins go on."""
    with start_system(tmp_path, "granian", "--max-pending-joins=1",
                      "--grpc-timeout=20") as system:
        gateway = system.gateway
        admitted = await _stage_count(gateway, "validate")
        first: list[str | int] = []
        system.a.proc.signal(signal.SIGSTOP)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_join, system.port, "first", "storm", first)
                # Validated, so counted as pending until it is accepted.
                await _wait_metric(gateway.port, "chatsys_ws_connect_stage_seconds_count",
                                   admitted + 1, stage="validate")
                status, body = await refused(system.port, "user=second&room=storm")
                assert status == 503 and body["error"] == {
                    "code": "unavailable", "message": "too many joins in progress, retry"}
                assert await _metric(gateway.port, "chatsys_ws_refused_total",
                                     reason="max_pending_joins") == 1
                system.a.proc.signal(signal.SIGCONT)
        finally:
            system.a.proc.signal(signal.SIGCONT)
        assert first in (["welcome"], [503])
        third = await ChatClient.connect(system.port, "third", "storm", seconds=20)
        await third.close()


async def test_a_join_storm_reaches_a_in_batches(tmp_path: Path) -> None:
    """Joins that arrive while A is busy queue at the gateway and reach A together: fewer
    CreateSessions calls than joins, and every join is welcomed once A answers."""
    joins = 10
    with start_system(tmp_path, "granian", "--grpc-timeout=20") as system:
        gateway = system.gateway
        admitted = await _stage_count(gateway, "validate")
        batches = await _metric(gateway.port, "chatsys_gateway_batch_size_count",
                                method="CreateSessions")
        sessions = await _metric(gateway.port, "chatsys_gateway_batch_size_sum",
                                 method="CreateSessions")
        outcomes: list[str | int] = []
        system.a.proc.signal(signal.SIGSTOP)  # the storm finds A busy
        try:
            async with anyio.create_task_group() as tg:
                for i in range(joins):
                    tg.start_soon(_join, system.port, f"u{i}", "storm", outcomes)
                await _wait_metric(gateway.port, "chatsys_ws_connect_stage_seconds_count",
                                   admitted + joins, stage="validate")
                system.a.proc.signal(signal.SIGCONT)
        finally:
            system.a.proc.signal(signal.SIGCONT)
        assert outcomes == ["welcome"] * joins
        assert await _metric(gateway.port, "chatsys_gateway_batch_size_sum",
                             method="CreateSessions") == sessions + joins
        # Two lanes: the first two joins went alone; the rest waited together for one.
        assert await _metric(gateway.port, "chatsys_gateway_batch_size_count",
                             method="CreateSessions") - batches < joins
