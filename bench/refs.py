"""Bare in-memory reference servers speaking the subset of the chat protocol the bench uses.

``GET /ws/chat?user=U&room=R`` → a welcome with ``history: []``; a ``text`` frame → an ``ack`` to
the sender and a ``message`` to every member of the room, sender included; ``ping`` → ``pong``.
No gRPC, no storage, no validation beyond what the bench needs, no presence: what is left is
the cost of the WebSocket server itself, which is what chatsys is measured against.

- ``websockets``: the ``websockets`` library's asyncio server, fanning out with its
  ``broadcast`` (writes without awaiting each socket) — the best case for Python.
- ``granian`` / ``hypercorn``: the same naive chat as a Quart app (one outbox queue and one
  writer task per socket, like the gateway) served by Granian (ASGI, embedded as the gateway
  embeds it) or by Hypercorn. These isolate what Quart and the server cost from what chatsys's
  own logic, gRPC and SQLite cost.
- ``asgi-granian``: the same chat as a bare ASGI callable (no framework) on Granian: the most
  any app served by Granian can do on this machine, since every frame Granian sends costs a
  hand-off to its Rust runtime and back. ``asgi-hypercorn``: the same on Hypercorn (not in the
  runner's default set; name it with ``--targets``).

``python -m bench.refs websockets|granian|hypercorn|asgi-granian|asgi-hypercorn --port PORT``
(``--port 0 --ready-file PATH``: any free port, written to PATH once listening)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import secrets
import signal
import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from chatsys.runtime import ready

BACKLOG = 4096
_ids = itertools.count(1)


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def welcome(user: str, room: str) -> tuple[str, str]:
    session = secrets.token_hex(8)
    return session, _dumps({"type": "welcome", "session": session,
                            "token": secrets.token_urlsafe(24), "user": user, "room": room,
                            "history": []})


def handle_frame(data: str | bytes, user: str, room: str, session: str,
                 ) -> tuple[str | None, str | None]:
    """(reply to the sender, frame for the whole room) for one client frame."""
    try:
        frame = json.loads(data)
        kind = frame.get("type")
    except (ValueError, AttributeError):
        return _dumps({"type": "error", "ref": None, "code": "bad_request",
                       "message": "bad frame"}), None
    ref = frame.get("ref")
    if kind == "ping":
        return _dumps({"type": "pong", "ref": ref}), None
    if kind == "text" and isinstance(frame.get("text"), str):
        message_id = f"{next(_ids):016d}"
        ts = time.time_ns() // 1_000_000
        ack = _dumps({"type": "ack", "ref": ref, "id": message_id, "ts": ts})
        message = _dumps({"type": "message", "id": message_id, "room": room, "user": user,
                          "session": session, "ts": ts, "kind": "text", "text": frame["text"]})
        return ack, message
    return _dumps({"type": "error", "ref": ref, "code": "bad_request",
                   "message": "unsupported frame"}), None


# --- websockets ------------------------------------------------------------------------------

def _listening(port: int) -> socket.socket:
    """Bound here, so ``--port 0`` works and the port is known before anyone connects."""
    sock = socket.create_server(("127.0.0.1", port), backlog=BACKLOG)
    sock.setblocking(False)
    return sock


async def serve_websockets(port: int, ready_file: str) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    rooms: defaultdict[str, set[ServerConnection]] = defaultdict(set)

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        user, room = query.get("user", ["?"])[0], query.get("room", ["?"])[0]
        session, hello = welcome(user, room)
        await ws.send(hello)
        members = rooms[room]
        members.add(ws)
        try:
            async for data in ws:
                reply, fanout = handle_frame(data, user, room, session)
                if reply is not None:
                    await ws.send(reply)
                if fanout is not None:
                    broadcast(members, fanout)
        finally:
            members.discard(ws)
            if not members:
                rooms.pop(room, None)

    sock = _listening(port)
    async with serve(handler, sock=sock, compression=None, max_size=1 << 16) as server:
        ready.write(ready_file, ready.Ports(sock.getsockname()[1]))
        await _until_signal()
        server.close()


# --- Quart on Granian / Hypercorn -------------------------------------------------------------

class Rooms:
    """Room membership of the references with one outbox queue per socket (Quart, bare ASGI)."""

    def __init__(self) -> None:
        self._rooms: defaultdict[str, set[asyncio.Queue[str]]] = defaultdict(set)

    @contextlib.contextmanager
    def member(self, room: str) -> Iterator[asyncio.Queue[str]]:
        outbox: asyncio.Queue[str] = asyncio.Queue()
        members = self._rooms[room]
        members.add(outbox)
        try:
            yield outbox
        finally:
            members.discard(outbox)
            if not members:
                self._rooms.pop(room, None)

    def received(self, data: str | bytes, outbox: asyncio.Queue[str], user: str, room: str,
                 session: str) -> None:
        reply, fanout = handle_frame(data, user, room, session)
        if reply is not None:
            outbox.put_nowait(reply)
        if fanout is not None:
            for member in self._rooms[room]:
                member.put_nowait(fanout)


def quart_app() -> Any:
    from quart import Quart, websocket

    app = Quart("bench.refs")
    rooms = Rooms()

    @app.websocket("/ws/chat")
    async def chat() -> None:
        user, room = websocket.args.get("user", "?"), websocket.args.get("room", "?")
        session, hello = welcome(user, room)
        await websocket.accept()
        await websocket.send(hello)

        async def write(outbox: asyncio.Queue[str]) -> None:
            while True:
                await websocket.send(await outbox.get())

        with rooms.member(room) as outbox:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(write(outbox))
                while True:
                    rooms.received(await websocket.receive(), outbox, user, room, session)

    return app


def asgi_app() -> Any:
    """The same naive chat as bare ASGI, no framework: what the server alone costs."""
    rooms = Rooms()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        query = parse_qs(scope.get("query_string", b"").decode())
        user, room = query.get("user", ["?"])[0], query.get("room", ["?"])[0]
        session, hello = welcome(user, room)
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": hello})

        async def write(outbox: asyncio.Queue[str]) -> None:
            while True:
                await send({"type": "websocket.send", "text": await outbox.get()})

        with rooms.member(room) as outbox:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(write(outbox))
                try:
                    while (event := await receive())["type"] == "websocket.receive":
                        data = event.get("text") or event.get("bytes") or ""
                        rooms.received(data, outbox, user, room, session)
                finally:
                    writer.cancel()

    return app


async def serve_asgi_granian(port: int, ready_file: str) -> None:
    await serve_granian(port, ready_file, asgi_app())


async def serve_granian(port: int, ready_file: str, app: Any = None) -> None:
    from granian.constants import Interfaces
    from granian.server.embed import Server

    from chatsys.gateway.servers import listening_port_since, own_socket_inodes

    server = Server(app or quart_app(), address="127.0.0.1", port=port, interface=Interfaces.ASGINL,
                    log_enabled=False, backlog=BACKLOG, websockets=True)
    before = own_socket_inodes()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(server.serve())
        # Granian cannot serve a socket bound here: read the port it got from the kernel.
        ready.write(ready_file, ready.Ports(port or await listening_port_since(before)))
        await _until_signal()
        server.stop()


async def serve_asgi_hypercorn(port: int, ready_file: str) -> None:
    await serve_hypercorn(port, ready_file, asgi_app())


async def serve_hypercorn(port: int, ready_file: str, app: Any = None) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    sock = _listening(port)
    config.bind = [f"fd://{sock.fileno()}"]
    config.backlog = BACKLOG
    config.accesslog = None
    config.graceful_timeout = 0.5
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(serve(app or quart_app(), config,  # type: ignore[arg-type]
                             shutdown_trigger=stop.wait))
        ready.write(ready_file, ready.Ports(sock.getsockname()[1]))
        await _until_signal()
        stop.set()


async def _until_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


SERVERS = {"websockets": serve_websockets, "granian": serve_granian,
           "asgi-granian": serve_asgi_granian, "asgi-hypercorn": serve_asgi_hypercorn,
           "hypercorn": serve_hypercorn}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.refs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", choices=sorted(SERVERS))
    parser.add_argument("--port", type=int, default=8090, help="0: any free port")
    parser.add_argument("--ready-file", default="",
                        help="once listening, write the port there (chatsys.runtime.ready)")
    args = parser.parse_args(argv)
    from bench.common import raise_nofile

    raise_nofile(65536)
    coro = SERVERS[args.server](args.port, args.ready_file)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
