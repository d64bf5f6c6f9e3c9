"""UserService as the gateway calls it: sessions, and tokens A must check itself.

Creating and ending sessions go through
:class:`~chatsys.gateway.clients.coalescing.Coalescer` queues: a join (or leave) storm's
sessions reach A in a few ``CreateSessions`` (``EndSessions``) calls, each stored in one commit;
an A from before those gets one call per session.
"""

from __future__ import annotations

import anyio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from chatsys.errors import ChatError, Internal, from_grpc, from_status
from chatsys.gateway import metrics as m
from chatsys.gateway.clients.caller import Caller, Retry
from chatsys.gateway.clients.coalescing import Coalescer
from chatsys.stubs.chatsys.users.v1 import (
    AuthenticateRequest,
    CreateSessionOutcome,
    CreateSessionRequest,
    CreateSessionResponse,
    CreateSessionsRequest,
    EndSessionRequest,
    EndSessionsRequest,
    Session,
    UserServiceStub,
)

Created = CreateSessionResponse | ChatError


class UsersClient:
    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.creates = Coalescer("CreateSessions", self._create_sessions, timeout=caller.timeout,
                                 sizes=m.BATCH_SIZE.labels("CreateSessions"))
        self.ends = Coalescer("EndSessions", self._end_sessions, timeout=caller.timeout,
                              sizes=m.BATCH_SIZE.labels("EndSessions"))
        self.coalescers = (self.creates, self.ends)

    async def create_session(self, user: str, room: str) -> tuple[Session, str]:
        """A new session and its token."""
        reply = await self.creates.call(CreateSessionRequest(user=user, room=room))
        assert reply.session is not None
        return reply.session, reply.token

    async def authenticate(self, token: str) -> Session:
        request = AuthenticateRequest(token=token)
        reply = await self.caller.call("Authenticate", lambda ch, t: UserServiceStub(
            ch).authenticate(request, timeout=t), retry=Retry.BROKEN)
        assert reply.session is not None
        return reply.session

    async def end_session(self, session_id: str) -> None:
        await self.ends.call(session_id)

    async def _create_sessions(self, requests: list[CreateSessionRequest]) -> list[Created]:
        """A write: retried only if A surely did nothing."""
        return await self.caller.call("CreateSessions", lambda ch, t: _create_sessions_on(
            ch, requests, t), retry=Retry.UNSENT)

    async def _end_sessions(self, session_ids: list[str]) -> list[None]:
        """Ending twice is harmless: retried like a read."""
        await self.caller.call("EndSessions", lambda ch, t: _end_sessions_on(
            ch, session_ids, t), retry=Retry.BROKEN)
        return [None] * len(session_ids)


async def _create_sessions_on(channel: Channel, requests: list[CreateSessionRequest],
                              seconds: float) -> list[Created]:
    """``CreateSessions``, or one ``CreateSession`` each on an A from before it."""
    stub = UserServiceStub(channel)
    try:
        reply = await stub.create_sessions(CreateSessionsRequest(requests=requests),
                                           timeout=seconds)
    except GRPCError as exc:
        if exc.status is not Status.UNIMPLEMENTED:
            raise
    else:
        return [_created(outcome) for outcome in reply.outcomes]
    deadline = anyio.current_time() + seconds
    outcomes: list[Created] = []
    for request in requests:  # an unused session is harmless: it expires with its TTL
        try:
            outcomes.append(await stub.create_session(request, timeout=_left(deadline)))
        except GRPCError as exc:
            outcomes.append(from_grpc(exc))
    return outcomes


def _created(outcome: CreateSessionOutcome) -> Created:
    if outcome.created is not None:
        return outcome.created
    if outcome.failure is not None:
        return from_status(outcome.failure.status, outcome.failure.detail)
    return Internal("an empty outcome")


def _left(deadline: float) -> float:
    return max(0.001, deadline - anyio.current_time())


async def _end_sessions_on(channel: Channel, session_ids: list[str], seconds: float) -> None:
    """``EndSessions``, or one ``EndSession`` each on an A from before it."""
    stub = UserServiceStub(channel)
    try:
        await stub.end_sessions(EndSessionsRequest(session_ids=session_ids), timeout=seconds)
    except GRPCError as exc:
        if exc.status is not Status.UNIMPLEMENTED:
            raise
        deadline = anyio.current_time() + seconds
        for session_id in session_ids:
            await stub.end_session(EndSessionRequest(session_id=session_id),
                                   timeout=_left(deadline))
