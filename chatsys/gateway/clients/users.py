"""UserService as the gateway calls it: sessions, and tokens A must check itself."""

from __future__ import annotations

from chatsys.gateway.clients.caller import Caller, Retry
from chatsys.stubs.chatsys.users.v1 import (
    AuthenticateRequest,
    CreateSessionRequest,
    EndSessionRequest,
    Session,
    UserServiceStub,
)


class UsersClient:
    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    async def create_session(self, user: str, room: str) -> tuple[Session, str]:
        """A new session and its token; a write, so retried only if A surely did nothing."""
        request = CreateSessionRequest(user=user, room=room)
        reply = await self.caller.call("CreateSession", lambda ch, t: UserServiceStub(
            ch).create_session(request, timeout=t), retry=Retry.UNSENT)
        assert reply.session is not None
        return reply.session, reply.token

    async def authenticate(self, token: str) -> Session:
        request = AuthenticateRequest(token=token)
        reply = await self.caller.call("Authenticate", lambda ch, t: UserServiceStub(
            ch).authenticate(request, timeout=t), retry=Retry.BROKEN)
        assert reply.session is not None
        return reply.session

    async def end_session(self, session_id: str) -> None:
        request = EndSessionRequest(session_id=session_id)
        await self.caller.call("EndSession", lambda ch, t: UserServiceStub(ch).end_session(
            request, timeout=t), retry=Retry.BROKEN)
