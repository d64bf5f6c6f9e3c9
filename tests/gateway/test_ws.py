"""The WebSocket and HTTP contract, end to end through real P, A and B, on both servers."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator

import anyio
import httpx
import pytest

from tests.chat_client import ChatClient, refused
from tests.gateway_support import SERVERS, System, start_system

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
RATE_BURST = 100  # per connection, more than any other test here sends on one socket


@pytest.fixture(scope="module", params=SERVERS)
def system(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp(f"chat-{request.param}")
    # One token per 10,000 s: no token comes back within a test, so a connection gets exactly
    # RATE_BURST text/file frames through, however fast or slow the machine is.
    with start_system(tmp, request.param, "--rate-limit=0.0001", f"--rate-burst={RATE_BURST}",
                      "--garbage-limit=6", "--max-text-chars=100",
                      "--max-frame-bytes=4096") as system:
        yield system


def room_name(request: pytest.FixtureRequest) -> str:
    """A fresh room per test (rooms accept only letters, digits, '_' and '-')."""
    return "".join(c if c.isalnum() else "-" for c in request.node.name)[-60:]


async def test_join_welcome_and_history(system: System, request: pytest.FixtureRequest) -> None:
    room = room_name(request)
    alice = await ChatClient.connect(system.port, "alice", room)
    assert alice.welcome["user"] == "alice" and alice.welcome["room"] == room
    assert alice.welcome["history"] == []
    assert len(alice.token) >= 22 and alice.session
    refs = [await alice.send_text(f"m{i}") for i in range(55)]
    for ref in refs:
        assert (await alice.ack_or_error(ref))["type"] == "ack"
    bob = await ChatClient.connect(system.port, "Bøb O'Neil".replace("'", ""), room)
    history = bob.welcome["history"]
    assert [m["text"] for m in history] == [f"m{i}" for i in range(5, 55)]
    assert all(m["kind"] == "text" and m["user"] == "alice" for m in history)
    assert [m["id"] for m in history] == sorted(m["id"] for m in history)
    await alice.close()
    await bob.close()


async def test_text_fan_out_in_order_to_every_member(system: System,
                                                     request: pytest.FixtureRequest) -> None:
    room = room_name(request)
    members = [await ChatClient.connect(system.port, f"user{i}", room) for i in range(4)]
    senders = members[:2]
    sent: dict[str, str] = {}
    for i in range(20):
        for s, client in enumerate(senders):
            text = f"{s}-{i}"
            ref = await client.send_text(text)
            sent[ref + client.session] = text
    acks = {}
    for client in senders:
        for i in range(1, 21):
            ref = f"r{i}"
            frame = await client.ack_or_error(ref)
            assert frame["type"] == "ack", frame
            acks[frame["id"]] = frame
    expected = sorted(acks)
    for client in members:
        got = await client.messages(40)
        assert [m["id"] for m in got] == expected  # one order per room, every message, once
        for m in got:
            assert m["room"] == room and m["kind"] == "text" and m["ts"] == acks[m["id"]]["ts"]
    # Each sender's own messages arrive in the order it sent them.
    for s, client in enumerate(senders):
        mine = [m["text"] for m in members[3].frames
                if m["type"] == "message" and m["session"] == client.session]
        assert mine == [f"{s}-{i}" for i in range(20)]
    for client in members:
        await client.close()


async def test_presence_join_and_leave(system: System, request: pytest.FixtureRequest) -> None:
    room = room_name(request)
    alice = await ChatClient.connect(system.port, "alice", room)
    bob = await ChatClient.connect(system.port, "bob", room)
    joined = await alice.wait_for(lambda f: f["type"] == "presence" and f["user"] == "bob")
    assert joined["event"] == "join" and joined["session"] == bob.session
    await bob.close()
    left = await alice.wait_for(lambda f: f["type"] == "presence" and f["event"] == "leave")
    assert left["user"] == "bob" and left["room"] == room
    await alice.close()


async def test_a_client_that_vanishes_leaves_the_room(system: System,
                                                      request: pytest.FixtureRequest) -> None:
    """No close frame, only a dropped TCP connection: the gateway's own reader sees the
    disconnect and ends the session (the room hears the leave), and counts no close of its own."""
    room = room_name(request)
    alice = await ChatClient.connect(system.port, "alice", room)
    bob = await ChatClient.connect(system.port, "bob", room)
    await alice.wait_for(lambda f: f["type"] == "presence" and f["user"] == "bob")
    bob.ws.transport.abort()
    left = await alice.wait_for(lambda f: f["type"] == "presence" and f["event"] == "leave")
    assert left["user"] == "bob" and left["session"] == bob.session
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.port}") as client:
        text = (await client.get("/metrics")).text
    assert 'chatsys_ws_closes_total{code="1006"}' not in text
    await alice.close()


async def test_ping_pong(system: System, request: pytest.FixtureRequest) -> None:
    alice = await ChatClient.connect(system.port, "alice", room_name(request))
    await alice.send({"type": "ping", "ref": "p1"})
    assert await alice.wait_for(lambda f: f["type"] == "pong") == {"type": "pong", "ref": "p1"}
    await alice.close()


async def test_file_two_step_flow(system: System, request: pytest.FixtureRequest) -> None:
    room = room_name(request)
    alice = await ChatClient.connect(system.port, "alice", room)
    bob = await ChatClient.connect(system.port, "bob", room)
    data = bytes(range(256)) * 400 + b"tail"
    reply = await alice.upload("report ünïcode.pdf", data)
    assert reply.status_code == 201, reply.text
    info = reply.json()
    assert info["size"] == len(data) and info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["name"] == "report ünïcode.pdf" and info["content_type"] == "application/pdf"
    assert info["url"] == f"/api/files/{info['id']}"
    await alice.send({"type": "file", "file_id": info["id"], "ref": "f1"})
    assert (await alice.ack_or_error("f1"))["type"] == "ack"
    message = await bob.wait_for(lambda f: f["type"] == "message")
    assert message["kind"] == "file" and "text" not in message
    assert message["file"] == {"id": info["id"], "name": info["name"], "size": len(data),
                               "content_type": "application/pdf", "url": info["url"]}
    download = await bob.download(message["file"]["url"])
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-length"] == str(len(data))
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment;") and "UTF-8''report%20%C3%BCn" in disposition
    await alice.close()
    await bob.close()


async def test_bad_frames_get_bad_request_and_connection_survives(
        system: System, request: pytest.FixtureRequest) -> None:
    alice = await ChatClient.connect(system.port, "alice", room_name(request))
    for bad in ["not json", json.dumps([1, 2]), json.dumps({"type": "shout", "ref": "a"}),
                json.dumps({"type": "text", "ref": "b"}), json.dumps({"text": "x", "ref": "c"})]:
        await alice.send(bad)
        frame = await alice.wait_for(lambda f: f["type"] == "error")
        assert frame["code"] == "bad_request" and frame["message"]
    assert frame["ref"] == "c"
    ref = await alice.send_text("still here")
    assert (await alice.ack_or_error(ref))["type"] == "ack"
    await alice.close()


async def test_too_long_text_is_too_large(system: System, request: pytest.FixtureRequest) -> None:
    alice = await ChatClient.connect(system.port, "alice", room_name(request))
    ref = await alice.send_text("x" * 101)
    frame = await alice.ack_or_error(ref)
    assert frame["type"] == "error" and frame["code"] == "too_large" and frame["ref"] == ref
    await alice.close()


async def test_rate_limited_keeps_connection(system: System,
                                             request: pytest.FixtureRequest) -> None:
    """A flood sent at once: the gateway takes the frames up one by one, each charged when it is
    read (docs/protocol.md, "Rate limit"); with no refill during the test, exactly the burst is
    stored and every frame beyond it is refused, in order, on a connection that stays open."""
    room = room_name(request)
    alice = await ChatClient.connect(system.port, "alice", room)
    extra = 30
    refs = [await alice.send_text(f"flood {i}") for i in range(RATE_BURST + extra)]
    results = [await alice.ack_or_error(ref, seconds=20) for ref in refs]
    assert [f["type"] for f in results] == ["ack"] * RATE_BURST + ["error"] * extra
    assert {f["code"] for f in results[RATE_BURST:]} == {"rate_limited"}
    # Pings are not charged, and the socket still answers.
    await alice.send({"type": "ping", "ref": "alive"})
    await alice.wait_for(lambda f: f["type"] == "pong")
    # The refused frames were not stored: the room's history ends with the last accepted one.
    bob = await ChatClient.connect(system.port, "bob", room)
    assert bob.welcome["history"][-1]["text"] == f"flood {RATE_BURST - 1}"
    assert bob.welcome["history"][-1]["id"] == results[RATE_BURST - 1]["id"]
    await alice.close()
    await bob.close()


async def test_unknown_file_is_not_found(system: System, request: pytest.FixtureRequest) -> None:
    alice = await ChatClient.connect(system.port, "alice", room_name(request))
    await alice.send({"type": "file", "file_id": "0" * 32, "ref": "nf"})
    frame = await alice.ack_or_error("nf")
    assert frame["type"] == "error" and frame["code"] == "not_found"
    await alice.close()


async def test_file_of_another_room_cannot_be_announced(system: System,
                                                        request: pytest.FixtureRequest) -> None:
    room = room_name(request)
    alice = await ChatClient.connect(system.port, "alice", room)
    mallory = await ChatClient.connect(system.port, "mallory", room[:50] + "-other")
    info = (await alice.upload("a.txt", b"secret", "text/plain")).json()
    await mallory.send({"type": "file", "file_id": info["id"], "ref": "x"})
    frame = await mallory.ack_or_error("x")
    assert frame["type"] == "error" and frame["code"] == "not_found"
    await alice.close()
    await mallory.close()


async def test_frame_too_big_closes_1009(system: System, request: pytest.FixtureRequest) -> None:
    alice = await ChatClient.connect(system.port, "alice", room_name(request))
    await alice.send(json.dumps({"type": "text", "text": "y" * 5000, "ref": "big"}))
    with anyio.fail_after(5):
        await alice.ws.wait_closed()
    assert alice.ws.close_code == 1009


async def test_repeated_garbage_closes_1008(system: System,
                                            request: pytest.FixtureRequest) -> None:
    alice = await ChatClient.connect(system.port, "alice", room_name(request))
    for _ in range(6):
        await alice.send("garbage")
    with anyio.fail_after(5):
        await alice.ws.wait_closed()
    assert alice.ws.close_code == 1008


async def test_texts_over_the_limit_are_refused_not_garbage(
        system: System, request: pytest.FixtureRequest) -> None:
    """A well-formed text over --max-text-chars (100 here) is refused with too_large every
    time and never counts towards the garbage limit (6 here): the socket stays open."""
    alice = await ChatClient.connect(system.port, "alice", room_name(request))
    refs = [await alice.send_text("x" * 101) for _ in range(3 * 6)]
    for ref in refs:
        frame = await alice.ack_or_error(ref)
        assert (frame["type"], frame["code"]) == ("error", "too_large"), frame
    # A run of garbage is counted afresh after a well-formed frame, too long or not.
    for _ in range(5):
        await alice.send("garbage")
    await alice.send_text("y" * 101)
    await alice.send({"type": "ping", "ref": "alive"})
    await alice.wait_for(lambda f: f["type"] == "pong")
    assert alice.ws.close_code is None
    await alice.close()


@pytest.mark.parametrize("query", [
    "user=&room=lobby", "user=%20%20&room=lobby", "user=" + "a" * 33 + "&room=lobby",
    "user=al%3Cscript%3E&room=lobby", "user=alice&room=", "user=alice&room=no%20spaces",
    "user=alice&room=" + "r" * 65, "room=lobby", "user=alice", "user=alice&room=l&since=abc",
])
async def test_invalid_join_is_400_with_json(system: System, query: str) -> None:
    status, body = await refused(system.port, query)
    assert status == 400
    assert body["error"]["code"] == "bad_request" and body["error"]["message"]


async def test_upload_tokens(system: System, request: pytest.FixtureRequest) -> None:
    room = room_name(request)
    alice = await ChatClient.connect(system.port, "alice", room)
    other = await ChatClient.connect(system.port, "eve", room[:50] + "-b")
    async with httpx.AsyncClient() as client:
        url = f"http://127.0.0.1:{system.port}/api/files"
        files = {"file": ("a.txt", b"abc", "text/plain")}
        missing = await client.post(url, params={"room": room}, files=files)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        forged = await client.post(url, params={"room": room}, files=files,
                                   headers={"Authorization": "Bearer " + "A" * 43})
        assert forged.status_code == 401
    cross = await other.upload("a.txt", b"abc", room=room)
    assert cross.status_code == 403 and cross.json()["error"]["code"] == "forbidden"
    ok = await alice.upload("a.txt", b"abc", "text/plain")
    assert ok.status_code == 201
    theirs = await other.download(ok.json()["url"])
    assert theirs.status_code == 403
    nobody = await alice.download(ok.json()["url"], token="forged")
    assert nobody.status_code == 401
    missing_file = await alice.download("/api/files/" + "f" * 32)
    assert missing_file.status_code == 404 and missing_file.json()["error"]["code"] == "not_found"
    await alice.close()
    await other.close()


async def test_bad_uploads(system: System, request: pytest.FixtureRequest) -> None:
    alice = await ChatClient.connect(system.port, "alice", room_name(request))
    async with httpx.AsyncClient() as client:
        url = f"http://127.0.0.1:{system.port}/api/files"
        auth = {"Authorization": f"Bearer {alice.token}"}
        not_multipart = await client.post(url, params={"room": alice.room}, headers=auth,
                                          content=b"raw")
        assert not_multipart.status_code == 400
        no_field = await client.post(url, params={"room": alice.room}, headers=auth,
                                     files={"other": ("a", b"x")})
        assert no_field.status_code == 400
        bad_room = await client.post(url, params={"room": "b a d"}, headers=auth,
                                     files={"file": ("a", b"x")})
        assert bad_room.status_code == 400
    await alice.close()


async def test_health_ready_and_metrics(system: System, request: pytest.FixtureRequest) -> None:
    alice = await ChatClient.connect(system.port, "alice", room_name(request))
    ref = await alice.send_text("count me")
    await alice.ack_or_error(ref)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        page = await client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        text = metrics.text
    await alice.close()
    for name in ["chatsys_ws_connections", "chatsys_ws_connect_seconds_bucket",
                 'chatsys_messages_total{kind="text"}', "chatsys_message_ack_seconds_bucket",
                 "chatsys_fanout_deliveries_total", "chatsys_http_request_seconds_bucket",
                 "process_cpu_seconds_total", "grpc_client_started_total",
                 'grpc_client_handled_total{grpc_code="OK",grpc_method="AppendBatch",'
                 'grpc_service="chatsys.chat.v1.ChatService",grpc_type="unary"}',
                 "grpc_client_handling_seconds_bucket",
                 'chatsys_gateway_batch_size_bucket{le="1.0",method="AppendBatch"}']:
        assert name in text, name
    assert 'route="/readyz"' in text
    batches = re.search(r'^chatsys_gateway_batch_size_count\{method="AppendBatch"\} (\S+)$',
                        text, re.M)
    assert batches is not None and float(batches[1]) >= 1  # the message above went in a batch
    # The event loop's live tasks: at least the server's, the hub's and the append lanes'.
    tasks = re.search(r"^chatsys_asyncio_tasks (\S+)$", text, re.M)
    assert tasks is not None and float(tasks[1]) >= 3


async def test_oversized_uploads_are_413(system: System, request: pytest.FixtureRequest) -> None:
    alice = await ChatClient.connect(system.port, "alice", room_name(request))
    eleven_mib = b"\0" * (11 * 1024 * 1024)
    declared = await alice.upload("big.bin", eleven_mib)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "too_large"

    async def chunked():  # no Content-Length: the gateway must count the bytes itself
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="b"\r\n\r\n'
        for _ in range(11 * 16):
            yield b"\1" * 65536
        yield b"\r\n--xyz--\r\n"

    async with httpx.AsyncClient(timeout=30) as client:
        streamed = await client.post(
            f"http://127.0.0.1:{system.port}/api/files", params={"room": alice.room},
            headers={"Authorization": f"Bearer {alice.token}",
                     "Content-Type": "multipart/form-data; boundary=xyz"},
            content=chunked())
    assert streamed.status_code == 413
    ref = await alice.send_text("still fine")
    assert (await alice.ack_or_error(ref))["type"] == "ack"
    await alice.close()


async def test_hundreds_of_rooms_on_one_gateway(system: System,
                                                request: pytest.FixtureRequest) -> None:
    """Each room is a Subscribe stream to A: far more rooms than HTTP/2's customary 100
    concurrent streams still each get their own messages, and unary calls still get through."""
    base = room_name(request)[:40]
    rooms = 150
    members = []
    with anyio.fail_after(60):
        for i in range(rooms):
            members.append(await ChatClient.connect(system.port, f"u{i}", f"{base}-{i}"))
        refs = [await member.send_text(f"in room {i}") for i, member in enumerate(members)]
        for i, (member, ref) in enumerate(zip(members, refs, strict=True)):
            assert (await member.ack_or_error(ref))["type"] == "ack"
            got = await member.wait_for(lambda f: f["type"] == "message", seconds=15)
            assert got["text"] == f"in room {i}" and got["room"] == f"{base}-{i}"
    for member in members:
        await member.close()


def _stage_counts(text: str) -> dict[str, float]:
    found = re.findall(r'^chatsys_ws_connect_stage_seconds_count\{stage="(\w+)"\} (\S+)$', text,
                       re.M)
    return {stage: float(count) for stage, count in found}


async def test_every_stage_of_a_join_and_a_resume_is_timed(
        system: System, request: pytest.FixtureRequest) -> None:
    room = room_name(request)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.port}") as http:
        before = _stage_counts((await http.get("/metrics")).text)
        alice = await ChatClient.connect(system.port, "alice", room)
        ack = await alice.ack_or_error(await alice.send_text("before bob"))
        bob = await ChatClient.connect(system.port, "bob", room, since=ack["id"])
        for client in (alice, bob):
            # The reader starts once the presence was published: the join's last stage.
            await client.send({"type": "ping", "ref": "joined"})
            await client.wait_for(lambda f: f["type"] == "pong")
        after = _stage_counts((await http.get("/metrics")).text)
    await alice.close()
    await bob.close()
    grown = {stage: after[stage] - before.get(stage, 0) for stage in after}
    assert grown == {"validate": 2, "session": 2, "room_join": 2, "history": 1, "accept": 2,
                     "welcome": 2, "presence": 2}
