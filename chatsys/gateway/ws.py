"""The chat WebSocket protocol: join, welcome, then one reader and one writer per connection.

The reader validates each frame and calls A; the writer drains the connection's outbox, which
the fan-out and the reader fill. Neither creates a task per message. The socket itself (accept,
read, write, close, refusal) is :mod:`chatsys.gateway.transport`'s, which routes the upgrade
here (:func:`routes`) without Quart.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable
from contextlib import suppress
from typing import TypeVar
from urllib.parse import parse_qsl

import anyio
from prometheus_client import Counter, Histogram

from chatsys import validation
from chatsys.errors import BadRequest, ChatError, Internal, NotFound, RateLimited, Unavailable
from chatsys.gateway import frames
from chatsys.gateway import metrics as m
from chatsys.gateway.connection import (
    WS_1006_NO_CLOSE_FRAME,
    WS_1008_POLICY_VIOLATION,
    WS_1009_MESSAGE_TOO_BIG,
    Connection,
)
from chatsys.gateway.ratelimit import TokenBucket
from chatsys.gateway.responses import error_parts
from chatsys.gateway.state import Gateway
from chatsys.gateway.transport import Scope, ServerSocket, SocketHandler
from chatsys.stubs.chatsys.users.v1.users_pb2 import Session

log = logging.getLogger("chatsys.gateway.ws")
PATH = "/ws/chat"
CLOSE_TIMEOUT = 2.0
T = TypeVar("T")
# Labelled children looked up once: ``labels()`` costs more than the observation.
_STAGE = {stage: m.WS_CONNECT_STAGE_SECONDS.labels(stage) for stage in m.WS_CONNECT_STAGES}
_REFUSED = {reason: m.WS_REFUSED.labels(reason) for reason in m.WS_REFUSAL_REASONS}


def routes(gateway: Gateway) -> dict[str, SocketHandler]:
    """The WebSocket paths this module serves, for :class:`~chatsys.gateway.transport.
    WebSocketTransport`."""
    return {PATH: functools.partial(chat_socket, gateway)}


async def chat_socket(gateway: Gateway, scope: Scope, sock: ServerSocket) -> None:
    started = time.perf_counter()
    # The first value of each parameter, as UTF-8; an invalid byte becomes U+FFFD, which no
    # name or id admits, so it is refused as a bad request.
    args: dict[str, str] = {}
    for key, value in parse_qsl(scope["query_string"].decode("utf-8", "replace"),
                                keep_blank_values=True, errors="replace"):
        args.setdefault(key, value)
    try:
        user = validation.user_name(args.get("user"))
        room = validation.room_name(args.get("room"))
        since = validation.message_id(args.get("since"))
    except ChatError as exc:
        await _refuse(sock, exc)
        return
    if (refusal := _refusal(gateway)) is not None:
        await _refuse(sock, refusal)
        return
    gateway.acquire_socket()
    try:
        await _join_and_serve(gateway, sock, user, room, since, started)
    finally:
        gateway.release_socket()


async def _refuse(sock: ServerSocket, exc: ChatError) -> None:
    await sock.refuse(*error_parts(exc))


def _refusal(gateway: Gateway) -> ChatError | None:
    """The 503 for an upgrade this gateway cannot take now, before any call to A."""
    settings = gateway.settings
    if gateway.draining:
        reason, message = "draining", "gateway is shutting down, reconnect shortly"
    elif gateway.sockets >= settings.max_connections:
        reason, message = "max_connections", "gateway is at its connection limit"
    elif gateway.pending_joins >= settings.max_pending_joins:
        # A join storm: joins beyond the bound would only queue at A until they all time out.
        reason, message = "max_pending_joins", "too many joins in progress, retry"
    else:
        return None
    _REFUSED[reason].inc()
    return Unavailable(message)


async def _join_and_serve(gateway: Gateway, sock: ServerSocket, user: str, room: str,
                          since: str, started: float) -> None:
    conn = Connection(user=user, room=room, queue_limit=gateway.settings.send_queue)
    with gateway.pending_join():
        _STAGE["validate"].observe(time.perf_counter() - started)
        try:
            session, token, history = await _open(gateway, conn, since)
        except ChatError as exc:
            await _refuse(sock, exc)
            return
        try:
            await _timed("accept", sock.accept())
        except BaseException:
            await _leave(gateway, conn, session, announce=True)
            raise
    try:
        begun = time.perf_counter()
        await sock.send_text(frames.welcome(session.id, token, user, room, history))
        welcomed = time.perf_counter()
        _STAGE["welcome"].observe(welcomed - begun)
        m.WS_CONNECT_SECONDS.observe(welcomed - started)
        m.WS_CONNECTIONS.inc()
        try:
            with suppress(ChatError):  # the join goes on without its announcement
                await _timed("presence", gateway.chat.publish_presence(session, joined=True))
            # The writer may be stuck on a client that stopped reading, the reader on one that
            # stopped sending: a close request from anywhere cancels both.
            async with anyio.create_task_group() as tg:
                tg.start_soon(sock.write, conn)
                tg.start_soon(_read, gateway, conn, session, sock)
                await conn.wait_closing()
                tg.cancel_scope.cancel()
        finally:
            m.WS_CONNECTIONS.dec()
    finally:
        await _leave(gateway, conn, session, announce=True)
    if conn.close_code is not None and conn.close_code != WS_1006_NO_CLOSE_FRAME:
        m.WS_CLOSES.labels(str(conn.close_code)).inc()
        with anyio.move_on_after(CLOSE_TIMEOUT):
            await sock.close(conn.close_code, conn.close_reason)


async def _open(gateway: Gateway, conn: Connection,
                since: str) -> tuple[Session, str, list[str]]:
    """Create the session at A and enter the room side by side: one round trip, not two.

    Returns the session, its token and the welcome's history; raises the ChatError to refuse
    the upgrade with, leaving nothing behind. A failed session stops the join and takes
    ``conn`` out of the room; a failed join waits for the session (state at A that only this
    gateway would end) and ends it. Cancelled, it undoes whichever half was done.
    """
    created: tuple[Session, str] | None = None
    session_failed: ChatError | None = None
    join_failed: ChatError | None = None
    history: list[str] = []

    async def create_session() -> None:
        nonlocal created, session_failed
        try:
            created = await _timed("session", gateway.users.create_session(conn.user, conn.room))
        except ChatError as exc:
            session_failed = exc
            # Shared scope: the join, in the host task, is of no use without a session.
            tg.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(create_session)
            try:
                history = await _enter(gateway, conn, since)
            except ChatError as exc:
                join_failed = exc
    except BaseException:
        gateway.hub.leave(conn)
        if created is not None:
            await _end_session(gateway, created[0], announce=False)
        raise
    if session_failed is not None:
        gateway.hub.leave(conn)
        raise session_failed
    assert created is not None  # the task group waited for create_session
    session, token = created
    if join_failed is not None:
        gateway.hub.leave(conn)
        await _end_session(gateway, session, announce=False)
        raise join_failed
    conn.session = session.id
    return session, token, history


async def _enter(gateway: Gateway, conn: Connection, since: str) -> list[str]:
    """Join ``conn``'s room; the welcome's history: the newest, or all after ``since``."""
    history = await _timed("room_join", gateway.hub.join(conn))
    if since:
        # Resuming: everything after `since` that A keeps, not just the newest.
        known = conn.watermark
        missed = await _timed("history", gateway.chat.history(conn.room, since, 0))
        history = [frames.message(msg) for msg in missed]
        conn.watermark = missed[-1].id if missed else (min(since, known) if known else None)
    return history


async def _timed(stage: str, step: Awaitable[T]) -> T:
    """Await one stage of a join; its duration is observed if it ended without raising."""
    begun = time.perf_counter()
    result = await step
    _STAGE[stage].observe(time.perf_counter() - begun)
    return result


async def _leave(gateway: Gateway, conn: Connection, session: Session, *,
                 announce: bool) -> None:
    gateway.hub.leave(conn)
    await _end_session(gateway, session, announce=announce)


async def _end_session(gateway: Gateway, session: Session, *, announce: bool) -> None:
    """Best effort, shielded: a leaving client must not wait on, or be cancelled by, A."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(gateway.settings.grpc_timeout):
        with suppress(ChatError):
            if announce:
                await gateway.chat.publish_presence(session, joined=False)
        with suppress(ChatError):
            await gateway.users.end_session(session.id)


