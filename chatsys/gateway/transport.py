"""The gateway's raw WebSocket I/O, on Granian and Hypercorn alike: accept, read, write, close,
and the refusal of an upgrade.

The chat socket is served here without Quart: :class:`WebSocketTransport` hands an upgrade to
a path it routes (``/ws/chat``) straight to its handler with a :class:`ServerSocket`; Quart
serves HTTP, and any other upgrade (which it refuses: no such route). Quart's WebSocket
dispatch (request and app contexts, its reader task, its send checks) cost a join more than
the routing it did. The socket talks ASGI to the server directly, for speed:

- Reading: the handler takes events straight from the server's ``receive``, in its own task;
  it is also the one that sees the client leave.
- Writing, the hottest path of the gateway (one frame per member per message): no forced
  ``sleep(0)``, acceptance check or ``websocket_sent`` signal per frame, as Quart's
  ``websocket.send`` adds. Where the server's ``send`` hands back futures (Granian), frames go
  out from the completion callbacks (:class:`_CallbackWriter`), one in flight at a time, with
  no task step per frame; each completion is a separate loop callback, so no socket holds the
  loop. Elsewhere (Hypercorn: coroutines) a writer loop awaits each send and yields to the loop
  every ``WRITE_BURST`` frames so one busy socket cannot hold it.

Each server behaviour worked around here is named by a class below, with the versions it was
seen in (:data:`QUIRKS`); the fixes are harmless elsewhere, so they apply on both servers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from chatsys.gateway.connection import WS_1006_NO_CLOSE_FRAME, WS_1011_INTERNAL_ERROR, Connection

log = logging.getLogger("chatsys.gateway.transport")
Scope = dict[str, Any]
Message = dict[str, Any]
ServerSend = Callable[[Message], Awaitable[None]]
ServerReceive = Callable[[], Awaitable[Message]]
SocketHandler = Callable[[Scope, "ServerSocket"], Awaitable[None]]
WRITE_BURST = 64


class CloseWaitsOnPendingReceive:
    """Granian 2.8: ``websocket.close`` waits while a ``receive()`` is pending until the client
    happens to send a frame. Fix: closing cancels the pending receive first (Granian's receive
    hands back a cancellable future), and a reader that comes after the close waits until it is
    cancelled, so that it cannot end the handler before the close has gone out."""

    SERVER, SEEN_IN = "granian", "2.8"


class ChunkedRefusalIsEmpty403:
    """Granian 2.8: an upgrade refused with a response whose body comes in several chunks (as
    Quart sends it) reaches the client as an empty 403. Fix: the body is buffered and sent in
    one piece, with its ``content-length``, so the status and the JSON error arrive intact."""

    SERVER, SEEN_IN = "granian", "2.8"


QUIRKS = (CloseWaitsOnPendingReceive, ChunkedRefusalIsEmpty403)


class WebSocketTransport:
    """The gateway's ASGI app: upgrades to a routed path go to their handler with a
    :class:`ServerSocket`; everything else to ``app`` (Quart), whose refusals of other
    upgrades go out through a :class:`ServerSocket` too (:class:`ChunkedRefusalIsEmpty403`)."""

    def __init__(self, app: Any, routes: Mapping[str, SocketHandler]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: ServerReceive, send: ServerSend) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        socket = ServerSocket(receive, send)
        handler = self.routes.get(scope["path"])
        if handler is None:
            await self.app(scope, receive, socket.send_from_app)
            return
        try:
            await handler(scope, socket)
        except Exception:
            # One failed socket is this socket's end, not the server's: the client gets 1011
            # (or a 500 if it was not accepted yet), the traceback goes to the log.
            log.exception("the handler of %s failed", scope["path"])
            if socket.accepted:
                await socket.close(WS_1011_INTERNAL_ERROR)
            else:
                await socket.refuse(500, {"content-type": "application/json"},
                                    b'{"error":{"code":"internal","message":"internal error"}}')


class ServerSocket:
    """One WebSocket, in ASGI terms, between the server and the chat handler."""

    def __init__(self, receive: ServerReceive, send: ServerSend) -> None:
        self._from_server = receive
        self._to_server = send
        self.accepted = False
        self.closed = False
        self._sends_futures = False  # learnt from the accept: the server's send is a future
        self._receiving: asyncio.Future[Message] | None = None  # CloseWaitsOnPendingReceive
        self._refusal_start: Message | None = None  # ChunkedRefusalIsEmpty403
        self._refusal_body: list[bytes] = []

    async def accept(self) -> None:
        sent = self._to_server({"type": "websocket.accept", "subprotocol": None, "headers": []})
        self._sends_futures = asyncio.isfuture(sent)
        self.accepted = True
        await sent

    async def receive(self) -> str | bytes | None:
        """The next text or binary frame from the client; None once the client has gone."""
        while True:
            if self.closed:  # CloseWaitsOnPendingReceive: nothing more will arrive
                await asyncio.Event().wait()
            pending = self._from_server()
            if asyncio.isfuture(pending):
                self._receiving = pending
                try:
                    event = await pending
                except asyncio.CancelledError:
                    # Swallowed only when our close cancelled the receive, not our task.
                    task = asyncio.current_task()
                    if not self.closed or task is None or task.cancelling():
                        raise
                    continue
                finally:
                    self._receiving = None
            else:
                event = await pending
            kind = event["type"]
            if kind == "websocket.receive":
                text = event.get("text")
                return text if text is not None else (event.get("bytes") or b"")
            if kind == "websocket.disconnect":
                return None
            # websocket.connect, which no one else reads

    async def send_text(self, frame: str) -> None:
        await self._send_frame(frame)

    async def write(self, conn: Connection) -> None:
        """Send ``conn``'s frames as they are offered, until cancelled; raises what a send
        failed with."""
        if self._sends_futures:
            await _CallbackWriter(conn, self._send_frame).run()
            return
        burst = 0
        send_text = self._send_frame
        while (frame := await conn.next_frame()) is not None:
            await send_text(frame)
            burst += 1
            if burst >= WRITE_BURST:
                burst = 0
                await asyncio.sleep(0)

    def _send_frame(self, frame: str) -> Awaitable[None]:
        """The server's send of one text frame: a future on Granian, a coroutine elsewhere."""
        return self._to_server({"type": "websocket.send", "bytes": None, "text": frame})

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code``; nothing is sent for 1006 (the client is gone) or twice."""
        if self.closed or code == WS_1006_NO_CLOSE_FRAME:
            return
        self.closed = True
        if self._receiving is not None:
            self._receiving.cancel()  # CloseWaitsOnPendingReceive
        await self._to_server({"type": "websocket.close", "code": code, "reason": reason})

    async def refuse(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Refuse the upgrade with an HTTP response, in one piece (ChunkedRefusalIsEmpty403)."""
        await self._to_server({"type": "websocket.http.response.start", "status": status,
                               "headers": [(k.encode(), v.encode()) for k, v in headers.items()]
                               + [(b"content-length", str(len(body)).encode())]})
        await self._to_server({"type": "websocket.http.response.body", "body": body,
                               "more_body": False})

    async def send_from_app(self, message: Message) -> None:
        """What Quart sends: an upgrade refusal, or (its handler having failed after the
        socket was accepted) an error response that can only become a close."""
        kind = message["type"]
        if kind == "websocket.close":
            await self.close(int(message.get("code", 1000)), message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            if self.accepted:
                await self.close(WS_1011_INTERNAL_ERROR)
            else:
                self._refusal_start = message
        elif kind == "websocket.http.response.body":
            if self._refusal_start is not None:
                await self._refuse(message)
        else:
            if kind == "websocket.accept":
                self.accepted = True
            await self._to_server(message)

    async def _refuse(self, body: Message) -> None:
        """ChunkedRefusalIsEmpty403: the refusal goes out in one piece, with its length."""
        self._refusal_body.append(body.get("body", b""))
        if body.get("more_body", False):
            return
        assert self._refusal_start is not None
        data = b"".join(self._refusal_body)
        headers = [(k, v) for k, v in self._refusal_start.get("headers", [])
                   if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(data)).encode()))
        await self._to_server({**self._refusal_start, "headers": headers})
        await self._to_server({"type": "websocket.http.response.body", "body": data,
                               "more_body": False})


