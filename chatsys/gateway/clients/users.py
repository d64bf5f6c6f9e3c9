"""UserService as the gateway calls it, on upb messages (:mod:`chatsys.users.wire`): sessions,
and tokens A must check itself.

Creating and ending sessions go through
:class:`~chatsys.gateway.clients.coalescing.Coalescer` queues: a join (or leave) storm's
sessions reach A in a few ``CreateSessions`` (``EndSessions``) calls, each stored in one commit;
an A from before those gets one call per session.
"""

from __future__ import annotations

from grpclib.client import Channel

from chatsys.errors import ChatError
from chatsys.gateway import metrics as m
from chatsys.gateway.clients.caller import Caller, Retry, batch_or_one_each, outcome_of
from chatsys.gateway.clients.coalescing import Coalescer
from chatsys.stubs.chatsys.users.v1 import users_pb2 as pb
from chatsys.users import wire

Session = pb.Session
Created = pb.CreateSessionResponse | ChatError


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
        reply = await self.creates.call(pb.CreateSessionRequest(user=user, room=room))
        return reply.session, reply.token

    async def authenticate(self, token: str) -> Session:
        request = pb.AuthenticateRequest(token=token)
        reply = await self.caller.call("Authenticate", lambda ch, t: wire.AUTHENTICATE.call(
            ch, request, seconds=t), retry=Retry.BROKEN)
        return reply.session

    async def end_session(self, session_id: str) -> None:
        await self.ends.call(session_id)

    async def _create_sessions(self, requests: list[pb.CreateSessionRequest]) -> list[Created]:
        """A write: retried only if A surely did nothing."""
        return await self.caller.call("CreateSessions", lambda ch, t: _create_sessions_on(
            ch, requests, t), retry=Retry.UNSENT)

    async def _end_sessions(self, session_ids: list[str]) -> list[None]:
        """Ending twice is harmless: retried like a read."""
        return await self.caller.call("EndSessions", lambda ch, t: _end_sessions_on(
            ch, session_ids, t), retry=Retry.BROKEN)


async def _create_sessions_on(channel: Channel, requests: list[pb.CreateSessionRequest],
                              seconds: float) -> list[Created]:
    """``CreateSessions``, or one ``CreateSession`` each on an A from before it (a repeat is
    harmless: an unused session expires with its TTL)."""

    async def batch(left: float) -> list[Created]:
        reply = await wire.CREATE_SESSIONS.call(
            channel, pb.CreateSessionsRequest(requests=requests), seconds=left)
        return [outcome_of(outcome, "created") for outcome in reply.outcomes]

    async def one(request: pb.CreateSessionRequest, left: float) -> pb.CreateSessionResponse:
        return await wire.CREATE_SESSION.call(channel, request, seconds=left)

    return await batch_or_one_each(batch, one, requests, seconds)


async def _end_sessions_on(channel: Channel, session_ids: list[str],
                           seconds: float) -> list[None]:
    """``EndSessions``, or one ``EndSession`` each on an A from before it; like the batch, which
    refuses no session of its own, it succeeds or fails as a whole."""

    async def batch(left: float) -> list[None]:
        await wire.END_SESSIONS.call(channel, pb.EndSessionsRequest(session_ids=session_ids),
                                     seconds=left)
        return [None] * len(session_ids)

    async def one(session_id: str, left: float) -> None:
        await wire.END_SESSION.call(channel, pb.EndSessionRequest(session_id=session_id),
                                    seconds=left)

    return await batch_or_one_each(batch, one, session_ids, seconds, per_item=False)