def _too_big(data: str | bytes, limit: int) -> bool:
    if len(data) > limit:
        return True
    return isinstance(data, str) and len(data) * 4 > limit and len(data.encode()) > limit


async def _read(gateway: Gateway, conn: Connection, session: Session,
                sock: ServerSocket) -> None:
    settings = gateway.settings
    bucket = TokenBucket(settings.rate_limit, settings.rate_burst)
    garbage = 0
    while conn.close_code is None:
        data = await sock.receive()
        if data is None:
            conn.request_close(WS_1006_NO_CLOSE_FRAME, "the client went away")
            return
        if _too_big(data, settings.max_frame_bytes):
            conn.request_close(WS_1009_MESSAGE_TOO_BIG, "frame too big")
            return
        try:
            frame = frames.parse(data, max_text_chars=settings.max_text_chars)
        except frames.FrameError as exc:
            _send_error(conn, exc.ref, exc)
            # Only malformed frames are garbage (docs/protocol.md): a well-formed text over
            # the length limit is refused with too_large and ends a run of bad ones.
            garbage = garbage + 1 if exc.code == BadRequest.code else 0
            if garbage >= settings.garbage_limit:
                conn.request_close(WS_1008_POLICY_VIOLATION, "too many bad frames")
                return
            continue
        garbage = 0
        if isinstance(frame, frames.PingFrame):
            conn.offer(frames.pong(frame.ref))
            continue
        # The limit is on processing, not arrival (docs/protocol.md, "Rate limit"): a frame is
        # charged when it is taken up here, and the next one is read only once this one is
        # answered, so a flood waits in the socket (backpressure) while A is slow and the
        # bucket bounds the messages a connection gets stored: burst + rate x elapsed.
        if not bucket.take():
            _send_error(conn, frame.ref, RateLimited("slow down: too many messages"))
            continue
        await _post(gateway, conn, session, frame)