class _CallbackWriter:
    """Writes a connection from the completion callbacks of a server send that hands back
    futures: the next frame goes out when the previous one is written, or on ``offer`` when
    none is in flight. A send that hands back some other awaitable (Granian's answer on a
    closing socket) is awaited by :meth:`run`, in the writer's own task, before the next."""

    def __init__(self, conn: Connection, send: Callable[[str], Awaitable[None]]) -> None:
        self.conn = conn
        self.send = send
        self.stopped = False
        self.in_flight = False
        self.pumping = False  # _pump is on the stack: a send that completes at once calls back
        self.loop = asyncio.get_running_loop()
        # Resolved with an awaitable that is no future, for run() to await, or with the error
        # a send failed with.
        self.handover: asyncio.Future[Awaitable[None]] = self.loop.create_future()

    async def run(self) -> None:
        """Write until cancelled; returns only by raising what a send failed with."""
        self.conn.on_offer(self._pump)
        try:
            self._pump()
            while True:
                awaitable = await self.handover
                self.handover = self.loop.create_future()
                await awaitable
                self.in_flight = False
                self._pump()
        finally:
            self.stopped = True
            self.conn.on_offer(None)

    def _pump(self) -> None:
        if self.pumping:
            return
        self.pumping = True
        try:
            while not self.in_flight and not self.stopped \
                    and (frame := self.conn.pop()) is not None:
                try:
                    sent = self.send(frame)
                except Exception as exc:  # this socket fails alone, not the fan-out's loop
                    self._fail(exc)
                    return
                self.in_flight = True
                try:
                    sent.add_done_callback(self._sent)  # type: ignore[attr-defined]
                except AttributeError:
                    # Not a future (asking first, with asyncio.isfuture, cost more on the
                    # hot path than this rare miss): run() awaits it.
                    self._hand_over(sent)
        finally:
            self.pumping = False

    def _sent(self, sent: asyncio.Future[None]) -> None:
        self.in_flight = False
        if not sent.cancelled() and (exc := sent.exception()) is not None:
            self._fail(exc)
            return
        self._pump()

    def _hand_over(self, awaitable: Awaitable[None]) -> None:
        if not self.handover.done():
            self.handover.set_result(awaitable)

    def _fail(self, exc: BaseException) -> None:
        if self.stopped:  # run() has returned: no one would retrieve the error
            return
        self.stopped = True
        if not self.handover.done():
            self.handover.set_exception(exc)
