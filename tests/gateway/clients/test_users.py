"""A gateway talking to an A from before ``CreateSessions``/``EndSessions`` (a rolling upgrade
that reaches the gateways first) still creates and ends every session: one call each, over
real gRPC to a real grpclib server that only knows the single-session methods. The old A is
betterproto2's servicer, the gateway speaks upb messages: the wire format is all they share."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from chatsys.errors import BadRequest
from chatsys.gateway.clients.caller import Caller
from chatsys.gateway.clients.users import UsersClient
from chatsys.runtime.grpc_clients import ChannelPool, parse_target
from chatsys.stubs.chatsys.users.v1 import (
    CreateSessionRequest,
    CreateSessionResponse,
    EndSessionRequest,
    EndSessionResponse,
    Session,
    UserServiceBase,
)
from chatsys.stubs.chatsys.users.v1 import users_pb2 as pb

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class OldUserService(UserServiceBase):
    """CreateSession and EndSession only (the batch methods answer UNIMPLEMENTED, as the
    generated base does)."""

    def __init__(self) -> None:
        self.sessions: list[str] = []

    async def create_session(self, message: CreateSessionRequest) -> CreateSessionResponse:
        if not message.user:
            raise GRPCError(Status.INVALID_ARGUMENT, "user is required")
        self.sessions.append(message.user)
        return CreateSessionResponse(
            session=Session(id=message.user, user=message.user, room=message.room),
            token=f"t-{message.user}")

    async def end_session(self, message: EndSessionRequest) -> EndSessionResponse:
        self.sessions.remove(message.session_id)
        return EndSessionResponse()


@pytest.fixture
async def old_a() -> AsyncIterator[tuple[OldUserService, UsersClient]]:
    service = OldUserService()
    server = Server([service])
    sock = socket.create_server(("127.0.0.1", 0))
    await server.start(sock=sock)
    users = UsersClient(Caller(ChannelPool(parse_target(
        f"127.0.0.1:{sock.getsockname()[1]}"), service="users"), 5.0))
    try:
        yield service, users
    finally:
        users.caller.pool.close()
        server.close()
        await server.wait_closed()


async def test_sessions_fall_back_to_one_call_each_on_an_old_a(
        old_a: tuple[OldUserService, UsersClient]) -> None:
    service, users = old_a
    outcomes = await users._create_sessions([
        pb.CreateSessionRequest(user=user, room="r") for user in ("ana", "", "bo")])
    assert service.sessions == ["ana", "bo"]
    ana, failed, bo = outcomes
    assert isinstance(failed, BadRequest) and failed.message == "user is required"
    assert not isinstance(ana, BadRequest) and ana.token == "t-ana"
    assert not isinstance(bo, BadRequest) and bo.session is not None
    await users._end_sessions(["ana", "bo"])
    assert service.sessions == []