async def _post(gateway: Gateway, conn: Connection, session: Session,
                frame: frames.TextFrame | frames.FileFrame) -> None:
    kind = "text" if isinstance(frame, frames.TextFrame) else "file"
    started = time.perf_counter()
    try:
        if isinstance(frame, frames.TextFrame):
            message = await gateway.chat.append_text(session, frame.text)
        else:
            info = await gateway.files.stat(frame.file_id)
            if info.room != session.room:
                raise NotFound("no such file in this room")
            message = await gateway.chat.append_file(session, info)
    except ChatError as exc:
        _send_error(conn, frame.ref, exc)
        return
    except Exception:
        log.exception("posting a %s message failed", kind)
        _send_error(conn, frame.ref, Internal("internal error"))
        return
    conn.offer(frames.ack(frame.ref, message))
    count, ack_seconds = _message_metrics(kind)
    count.inc()
    ack_seconds.observe(time.perf_counter() - started)


@functools.cache
def _message_metrics(kind: str) -> tuple[Counter, Histogram]:
    """Labelled children looked up once: ``labels()`` costs more than the increment."""
    return m.MESSAGES.labels(kind), m.MESSAGE_ACK_SECONDS.labels(kind)


def _send_error(conn: Connection, ref: str | None, exc: ChatError) -> None:
    m.WS_ERRORS.labels(exc.code).inc()
    conn.offer(frames.error(ref, exc))
