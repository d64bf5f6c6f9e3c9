"""Module A (UserService + ChatService) as a real process, over gRPC."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from chatsys.stubs.chatsys.chat.v1 import (
    AppendBatchRequest,
    AppendRequest,
    ChatServiceStub,
    FileRef,
    HistoryRequest,
    Presence,
    PresenceEvent,
    PublishPresenceBatchRequest,
    PublishPresenceRequest,
    RoomEvent,
    SubscribeRequest,
)
from chatsys.stubs.chatsys.users.v1 import (
    AuthenticateRequest,
    CreateSessionRequest,
    CreateSessionsRequest,
    EndSessionRequest,
    EndSessionsRequest,
    UserServiceStub,
)
from tests.grpc_services import Service, start

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
A = ["users", "chat"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with start(A, tmp_path_factory.mktemp("a") / "data") as svc:
        yield svc


@pytest.fixture
async def channel(service: Service) -> AsyncIterator[Channel]:
    ch = Channel("127.0.0.1", service.port)
    yield ch
    ch.close()


async def _status(call: object) -> Status:
    with pytest.raises(GRPCError) as info:
        await call  # type: ignore[misc]
    return info.value.status


async def test_create_session_validates(channel: Channel) -> None:
    users = UserServiceStub(channel)
    with anyio.fail_after(5):
        for user, room in [("", "lobby"), ("ana", ""), ("a/b", "lobby"), ("ana", "no spaces"),
                           ("x" * 33, "lobby"), ("   ", "lobby")]:
            status = await _status(users.create_session(CreateSessionRequest(user=user, room=room)))
            assert status is Status.INVALID_ARGUMENT, (user, room)


async def test_session_lifecycle_and_forged_token(channel: Channel) -> None:
    users = UserServiceStub(channel)
    with anyio.fail_after(5):
        created = await users.create_session(CreateSessionRequest(user="Ána 1", room="lobby"))
        assert created.session is not None and len(created.token) >= 43
        assert created.session.user == "Ána 1" and created.session.created_ms > 0
        auth = await users.authenticate(AuthenticateRequest(token=created.token))
        assert auth.session is not None and auth.session.id == created.session.id
        forged = created.token[:-2] + ("AA" if not created.token.endswith("AA") else "BB")
        for token in (forged, "", "x" * 2000):
            status = await _status(users.authenticate(AuthenticateRequest(token=token)))
            assert status is Status.UNAUTHENTICATED
        await users.end_session(EndSessionRequest(session_id=created.session.id))
        await users.end_session(EndSessionRequest(session_id=created.session.id))
        status = await _status(users.authenticate(AuthenticateRequest(token=created.token)))
        assert status is Status.UNAUTHENTICATED


async def test_sessions_in_batches_answer_each_request_in_order(channel: Channel) -> None:
    users = UserServiceStub(channel)
    with anyio.fail_after(5):
        reply = await users.create_sessions(CreateSessionsRequest(requests=[
            CreateSessionRequest(user="ana", room="lobby"),
            CreateSessionRequest(user="a/b", room="lobby"),
            CreateSessionRequest(user="bo", room="kitchen")]))
        ana, bad, bo = reply.outcomes
        assert bad.failure is not None and bad.created is None
        assert Status(bad.failure.status) is Status.INVALID_ARGUMENT and bad.failure.detail
        tokens = []
        for outcome, (user, room) in ((ana, ("ana", "lobby")), (bo, ("bo", "kitchen"))):
            assert outcome.created is not None and outcome.created.session is not None
            assert (outcome.created.session.user, outcome.created.session.room) == (user, room)
            auth = await users.authenticate(AuthenticateRequest(token=outcome.created.token))
            assert auth.session == outcome.created.session
            tokens.append(outcome.created.token)
        assert ana.created and bo.created and ana.created.session and bo.created.session
        await users.end_sessions(EndSessionsRequest(session_ids=[
            ana.created.session.id, "", "unknown", bo.created.session.id]))
        for token in tokens:
            status = await _status(users.authenticate(AuthenticateRequest(token=token)))
            assert status is Status.UNAUTHENTICATED
        too_many = CreateSessionsRequest(requests=[CreateSessionRequest(user="u", room="r")]
                                         * 1001)
        assert await _status(users.create_sessions(too_many)) is Status.INVALID_ARGUMENT


async def test_presence_batch_broadcasts_each_valid_presence(channel: Channel) -> None:
    chat = ChatServiceStub(channel)
    with anyio.fail_after(10):
        events = chat.subscribe(SubscribeRequest(room="storm"))
        assert (await anext(events)).subscribed is not None
        reply = await chat.publish_presence_batch(PublishPresenceBatchRequest(presences=[
            Presence(room="storm", user="ana", session="s1", event=PresenceEvent.JOIN),
            Presence(room="storm", user="bo", session="s2"),  # no event: refused alone
            Presence(room="storm", user="cy", session="s3", event=PresenceEvent.LEAVE)]))
        assert [Status(f.status) for f in reply.failures] == [
            Status.OK, Status.INVALID_ARGUMENT, Status.OK]
        got = [await anext(events) for _ in range(2)]
        assert [(e.presence.user, e.presence.event) for e in got if e.presence] == [
            ("ana", PresenceEvent.JOIN), ("cy", PresenceEvent.LEAVE)]
        await events.aclose()


async def test_append_validation(channel: Channel) -> None:
    chat = ChatServiceStub(channel)
    with anyio.fail_after(5):
        cases = [
            (AppendRequest(room="r", user="ana", text=""), Status.INVALID_ARGUMENT),
            (AppendRequest(room="r", user="ana"), Status.INVALID_ARGUMENT),
            (AppendRequest(room="bad room", user="ana", text="hi"), Status.INVALID_ARGUMENT),
            (AppendRequest(room="r", user="", text="hi"), Status.INVALID_ARGUMENT),
            (AppendRequest(room="r", user="ana", file=FileRef()), Status.INVALID_ARGUMENT),
            (AppendRequest(room="r", user="ana", text="x" * 4001), Status.OUT_OF_RANGE),
        ]
        for request, expected in cases:
            assert await _status(chat.append(request)) is expected
        ok = await chat.append(AppendRequest(room="r", user="ana", text="x" * 4000))
        assert ok.message is not None and ok.message.text == "x" * 4000


async def test_append_batch_answers_each_append_in_order(channel: Channel) -> None:
    """Bad appends fail alone with their own status; good ones around them are stored, in order."""
    chat = ChatServiceStub(channel)
    with anyio.fail_after(5):
        reply = await chat.append_batch(AppendBatchRequest(appends=[
            AppendRequest(room="batch", user="ana", session="s", text="one"),
            AppendRequest(room="batch", user="ana", text=""),
            AppendRequest(room="batch", user="ana", text="x" * 4001),
            AppendRequest(room="batch", user="ana", file=FileRef(id="f1", name="a.txt", size=3)),
            AppendRequest(room="bad room", user="ana", text="hi"),
        ]))
        assert len(reply.outcomes) == 5
        good = [reply.outcomes[0].stored, reply.outcomes[3].stored]
        assert all(m is not None and m.ts > 0 for m in good)
        assert good[0].id < good[1].id  # type: ignore[union-attr]
        failures = [o.failure for o in (reply.outcomes[1], reply.outcomes[2], reply.outcomes[4])]
        assert [Status(f.status) for f in failures] == [  # type: ignore[union-attr]
            Status.INVALID_ARGUMENT, Status.OUT_OF_RANGE, Status.INVALID_ARGUMENT]
        assert all(f.detail for f in failures)  # type: ignore[union-attr]
        stored = await chat.history(HistoryRequest(room="batch"))
        assert [m.id for m in stored.messages] == [m.id for m in good]  # type: ignore[union-attr]
        assert stored.messages[0].text == "one" and stored.messages[1].file.id == "f1"  # type: ignore[union-attr]
        assert (await chat.append_batch(AppendBatchRequest())).outcomes == []
        too_many = AppendBatchRequest(appends=[AppendRequest(room="batch", user="ana",
                                                             text="x")] * 1001)
        assert await _status(chat.append_batch(too_many)) is Status.INVALID_ARGUMENT


async def test_append_and_history(channel: Channel) -> None:
    chat = ChatServiceStub(channel)
    with anyio.fail_after(5):
        acks = []
        for i in range(5):
            resp = await chat.append(AppendRequest(room="hist", user="ana", session="s",
                                                   text=f"m{i}"))
            assert resp.message is not None and resp.message.id and resp.message.ts > 0
            acks.append(resp.message)
        assert [m.id for m in acks] == sorted(m.id for m in acks)
        file_ack = await chat.append(AppendRequest(
            room="hist", user="ana", file=FileRef(id="abc", name="a.txt", size=1)))
        assert file_ack.message is not None and file_ack.message.file is not None
        last = await chat.history(HistoryRequest(room="hist", limit=3))
        assert [m.text for m in last.messages[:2]] == ["m3", "m4"]
        assert last.messages[2].file is not None and last.messages[2].file.id == "abc"
        since = await chat.history(HistoryRequest(room="hist", since=acks[1].id))
        assert [m.id for m in since.messages] == [m.id for m in acks[2:]] + [file_ack.message.id]
        default = await chat.history(HistoryRequest(room="hist"))
        assert len(default.messages) == 6
        assert await _status(chat.history(HistoryRequest(room="hist", since="nope"))) \
            is Status.INVALID_ARGUMENT


async def test_subscribe_live_and_presence(channel: Channel) -> None:
    chat = ChatServiceStub(channel)
    with anyio.fail_after(10):
        events = chat.subscribe(SubscribeRequest(room="live"))
        first = await anext(events)
        assert first.subscribed is not None and first.subscribed.room == "live"
        sent = []
        for i in range(3):
            resp = await chat.append(AppendRequest(room="live", user="ana", text=f"t{i}"))
            sent.append(resp.message)
        await chat.append(AppendRequest(room="elsewhere", user="ana", text="not for us"))
        await chat.publish_presence(PublishPresenceRequest(presence=Presence(
            room="live", user="bo", session="s9", event=PresenceEvent.JOIN)))
        got = [await anext(events) for _ in range(4)]
        assert [e.message.id for e in got[:3] if e.message] == [m.id for m in sent if m]
        assert got[3].presence is not None and got[3].presence.user == "bo"
        assert got[3].presence.event == PresenceEvent.JOIN
        await events.aclose()
        bad = PublishPresenceRequest(presence=Presence(room="live", user="bo"))
        assert await _status(chat.publish_presence(bad)) is Status.INVALID_ARGUMENT


async def test_subscribe_since_replays_without_duplicates(channel: Channel) -> None:
    chat = ChatServiceStub(channel)
    with anyio.fail_after(10):
        sent = [(await chat.append(AppendRequest(room="resume", user="ana", text=f"r{i}"))).message
                for i in range(6)]
        ids = [m.id for m in sent if m]
        events = chat.subscribe(SubscribeRequest(room="resume", since=ids[2]))
        assert (await anext(events)).subscribed is not None
        replayed = [await anext(events) for _ in range(3)]
        assert [e.message.id for e in replayed if e.message] == ids[3:]
        live = await chat.append(AppendRequest(room="resume", user="ana", text="after"))
        nxt = await anext(events)
        assert nxt.message is not None and live.message is not None
        assert nxt.message.id == live.message.id
        await events.aclose()


async def test_concurrent_appends_arrive_in_id_order(channel: Channel) -> None:
    chat = ChatServiceStub(channel)
    with anyio.fail_after(30):
        events = chat.subscribe(SubscribeRequest(room="burst"))
        assert (await anext(events)).subscribed is not None
        acked: list[str] = []

        async def send(i: int) -> None:
            resp = await chat.append(AppendRequest(room="burst", user="ana", text=f"b{i}"))
            assert resp.message is not None
            acked.append(resp.message.id)

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(send, i)
        received: list[RoomEvent] = [await anext(events) for _ in range(200)]
        got = [e.message.id for e in received if e.message]
        assert len(got) == 200 and got == sorted(got) and len(set(got)) == 200
        assert set(got) == set(acked)
        await events.aclose()


async def test_metrics_exposed(service: Service, channel: Channel) -> None:
    with anyio.fail_after(5):
        await ChatServiceStub(channel).history(HistoryRequest(room="m"))
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"http://127.0.0.1:{service.metrics_port}/metrics")
    body = reply.text
    assert "process_cpu_seconds_total" in body
    lines = [ln for ln in body.splitlines() if ln.startswith("grpc_server_handled_total{")]
    assert any('grpc_service="chatsys.chat.v1.ChatService"' in ln
               and 'grpc_method="History"' in ln and 'grpc_code="OK"' in ln for ln in lines)


async def test_restart_keeps_history_and_sigterm_exits_zero(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with start(A, data) as svc:
        ch = Channel("127.0.0.1", svc.port)
        try:
            with anyio.fail_after(10):
                chat = ChatServiceStub(ch)
                acks = [(await chat.append(AppendRequest(room="keep", user="ana", text=f"k{i}")))
                        .message for i in range(20)]
            # A live subscription ends with UNAVAILABLE (re-subscribe with since) on SIGTERM.
            with anyio.fail_after(15):
                events = ChatServiceStub(ch).subscribe(SubscribeRequest(room="keep"))
                assert (await anext(events)).subscribed is not None
                svc.proc.signal(signal.SIGTERM)
                with pytest.raises(GRPCError) as ended:
                    await anext(events)
                assert ended.value.status is Status.UNAVAILABLE
        finally:
            ch.close()
        assert await anyio.to_thread.run_sync(svc.proc.wait, 15) == 0
    with start(A, data) as svc:
        ch = Channel("127.0.0.1", svc.port)
        try:
            with anyio.fail_after(10):
                history = await ChatServiceStub(ch).history(HistoryRequest(room="keep", limit=100))
            assert [m.id for m in history.messages] == [m.id for m in acks if m]
            assert [m.text for m in history.messages] == [f"k{i}" for i in range(20)]
        finally:
            ch.close()


async def test_acked_messages_survive_kill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with start(A, data) as svc:
        ch = Channel("127.0.0.1", svc.port)
        try:
            with anyio.fail_after(10):
                ack = (await ChatServiceStub(ch).append(
                    AppendRequest(room="kill", user="ana", text="durable"))).message
        finally:
            ch.close()
        svc.proc.signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(svc.proc.wait, 15)
    with start(A, data) as svc:
        ch = Channel("127.0.0.1", svc.port)
        try:
            with anyio.fail_after(10):
                history = await ChatServiceStub(ch).history(HistoryRequest(room="kill"))
            assert ack is not None and [m.id for m in history.messages] == [ack.id]
        finally:
            ch.close()
