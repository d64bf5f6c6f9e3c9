"""A thin ASGI layer that makes WebSocket closes and upgrade refusals behave on every server.

Two behaviours of Granian 2.8 that the gateway must not inherit:
- ``websocket.close`` waits while a ``receive()`` is pending — and Quart always has one
  pending — until the client happens to send a frame. Cancelling the pending receive first
  lets the close frame go out at once.
- An upgrade refused with a response whose body arrives in several chunks reaches the client
  as an empty 403. Buffering the body and sending it in one piece, with its length, keeps the
  status and the JSON error intact.
Both are harmless on Hypercorn, so the gateway wraps its app the same way on both servers.

Neither fix concerns data frames, and the gateway sends about twenty per chat message, so the
server's own ``send`` is left in the scope under ``SERVER_SEND`` for the writer's hot path. On
Granian, ``receive()`` returns a cancellable future: it is tracked as it is, without a task
wrapped around every frame received.

The chat handler also reads the socket itself, through the cancellable receive left in the scope
under ``SERVER_RECEIVE``: Quart's own reader would take every frame through a task step, a
signal and a queue before the handler saw it. Quart's reader is given a receive that waits until
Quart cancels it (when the handler returns), so there is one reader and it is the handler's: a
WebSocket route must read ``SERVER_RECEIVE`` to see frames or the client leaving.
"""

from __future__ import annotations

import asyncio
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
SERVER_SEND = "chatsys.server_send"
SERVER_RECEIVE = "chatsys.server_receive"


class WebSocketFixes:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        # A copy: a server may hand over a read-only mapping. receive_cancellable is bound below.
        scope = {**scope, SERVER_SEND: send}
        pending: set[asyncio.Future[Message]] = set()
        refusal_start: Message | None = None
        refusal_body: list[bytes] = []
        closed_with: int | None = None
        futures_from_server = True  # until receive() turns out to return a coroutine

        async def server_receive() -> Message:
            # Called inside the task, so a task cancelled before it starts never reaches the
            # server and never takes its receive lock.
            return await receive()  # type: ignore[no-any-return]

        async def receive_cancellable() -> Message:
            nonlocal futures_from_server
            if closed_with is None:
                future = None
                if futures_from_server:
                    awaitable = receive()
                    if asyncio.isfuture(awaitable):
                        future = awaitable
                    elif not asyncio.iscoroutine(awaitable):
                        return await awaitable  # type: ignore[no-any-return]  # already done
                    else:
                        futures_from_server = False  # a coroutine: this server needs a task
                        awaitable.close()
                if future is None:
                    future = asyncio.ensure_future(server_receive())
                pending.add(future)
                try:
                    # Our cancellation cancels the future too; the future's own cancellation
                    # (by send_fixed, on close) is what the except lets through.
                    return await future
                except asyncio.CancelledError:
                    if not future.cancelled() or closed_with is None:
                        raise
                finally:
                    pending.discard(future)
            # We closed the socket: nothing more will arrive. A reader waits here until it is
            # cancelled, so that it cannot end the handler before our close has gone out.
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def send_fixed(message: Message) -> None:
            nonlocal refusal_start, closed_with
            kind = message["type"]
            if kind == "websocket.close":
                closed_with = int(message.get("code", 1000))
                for future in list(pending):
                    future.cancel()
            elif kind == "websocket.http.response.start":
                refusal_start = message
                return
            elif kind == "websocket.http.response.body" and refusal_start is not None:
                refusal_body.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(refusal_body)
                headers = [(k, v) for k, v in refusal_start.get("headers", [])
                           if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**refusal_start, "headers": headers})
                await send({"type": kind, "body": body, "more_body": False})
                return
            await send(message)

        async def quart_receive() -> Message:
            await asyncio.Event().wait()  # until Quart cancels its reader: see the docstring
            raise AssertionError("unreachable")

        scope[SERVER_RECEIVE] = receive_cancellable
        await self.app(scope, quart_receive, send_fixed)
