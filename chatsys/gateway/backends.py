"""The gateway's calls to modules A and B: deadlines, balancing, retries and error mapping.

Every call gets one deadline (``--grpc-timeout``) and endpoints from the service's pool, round
robin. What may be retried on another endpoint depends on what a repeat could do:

- reads (authenticate, history, stat, download, health) and ending a session are retried after
  any failure that says "that endpoint is broken": connection refused or lost, UNAVAILABLE;
- writes (append, upload, create session) only when the request certainly did no work: the
  connection could not be opened, or the server refused it with UNAVAILABLE (A answers
  UNAVAILABLE only *before* queueing an append). A write whose connection broke mid-call is
  ambiguous — it may be stored — so it fails with ``unavailable`` instead of risking a
  duplicate.

Whatever goes wrong on the wire comes out as one of :mod:`chatsys.errors`' types, so the
WebSocket and HTTP layers only ever render contract errors.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

import anyio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from chatsys.chat import wire
from chatsys.errors import ChatError, Unavailable, from_grpc
from chatsys.gateway.appends import AppendQueue
from chatsys.runtime import metrics
from chatsys.runtime.grpc_clients import ChannelPool, Endpoint, NoEndpoint, parse_target
from chatsys.runtime.settings import Settings
from chatsys.stubs.chatsys.chat.v1 import chat_pb2 as pb
from chatsys.stubs.chatsys.files.v1 import (
    DownloadRequest,
    DownloadResponse,
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
MAX_ATTEMPTS = 3
UPLOAD_DEADLINE_FACTOR = 12  # an upload or download streams up to --max-file-bytes


def _status(code: int) -> Status:
    try:
        return Status(code)
    except ValueError:
        return Status.UNKNOWN


async def _append_batch_on(channel: Channel, requests: list[pb.AppendRequest],
                           seconds: float) -> pb.AppendBatchResponse:
    """``AppendBatch``, or one ``Append`` per message on an A from before it (UNIMPLEMENTED:
    during a rolling upgrade that reaches the gateways first).

    In the fallback nothing may be retried once a message may be stored, so after the first
    message every failure stays with its message (and those after it) instead of failing the
    call."""
    try:
        return await wire.APPEND_BATCH.call(channel, pb.AppendBatchRequest(appends=requests),
                                            seconds=seconds)
    except GRPCError as exc:
        if exc.status is not Status.UNIMPLEMENTED:
            raise
    deadline = anyio.current_time() + seconds
    reply = pb.AppendBatchResponse()
    for index, request in enumerate(requests):
        try:
            appended = await wire.APPEND.call(
                channel, request, seconds=max(0.001, deadline - anyio.current_time()))
        except GRPCError as exc:
            if index == 0 and _did_no_work(exc):
                raise
            _failed(reply.outcomes.add(), exc.status, exc.message)
            continue
        except WIRE_ERRORS as exc:
            if index == 0 and _did_no_work(exc):
                raise
            for _ in requests[index:]:
                _failed(reply.outcomes.add(), Status.UNAVAILABLE, str(exc))
            break
        outcome = reply.outcomes.add()
        outcome.stored.id = appended.message.id
        outcome.stored.ts = appended.message.ts
    return reply


def _failed(outcome: pb.AppendOutcome, status: Status, detail: str | None) -> None:
    outcome.failure.status = status.value
    outcome.failure.detail = detail or ""


class Retry(enum.Enum):
    UNSENT = "unsent"  # only if the request did no work (writes)
    BROKEN = "broken"  # after any failure of the endpoint (reads)


def _did_no_work(exc: BaseException) -> bool:
    """The request never reached a server, or the server refused it before doing anything."""
    if isinstance(exc, GRPCError):
        return exc.status is Status.UNAVAILABLE
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError)


def _endpoint_broken(exc: BaseException) -> bool:
    """The failure says more about the endpoint than about the request."""
    return _did_no_work(exc) or isinstance(exc, StreamTerminatedError)


def _retryable(exc: BaseException, retry: Retry) -> bool:
    return _did_no_work(exc) if retry is Retry.UNSENT else _endpoint_broken(exc)


class Backends:
    """Typed, deadline-bound calls to UserService, ChatService and FileService."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.grpc_timeout
        keepalive = settings.grpc_keepalive
        self.users = ChannelPool(parse_target(settings.users_addr), service="users",
                                 keepalive=keepalive)
        self.chat = ChannelPool(parse_target(settings.chat_addr), service="chat",
                                keepalive=keepalive)
        self.files = ChannelPool(parse_target(settings.files_addr), service="files",
                                 keepalive=keepalive)
        self.pools = (self.users, self.chat, self.files)
        self.appends = AppendQueue(self._append_batch, timeout=self.timeout)
        self.signer = signer_for(settings.auth_secret)

    async def _call(self, pool: ChannelPool, method: str,
                    call: Callable[[Channel, float], Awaitable[T]], *, retry: Retry,
                    budget: float | None = None, long_lived: bool = False) -> T:
        """``call(channel, seconds_left)`` on the next endpoint, then on others if allowed.

        ``budget`` (default ``--grpc-timeout``) is the deadline of all attempts together."""
        deadline = anyio.current_time() + (budget or self.timeout)
        tried: list[Endpoint] = []
        while True:
            try:
                endpoint, channel = pool.pick(avoid=tried, long_lived=long_lived)
            except NoEndpoint as exc:
                raise from_grpc(exc) from None
            try:
                result = await call(channel, max(0.001, deadline - anyio.current_time()))
            except WIRE_ERRORS as exc:
                metrics.record_client_failure(exc)
                if _endpoint_broken(exc):
                    pool.failed(endpoint)
                tried.append(endpoint)
                if (_retryable(exc, retry) and len(tried) < MAX_ATTEMPTS
                        and len(tried) < len(pool.endpoints)
                        and anyio.current_time() < deadline):
                    metrics.CLIENT_RETRIES.labels(pool.service, method).inc()
                    log.info("%s.%s failed on %s (%s); retrying on another endpoint",
                             pool.service, method, endpoint, type(exc).__name__)
                    continue
                raise from_grpc(exc) from None
            pool.succeeded(endpoint)
            return result

    async def _open_stream(self, pool: ChannelPool, method: str,
                           open_stream: Callable[[Channel, float], AsyncIterator[T]],
                           *, long_lived: bool = False,
                           ) -> tuple[T, AsyncIterator[T], Endpoint]:
        """Open a server stream and read its first message within the deadline, retrying on
        another endpoint like a read; returns that message, the open stream and its endpoint."""
        opened: list[Endpoint] = []

        async def first(channel: Channel, left: float) -> tuple[T, AsyncIterator[T]]:
            stream = open_stream(channel, left)
            try:
                with anyio.fail_after(left):
                    item = await anext(stream)
            except StopAsyncIteration:
                raise GRPCError(Status.INTERNAL, f"{method} ended before it started") from None
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()  # type: ignore[attr-defined]
                raise
            opened.append(pool.endpoint_of(channel))
            return item, stream

        item, stream = await self._call(pool, method, first, retry=Retry.BROKEN,
                                        long_lived=long_lived)
        return item, stream, opened[-1]

    # UserService
    async def create_session(self, user: str, room: str) -> tuple[Session, str]:
        reply = await self._call(self.users, "CreateSession", lambda ch, t: UserServiceStub(
            ch).create_session(CreateSessionRequest(user=user, room=room), timeout=t),
            retry=Retry.UNSENT)
        assert reply.session is not None
        return reply.session, reply.token

    async def authenticate(self, token: str) -> Session:
        if self.signer is not None and token.startswith(PREFIX):
            return self.signer.verify(token)  # no call to A: any replica can verify
        reply = await self._call(self.users, "Authenticate", lambda ch, t: UserServiceStub(
            ch).authenticate(AuthenticateRequest(token=token), timeout=t), retry=Retry.BROKEN)
        assert reply.session is not None
        return reply.session

    async def end_session(self, session_id: str) -> None:
        await self._call(self.users, "EndSession", lambda ch, t: UserServiceStub(ch).end_session(
            EndSessionRequest(session_id=session_id), timeout=t), retry=Retry.BROKEN)

    # ChatService: on upb messages (chatsys.chat.wire), the path every chat message takes
    async def append_text(self, session: Session, text: str) -> pb.Stored:
        request = pb.AppendRequest(room=session.room, user=session.user, session=session.id,
                                   text=text)
        return await self._append(request)

    async def append_file(self, session: Session, info: FileInfo) -> pb.Stored:
        ref = pb.FileRef(id=info.id, name=info.name, size=info.size,
                         content_type=info.content_type)
        request = pb.AppendRequest(room=session.room, user=session.user, session=session.id,
                                   file=ref)
        return await self._append(request)

    async def _append(self, request: pb.AppendRequest) -> pb.Stored:
        return await self.appends.append(request)

    async def _append_batch(self, requests: list[pb.AppendRequest],
                            ) -> list[pb.Stored | ChatError]:
        """One AppendBatch call (see :mod:`chatsys.gateway.appends`): retried, or failed, as a
        whole like one Append; each message's own failure maps like a failed call's status."""
        reply = await self._call(self.chat, "AppendBatch", lambda ch, t: _append_batch_on(
            ch, requests, t), retry=Retry.UNSENT)
        outcomes: list[pb.Stored | ChatError] = []
        for outcome in reply.outcomes:
            kind = outcome.WhichOneof("outcome")
            if kind == "stored":
                outcomes.append(outcome.stored)
            elif kind == "failure":
                failure = outcome.failure
                outcomes.append(from_grpc(GRPCError(_status(failure.status), failure.detail)))
            else:
                outcomes.append(from_grpc(GRPCError(Status.INTERNAL, "an empty outcome")))
        return outcomes

    async def history(self, room: str, since: str, limit: int) -> list[pb.Message]:
        request = pb.HistoryRequest(room=room, since=since, limit=limit)
        reply = await self._call(self.chat, "History", lambda ch, t: wire.HISTORY.call(
            ch, request, seconds=t), retry=Retry.BROKEN)
        return list(reply.messages)

    async def publish_presence(self, session: Session, joined: bool) -> None:
        event = pb.Presence.EVENT_JOIN if joined else pb.Presence.EVENT_LEAVE
        request = pb.PublishPresenceRequest(presence=pb.Presence(
            room=session.room, user=session.user, session=session.id, event=event))
        await self._call(self.chat, "PublishPresence", lambda ch, t: wire.PUBLISH_PRESENCE.call(
            ch, request, seconds=t), retry=Retry.UNSENT)

    async def subscribe(self, room: str, since: str) -> AsyncIterator[pb.RoomEvent]:
        """The room's event stream from any replica; failures surface as :class:`ChatError`.

        Only opening it has a deadline (its first event, ``subscribed``, must come in time);
        then it lives as long as the room has members. If its replica dies the stream ends
        with an error and the endpoint is ejected, so the caller's re-subscription (with
        ``since``) lands on another replica.
        """
        request = pb.SubscribeRequest(room=room, since=since)
        first, stream, endpoint = await self._open_stream(
            self.chat, "Subscribe", lambda ch, _t: wire.SUBSCRIBE.stream(ch, request),
            long_lived=True)
        async with aclosing(stream):  # type: ignore[type-var]
            try:
                yield first
                async for event in stream:
                    yield event
            except WIRE_ERRORS as exc:
                metrics.record_client_failure(exc)
                if _endpoint_broken(exc):
                    self.chat.failed(endpoint)
                raise from_grpc(exc) from None

    # FileService
    async def upload(self, meta: UploadMeta, chunks: AsyncIterable[bytes]) -> FileInfo:
        started = False

        async def requests() -> AsyncIterator[UploadRequest]:
            nonlocal started
            started = True
            yield UploadRequest(meta=meta)
            async for chunk in chunks:
                yield UploadRequest(data=chunk)

        async def call(channel: Channel, left: float) -> FileInfo:
            if started:  # the body was consumed by a failed attempt: it cannot be sent again
                raise Unavailable("the upload was interrupted, try again")
            reply = await FileServiceStub(channel).upload(requests(), timeout=left)
            assert reply.info is not None
            return reply.info

        return await self._call(self.files, "Upload", call, retry=Retry.UNSENT,
                                budget=self.timeout * UPLOAD_DEADLINE_FACTOR)

    async def stat(self, file_id: str) -> FileInfo:
        reply = await self._call(self.files, "Stat", lambda ch, t: FileServiceStub(ch).stat(
            StatRequest(id=file_id), timeout=t), retry=Retry.BROKEN)
        assert reply.info is not None
        return reply.info

    async def download(self, file_id: str) -> tuple[FileInfo, AsyncIterator[bytes]]:
        """The file's info, and an iterator over its bytes (the stream stays open until read)."""
        first, stream, _ = await self._open_stream(
            self.files, "Download", lambda ch, _t: FileServiceStub(ch).download(
                DownloadRequest(id=file_id), timeout=self.timeout * UPLOAD_DEADLINE_FACTOR))
        if first.info is None:
            await stream.aclose()  # type: ignore[attr-defined]
            raise ChatError("download did not start with file info")

        async def data(parts: AsyncIterator[DownloadResponse]) -> AsyncIterator[bytes]:
            async with aclosing(parts):  # type: ignore[type-var]
                try:
                    async for part in parts:
                        if part.data:
                            yield part.data
                except WIRE_ERRORS as exc:
                    raise from_grpc(exc) from None

        return first.info, data(stream)

    # Readiness
    async def ready(self) -> bool:
        """A and B can both serve: some endpoint of each service answers SERVING."""
        for pool in self.pools:
            if not await self._any_serving(pool):
                return False
        return True

    async def _any_serving(self, pool: ChannelPool) -> bool:
        # Imported on first use, not with this module: grpclib's health messages and grpcio's
        # (grpcio-health-checking) register the same protobuf symbols, which one process
        # refuses twice, and a process that only appends (tests, tools) must not exclude it.
        from grpclib.health.v1.health_grpc import HealthStub
        from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

        for endpoint in pool.endpoints:
            try:
                reply = await HealthStub(pool.channel(endpoint)).Check(
                    HealthCheckRequest(service=""), timeout=min(self.timeout, 2.0))
            except WIRE_ERRORS:
                continue
            if reply.status == HealthCheckResponse.SERVING:
                return True
        return False

    def close(self) -> None:
        for pool in self.pools:
            pool.close()
