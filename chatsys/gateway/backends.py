"""The gateway's calls to modules A and B: deadlines, balancing and error mapping in one place.

Every call gets the configured deadline and a channel from the service's pool; whatever goes
wrong on the wire comes out as one of :mod:`chatsys.errors`' types, so the WebSocket and HTTP
layers only ever render contract errors.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from chatsys.errors import ChatError, from_grpc
from chatsys.runtime import metrics
from chatsys.runtime.grpc_clients import ChannelPool, parse_target
from chatsys.runtime.settings import Settings
from chatsys.stubs.chatsys.chat.v1 import (
    AppendRequest,
    ChatServiceStub,
    FileRef,
    HistoryRequest,
    Message,
    Presence,
    PresenceEvent,
    PublishPresenceRequest,
    RoomEvent,
    SubscribeRequest,
)
from chatsys.stubs.chatsys.files.v1 import (
    DownloadRequest,
    FileInfo,
    FileServiceStub,
    StatRequest,
    UploadMeta,
    UploadRequest,
)
from chatsys.stubs.chatsys.users.v1 import (
    AuthenticateRequest,
    CreateSessionRequest,
    EndSessionRequest,
    Session,
    UserServiceStub,
)
from chatsys.tokens import PREFIX, signer_for

log = logging.getLogger("chatsys.gateway.backends")
T = TypeVar("T")
WIRE_ERRORS = (GRPCError, StreamTerminatedError, OSError, TimeoutError)


class Backends:
    """Typed, deadline-bound calls to UserService, ChatService and FileService."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.grpc_timeout
        self.users = ChannelPool(parse_target(settings.users_addr))
        self.chat = ChannelPool(parse_target(settings.chat_addr))
        self.files = ChannelPool(parse_target(settings.files_addr))
        self.pools = (self.users, self.chat, self.files)
        self.signer = signer_for(settings.auth_secret)

    async def _call(self, pool: ChannelPool, call: Callable[[Channel], Awaitable[T]],
                    *, retry: bool = False) -> T:
        """One call on the next endpoint; a read that could not connect tries one other."""
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            try:
                channel = pool.pick()
            except ConnectionRefusedError as exc:
                raise from_grpc(exc) from None
            try:
                return await call(channel)
            except WIRE_ERRORS as exc:
                metrics.record_client_failure(exc)
                if not isinstance(exc, GRPCError):
                    pool.failed(channel)
                    if attempt + 1 < attempts:
                        continue
                raise from_grpc(exc) from None
        raise AssertionError("unreachable")

    # UserService
    async def create_session(self, user: str, room: str) -> tuple[Session, str]:
        reply = await self._call(self.users, lambda ch: UserServiceStub(ch).create_session(
            CreateSessionRequest(user=user, room=room), timeout=self.timeout))
        assert reply.session is not None
        return reply.session, reply.token

    async def authenticate(self, token: str) -> Session:
        if self.signer is not None and token.startswith(PREFIX):
            return self.signer.verify(token)  # no call to A: any replica can verify
        reply = await self._call(self.users, lambda ch: UserServiceStub(ch).authenticate(
            AuthenticateRequest(token=token), timeout=self.timeout), retry=True)
        assert reply.session is not None
        return reply.session

    async def end_session(self, session_id: str) -> None:
        await self._call(self.users, lambda ch: UserServiceStub(ch).end_session(
            EndSessionRequest(session_id=session_id), timeout=self.timeout), retry=True)

    # ChatService
    async def append_text(self, session: Session, text: str) -> Message:
        request = AppendRequest(room=session.room, user=session.user, session=session.id,
                                text=text)
        return await self._append(request)

    async def append_file(self, session: Session, info: FileInfo) -> Message:
        ref = FileRef(id=info.id, name=info.name, size=info.size, content_type=info.content_type)
        request = AppendRequest(room=session.room, user=session.user, session=session.id,
                                file=ref)
        return await self._append(request)

    async def _append(self, request: AppendRequest) -> Message:
        reply = await self._call(self.chat, lambda ch: ChatServiceStub(ch).append(
            request, timeout=self.timeout))
        assert reply.message is not None
        return reply.message

    async def history(self, room: str, since: str, limit: int) -> list[Message]:
        reply = await self._call(self.chat, lambda ch: ChatServiceStub(ch).history(
            HistoryRequest(room=room, since=since, limit=limit), timeout=self.timeout),
            retry=True)
        return list(reply.messages)

    async def publish_presence(self, session: Session, joined: bool) -> None:
        event = PresenceEvent.JOIN if joined else PresenceEvent.LEAVE
        presence = Presence(room=session.room, user=session.user, session=session.id, event=event)
        await self._call(self.chat, lambda ch: ChatServiceStub(ch).publish_presence(
            PublishPresenceRequest(presence=presence), timeout=self.timeout))

    async def subscribe(self, room: str, since: str) -> AsyncIterator[RoomEvent]:
        """The room's event stream; wire failures surface as :class:`ChatError`."""
        try:
            channel = self.chat.pick()
        except ConnectionRefusedError as exc:
            raise from_grpc(exc) from None
        try:
            async for event in ChatServiceStub(channel).subscribe(
                    SubscribeRequest(room=room, since=since)):
                yield event
        except WIRE_ERRORS as exc:
            if not isinstance(exc, GRPCError):
                self.chat.failed(channel)
            raise from_grpc(exc) from None

    # FileService
    async def upload(self, meta: UploadMeta, chunks: AsyncIterable[bytes]) -> FileInfo:
        async def requests() -> AsyncIterator[UploadRequest]:
            yield UploadRequest(meta=meta)
            async for chunk in chunks:
                yield UploadRequest(data=chunk)

        reply = await self._call(self.files, lambda ch: FileServiceStub(ch).upload(
            requests(), timeout=self.timeout * 12))
        assert reply.info is not None
        return reply.info

    async def stat(self, file_id: str) -> FileInfo:
        reply = await self._call(self.files, lambda ch: FileServiceStub(ch).stat(
            StatRequest(id=file_id), timeout=self.timeout), retry=True)
        assert reply.info is not None
        return reply.info

    async def download(self, file_id: str) -> tuple[FileInfo, AsyncIterator[bytes]]:
        """The file's info, and an iterator over its bytes (the stream stays open until read)."""
        channel = self.files.pick()
        stream = FileServiceStub(channel).download(DownloadRequest(id=file_id),
                                                   timeout=self.timeout * 12)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            raise from_grpc(GRPCError(Status.INTERNAL, "empty download")) from None
        except WIRE_ERRORS as exc:
            raise from_grpc(exc) from None
        if first.info is None:
            await stream.aclose()
            raise ChatError("download did not start with file info")

        async def data() -> AsyncIterator[bytes]:
            try:
                async for part in stream:
                    if part.data:
                        yield part.data
            except WIRE_ERRORS as exc:
                raise from_grpc(exc) from None
            finally:
                await stream.aclose()

        return first.info, data()

    # Readiness
    async def ready(self) -> bool:
        """A and B both answer health checks with SERVING."""
        for pool in (self.users, self.chat, self.files):
            try:
                channel = pool.pick()
                reply = await HealthStub(channel).Check(HealthCheckRequest(service=""),
                                                        timeout=min(self.timeout, 2.0))
            except (*WIRE_ERRORS, ConnectionRefusedError):
                return False
            if reply.status != HealthCheckResponse.SERVING:
                return False
        return True

    def close(self) -> None:
        for pool in self.pools:
            pool.close()
