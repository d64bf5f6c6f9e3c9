"""UserService: sessions bind a validated user name to a room and carry a bearer token.

Tokens are 256 random bits from :mod:`secrets`; only their SHA-256 is stored. Session ids are
random too (not sequential), so knowing one session id says nothing about another.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from chatsys import validation
from chatsys.errors import BadRequest, ChatError, Unauthorized
from chatsys.runtime import rpc
from chatsys.stubs.chatsys.users.v1 import (
    AuthenticateRequest,
    AuthenticateResponse,
    CreateSessionFailure,
    CreateSessionOutcome,
    CreateSessionRequest,
    CreateSessionResponse,
    CreateSessionsRequest,
    CreateSessionsResponse,
    EndSessionRequest,
    EndSessionResponse,
    EndSessionsRequest,
    EndSessionsResponse,
    Session,
    UserServiceBase,
)
from chatsys.tokens import MAX_TOKEN_CHARS, TokenSigner
from chatsys.users.store import SessionRecord, SessionStore

PURGE_EVERY = 1000  # sessions created between two sweeps of expired ones
MAX_BATCH_SESSIONS = 1000


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
        outcome = (await self._create([message]))[0]
        if isinstance(outcome, ChatError):
            raise outcome
        return outcome

    @rpc.unary
    async def create_sessions(self, message: CreateSessionsRequest) -> CreateSessionsResponse:
        if len(message.requests) > MAX_BATCH_SESSIONS:
            raise BadRequest(f"at most {MAX_BATCH_SESSIONS} sessions per batch")
        return CreateSessionsResponse(outcomes=[
            CreateSessionOutcome(failure=CreateSessionFailure(
                status=outcome.grpc_status.value, detail=outcome.message))
            if isinstance(outcome, ChatError) else CreateSessionOutcome(created=outcome)
            for outcome in await self._create(message.requests)])

    async def _create(self, requests: list[CreateSessionRequest],
                      ) -> list[CreateSessionResponse | ChatError]:
        """Each valid request's session and token, all stored in one commit; an invalid one's
        error in its place."""
        outcomes: list[CreateSessionResponse | ChatError] = []
        rows: list[tuple[SessionRecord, bytes]] = []
        for request in requests:
            try:
                user = validation.user_name(request.user)
                room = validation.room_name(request.room)
            except ChatError as exc:
                outcomes.append(exc)
                continue
            record = SessionRecord(secrets.token_hex(16), user, room, now_ms())
            if self.signer is not None:
                token = self.signer.issue(_session(record), self.ttl_ms)
            else:
                token = secrets.token_urlsafe(32)
            rows.append((record, token_hash(token)))
            outcomes.append(CreateSessionResponse(session=_session(record), token=token))
        if rows:
            await self.store.create(rows)
            before = self._created // PURGE_EVERY
            self._created += len(rows)
            if self._created // PURGE_EVERY != before:
                await self.store.purge(now_ms() - self.ttl_ms)
        return outcomes

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
            await self.store.end([message.session_id])
        return EndSessionResponse()

    @rpc.unary
    async def end_sessions(self, message: EndSessionsRequest) -> EndSessionsResponse:
        if len(message.session_ids) > MAX_BATCH_SESSIONS:
            raise BadRequest(f"at most {MAX_BATCH_SESSIONS} sessions per batch")
        ids = [session_id for session_id in message.session_ids if session_id]
        if ids:
            await self.store.end(ids)
        return EndSessionsResponse()
