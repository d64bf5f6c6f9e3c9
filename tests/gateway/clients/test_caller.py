"""The retrying caller over real gRPC: which failures move a call to another endpoint, and that
whatever fails comes out as a contract error."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from chatsys.chat import wire
from chatsys.errors import BadRequest, ChatError, Internal, NotFound, Unavailable
from chatsys.gateway.clients.caller import Caller, Retry, batch_or_one_each, outcome_of
from chatsys.runtime.grpc_clients import ChannelPool, Target, parse_target
from chatsys.stubs.chatsys.chat.v1 import ChatServiceBase, HistoryRequest, HistoryResponse, Message
from chatsys.stubs.chatsys.chat.v1 import chat_pb2 as pb
from chatsys.stubs.chatsys.users.v1 import users_pb2 as users_pb
from tests.support import unused_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Chat(ChatServiceBase):
    """A ChatService whose History always holds one message."""

    async def history(self, message: HistoryRequest) -> HistoryResponse:
        return HistoryResponse(messages=[Message(id="1", room=message.room)])


@pytest.fixture
async def live_port() -> AsyncIterator[int]:
    """A real grpclib server answering History."""
    server = Server([_Chat()])
    sock = socket.create_server(("127.0.0.1", 0))
    await server.start(sock=sock)
    try:
        yield sock.getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def _caller(*ports: int) -> Caller:
    target = parse_target(",".join(f"127.0.0.1:{port}" for port in ports))
    return Caller(ChannelPool(target, service="test"), timeout=5.0)


async def _history(channel: Channel, seconds: float) -> int:
    reply = await wire.HISTORY.call(channel, pb.HistoryRequest(room="r"), seconds=seconds)
    return len(reply.messages)


@pytest.mark.parametrize("retry", [Retry.UNSENT, Retry.BROKEN])
async def test_a_refused_connection_moves_any_call_to_another_endpoint(
        live_port: int, retry: Retry) -> None:
    dead = unused_port()
    caller = _caller(dead, live_port)
    try:
        for _ in range(4):  # whichever endpoint the rotation starts with
            assert await caller.call("History", _history, retry=retry) == 1
        assert caller.pool.pick(avoid=[("127.0.0.1", live_port)])[0] == ("127.0.0.1", dead)
    finally:
        caller.pool.close()


async def test_a_status_is_its_contract_error_and_is_not_retried(live_port: int) -> None:
    calls = 0

    async def not_found(channel: Channel, seconds: float) -> None:
        nonlocal calls
        calls += 1
        raise GRPCError(Status.NOT_FOUND, "no such thing")

    caller = _caller(live_port)
    try:
        with pytest.raises(NotFound, match="no such thing"):
            await caller.call("History", not_found, retry=Retry.BROKEN)
        assert calls == 1
    finally:
        caller.pool.close()


async def test_nothing_to_call_is_unavailable() -> None:
    caller = Caller(ChannelPool(Target(dns_name="nowhere.invalid", dns_port=1)), timeout=1.0)
    with pytest.raises(Unavailable):
        await caller.call("History", _history, retry=Retry.BROKEN)
    caller.pool.close()


async def test_a_stream_that_ends_before_its_first_message_is_internal(live_port: int) -> None:
    async def empty(channel: Channel, seconds: float) -> AsyncIterator[int]:
        return
        yield 0

    caller = _caller(live_port)
    try:
        with pytest.raises(Internal, match="ended before it started"):
            await caller.open_stream("Watch", empty)
    finally:
        caller.pool.close()


def test_a_batch_outcome_is_its_result_or_its_failures_contract_error() -> None:
    stored = pb.AppendOutcome(stored=pb.Stored(id="7", ts=1))
    assert outcome_of(stored, "stored") == pb.Stored(id="7", ts=1)
    created = users_pb.CreateSessionOutcome(created=users_pb.CreateSessionResponse(token="t"))
    assert outcome_of(created, "created").token == "t"
    failed = outcome_of(pb.AppendOutcome(failure=pb.AppendFailure(
        status=Status.INVALID_ARGUMENT.value, detail="text is bad")), "stored")
    assert isinstance(failed, BadRequest) and failed.message == "text is bad"
    assert isinstance(outcome_of(pb.AppendOutcome(), "stored"), Internal)


class _OldA:
    """A batch method that answers ``batch_status`` and a single one that refuses ``"bad"``."""

    def __init__(self, batch_status: Status = Status.UNIMPLEMENTED) -> None:
        self.batch_status = batch_status
        self.singles: list[str] = []

    async def batch(self, seconds: float) -> list[str | ChatError]:
        raise GRPCError(self.batch_status, "no batch")

    async def one(self, item: str, seconds: float) -> str:
        assert seconds > 0
        self.singles.append(item)
        if item == "bad":
            raise GRPCError(Status.INVALID_ARGUMENT, "bad item")
        return item.upper()


async def test_without_the_batch_method_each_item_is_called_alone() -> None:
    old = _OldA()
    outcomes = await batch_or_one_each(old.batch, old.one, ["a", "bad", "b"], 5.0)
    assert old.singles == ["a", "bad", "b"]
    assert outcomes[0] == "A" and outcomes[2] == "B"
    assert isinstance(outcomes[1], BadRequest) and outcomes[1].message == "bad item"


async def test_where_the_batch_fails_as_a_whole_so_does_its_fallback() -> None:
    old = _OldA()
    with pytest.raises(GRPCError):
        await batch_or_one_each(old.batch, old.one, ["a", "bad", "b"], 5.0, per_item=False)
    assert old.singles == ["a", "bad"]


async def test_a_batch_that_fails_otherwise_is_not_repeated_one_by_one() -> None:
    old = _OldA(Status.INTERNAL)
    with pytest.raises(GRPCError):
        await batch_or_one_each(old.batch, old.one, ["a"], 5.0)
    assert old.singles == []
