"""UserService: sessions bind a validated user name to a room and carry a bearer token.

Tokens are 256 random bits from :mod:`secrets`; only their SHA-256 is stored. Session ids are
random too (not sequential), so knowing one session id says nothing about another.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from chatsys import validation
from chatsys.errors import Unauthorized
from chatsys.runtime import rpc
from chatsys.stubs.chatsys.users.v1 import (
    AuthenticateRequest,
    AuthenticateResponse,
    CreateSessionRequest,
    CreateSessionResponse,
    EndSessionRequest,
    EndSessionResponse,
    Session,
    UserServiceBase,
)
from chatsys.tokens import MAX_TOKEN_CHARS, TokenSigner
from chatsys.users.store import SessionRecord, SessionStore

PURGE_EVERY = 1000  # sessions created between two sweeps of expired ones


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _session(record: SessionRecord) -> Session:
    return Session(id=record.id, user=record.user, room=record.room,
                   created_ms=record.created_ms)


class UserService(UserServiceBase):
    def __init__(self, store: SessionStore, *, ttl_seconds: float,
                 signer: TokenSigner | None = None) -> None:
        self.store = store
        self.ttl_ms = int(ttl_seconds * 1000)
        self.signer = signer
        self._created = 0

    @rpc.unary
    async def create_session(self, message: CreateSessionRequest) -> CreateSessionResponse:
        user = validation.user_name(message.user)
        room = validation.room_name(message.room)
        record = SessionRecord(secrets.token_hex(16), user, room, now_ms())
        if self.signer is not None:
            token = self.signer.issue(_session(record), self.ttl_ms)
        else:
            token = secrets.token_urlsafe(32)
        await self.store.create(record, token_hash(token))
        self._created += 1
        if self._created % PURGE_EVERY == 0:
            await self.store.purge(now_ms() - self.ttl_ms)
        return CreateSessionResponse(session=_session(record), token=token)

    @rpc.unary
    async def authenticate(self, message: AuthenticateRequest) -> AuthenticateResponse:
        token = message.token
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("invalid or expired token")
        record = await self.store.lookup(token_hash(token), now_ms() - self.ttl_ms)
        if record is None:
            raise Unauthorized("invalid or expired token")
        return AuthenticateResponse(session=_session(record))

    @rpc.unary
    async def end_session(self, message: EndSessionRequest) -> EndSessionResponse:
        if message.session_id:
            await self.store.end(message.session_id)
        return EndSessionResponse()
