"""A gateway talking to an A from before ``AppendBatch`` (a rolling upgrade that reaches the
gateways first) still stores every message: it falls back to one ``Append`` each, over real
gRPC to a real grpclib server that only knows ``Append``. The old A is betterproto2's servicer,
the gateway speaks upb messages: the wire format is all they share."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from chatsys.errors import BadRequest, Unavailable
from chatsys.gateway.clients.caller import Caller
from chatsys.gateway.clients.chat import ChatClient
from chatsys.runtime.grpc_clients import ChannelPool, parse_target
from chatsys.stubs.chatsys.chat.v1 import (
    AppendRequest,
    AppendResponse,
    ChatServiceBase,
    Message,
    PublishPresenceRequest,
    PublishPresenceResponse,
)
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import AppendRequest as UpbAppendRequest
from chatsys.stubs.chatsys.chat.v1.chat_pb2 import Presence as UpbPresence
from tests.support import unused_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _client(address: str, *, timeout: float) -> ChatClient:
    return ChatClient(Caller(ChannelPool(parse_target(address), service="chat"), timeout))


class OldChatService(ChatServiceBase):
    """Append and PublishPresence only (the batch methods answer UNIMPLEMENTED, as the
    generated base does)."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.announced: list[str] = []

    async def publish_presence(self, message: PublishPresenceRequest,
                               ) -> PublishPresenceResponse:
        assert message.presence is not None
        if not message.presence.room:
            raise GRPCError(Status.INVALID_ARGUMENT, "room is required")
        self.announced.append(message.presence.user)
        return PublishPresenceResponse()

    async def append(self, message: AppendRequest) -> AppendResponse:
        if message.text == "bad":
            raise GRPCError(Status.INVALID_ARGUMENT, "text is bad")
        self.stored.append(message.text or "")
        return AppendResponse(message=Message(id=f"{len(self.stored):016d}", ts=1))


@pytest.fixture
async def old_a() -> AsyncIterator[tuple[OldChatService, int]]:
    service = OldChatService()
    server = Server([service])
    sock = socket.create_server(("127.0.0.1", 0))  # bound here: no port passed on and lost
    port = sock.getsockname()[1]
    await server.start(sock=sock)
    try:
        yield service, port
    finally:
        server.close()
        await server.wait_closed()


async def test_appends_fall_back_to_one_call_each_on_an_old_a(
        old_a: tuple[OldChatService, int]) -> None:
    service, port = old_a
    chat = _client(f"127.0.0.1:{port}", timeout=5.0)
    try:
        outcomes = await chat._append_batch([
            UpbAppendRequest(room="r", user="u", text=text) for text in ("one", "bad", "two")])
    finally:
        chat.caller.pool.close()
    assert service.stored == ["one", "two"]
    assert [getattr(o, "id", None) for o in outcomes] == [f"{1:016d}", None, f"{2:016d}"]
    assert isinstance(outcomes[1], BadRequest) and outcomes[1].message == "text is bad"


async def test_presence_falls_back_to_one_call_each_on_an_old_a(
        old_a: tuple[OldChatService, int]) -> None:
    service, port = old_a
    chat = _client(f"127.0.0.1:{port}", timeout=5.0)
    try:
        outcomes = await chat._publish_presence_batch([
            UpbPresence(room=room, user=user, session="s", event=UpbPresence.EVENT_JOIN)
            for room, user in (("r", "ana"), ("", "bo"), ("r", "cy"))])
    finally:
        chat.caller.pool.close()
    assert service.announced == ["ana", "cy"]
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], BadRequest) and outcomes[1].message == "room is required"


async def test_nothing_reachable_is_unavailable() -> None:
    chat = _client(f"127.0.0.1:{unused_port()}", timeout=2.0)
    try:
        with pytest.raises(Unavailable):
            await chat._append_batch([UpbAppendRequest(room="r", user="u", text="x")])
    finally:
        chat.caller.pool.close()
