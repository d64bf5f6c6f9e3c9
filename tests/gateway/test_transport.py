"""The gateway's raw WebSocket I/O against scripted ASGI servers (pure logic: the server's
``send`` and ``receive`` are plain functions, handing back futures as Granian's do or
coroutines as Hypercorn's do)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from chatsys.gateway import transport
from chatsys.gateway.connection import WS_1013_TRY_AGAIN_LATER, Connection
from chatsys.gateway.transport import ServerSocket

pytestmark = pytest.mark.anyio
Message = dict[str, Any]


class FutureServer:
    """Granian-like: every send and receive hands back a future; the test completes the
    sends of text frames by hand (``complete_all``) unless ``auto`` is set."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.sent: list[Message] = []
        self.pending: list[asyncio.Future[None]] = []
        self.events: asyncio.Queue[Message] = asyncio.Queue()
        self.receiving: list[asyncio.Future[Message]] = []
        self.text_result: Any = None  # when set, a callable(frame) that makes each send's result

    def send(self, message: Message) -> Any:
        self.sent.append(message)
        sent = asyncio.get_running_loop().create_future()
        if message["type"] != "websocket.send":
            sent.set_result(None)
            return sent
        self.frames.append(message["text"])
        if self.text_result is not None:
            return self.text_result(message["text"])
        self.pending.append(sent)
        return sent

    def receive(self) -> asyncio.Future[Message]:
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        if not self.events.empty():
            future.set_result(self.events.get_nowait())
        self.receiving.append(future)
        return future

    async def complete_all(self) -> None:
        """Complete sends one at a time until none is in flight."""
        while self.pending:
            self.pending.pop(0).set_result(None)
            for _ in range(3):  # the done callback runs on the next loop iteration
                await asyncio.sleep(0)


class CoroutineServer:
    """Hypercorn-like: send and receive are coroutine functions."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.events: asyncio.Queue[Message] = asyncio.Queue()

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def receive(self) -> Message:
        return await self.events.get()

    @property
    def frames(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]


class DoneAtOnce:
    """A send future that is already done and calls back inside ``add_done_callback``."""

    _asyncio_future_blocking = False  # what makes asyncio take it for a future

    def add_done_callback(self, callback: Any) -> None:
        callback(self)

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        return None


class PlainAwaitable:
    """What Granian hands back for a send on a closing socket: an awaitable that is no future
    (no ``add_done_callback``), done at once or raising."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    def __await__(self) -> Any:
        if self.error is not None:
            raise self.error
        return None
        yield  # a generator: awaiting it finishes at once


def _conn(limit: int = 100) -> Connection:
    return Connection(session="s", user="u", room="r", queue_limit=limit)


async def _accepted(server: FutureServer | CoroutineServer) -> ServerSocket:
    sock = ServerSocket(server.receive, server.send)
    await sock.accept()
    return sock


@asynccontextmanager
async def _writing(sock: ServerSocket, conn: Connection) -> AsyncIterator[asyncio.Task[None]]:
    """``sock.write(conn)`` in a task of its own, cancelled on the way out."""
    task = asyncio.get_running_loop().create_task(sock.write(conn))
    await asyncio.sleep(0)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_frames_go_out_in_order_one_in_flight_at_a_time() -> None:
    server, conn = FutureServer(), _conn()
    sock = await _accepted(server)
    conn.offer("a")
    conn.offer("b")
    async with _writing(sock, conn):
        assert server.frames == ["a"]  # "b" waits for "a" to be written
        conn.offer("c")
        assert server.frames == ["a"]
        await server.complete_all()
        assert server.frames == ["a", "b", "c"]
        conn.offer("d")  # idle again: sent from offer itself
        assert server.frames == ["a", "b", "c", "d"]


async def test_duplicates_of_the_welcome_are_skipped() -> None:
    server, conn = FutureServer(), _conn()
    sock = await _accepted(server)
    conn.watermark = "0000000000000002"
    for n in (1, 2, 3):
        conn.offer(f"m{n}", f"000000000000000{n}")
    async with _writing(sock, conn):
        await server.complete_all()
        assert server.frames == ["m3"]


async def test_a_failed_send_ends_the_writer_with_its_error_and_nothing_more_is_sent() -> None:
    server, conn = FutureServer(), _conn()
    sock = await _accepted(server)
    conn.offer("a")
    conn.offer("b")
    async with _writing(sock, conn) as task:
        server.pending.pop().set_exception(ConnectionResetError("gone"))
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(task, 1)
        conn.offer("c")
        assert server.frames == ["a"]


async def test_a_send_that_raises_fails_this_socket_not_the_offering_fan_out() -> None:
    server, conn = FutureServer(), _conn()
    sock = await _accepted(server)

    def refuse(frame: str) -> Any:
        raise RuntimeError("transport closed")

    server.text_result = refuse
    async with _writing(sock, conn) as task:
        assert conn.offer("a")  # no exception into the caller (the room's fan-out loop)
        with pytest.raises(RuntimeError, match="transport closed"):
            await asyncio.wait_for(task, 1)


async def test_sends_that_are_not_futures_are_awaited_in_order_and_can_fail() -> None:
    server, conn = FutureServer(), _conn()
    sock = await _accepted(server)
    server.text_result = lambda frame: PlainAwaitable(
        ConnectionResetError("closing") if frame == "c" else None)
    async with _writing(sock, conn) as task:
        for frame in "abcd":
            assert conn.offer(frame)  # never raises into the fan-out
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(task, 1)
        assert server.frames == ["a", "b", "c"]  # in order, nothing after the failed one


async def test_closing_stops_writing_and_cancelling_stops_the_writer() -> None:
    server, conn = FutureServer(), _conn(limit=2)
    sock = await _accepted(server)
    async with _writing(sock, conn):
        conn.offer("a")
        conn.offer("b")
        conn.offer("c")
        assert not conn.offer("d")  # a slow consumer: outbox full
        assert conn.close_code == WS_1013_TRY_AGAIN_LATER
        await server.complete_all()
        assert server.frames == ["a"]  # the outbox was dropped with the close
    conn.close_code = None  # even if the connection were reopened, the writer is gone
    conn.offer("e")
    await server.complete_all()
    assert server.frames == ["a"]


async def test_sends_that_complete_at_once_do_not_recurse() -> None:
    server, conn = FutureServer(), _conn(limit=10_000)
    sock = await _accepted(server)
    server.text_result = lambda frame: DoneAtOnce()
    for n in range(5_000):  # far deeper than the interpreter's recursion limit
        conn.offer(str(n))
    async with _writing(sock, conn):
        assert len(server.frames) == 5_000
        assert server.frames[:3] == ["0", "1", "2"] and server.frames[-1] == "4999"


async def test_a_coroutine_server_is_written_by_a_loop_that_yields_to_others() -> None:
    server, conn = CoroutineServer(), _conn(limit=10_000)
    sock = await _accepted(server)
    count = 3 * transport.WRITE_BURST
    for n in range(count):
        conn.offer(str(n))
    seen_while_writing: list[int] = []

    async def watch() -> None:
        while len(server.frames) < count:
            seen_while_writing.append(len(server.frames))
            await asyncio.sleep(0)

    async with _writing(sock, conn):
        with anyio.fail_after(5):
            await watch()
    assert server.frames == [str(n) for n in range(count)]
    # The writer let the watcher run between bursts, not only before and after all frames.
    assert any(0 < seen < count for seen in seen_while_writing)


@pytest.mark.parametrize("server_class", [FutureServer, CoroutineServer])
async def test_receive_gives_frames_and_none_once_the_client_is_gone(
        server_class: type[FutureServer | CoroutineServer]) -> None:
    server = server_class()
    sock = await _accepted(server)
    for event in ({"type": "websocket.connect"},
                  {"type": "websocket.receive", "text": "hello"},
                  {"type": "websocket.receive", "bytes": b"\x00"},
                  {"type": "websocket.disconnect", "code": 1005}):
        server.events.put_nowait(event)
    with anyio.fail_after(5):
        assert [await sock.receive() for _ in range(3)] == ["hello", b"\x00", None]


async def test_closing_cancels_a_pending_receive_and_the_reader_waits_for_its_end() -> None:
    """CloseWaitsOnPendingReceive: Granian would hold the close while a receive is pending."""
    server = FutureServer()
    sock = await _accepted(server)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sock.receive)
        with anyio.fail_after(5):
            while not server.receiving:  # noqa: ASYNC110  (a scripted server, no event)
                await asyncio.sleep(0)
        await sock.close(1000, "bye")
        assert server.receiving[0].cancelled()
        assert server.sent[-1] == {"type": "websocket.close", "code": 1000, "reason": "bye"}
        await asyncio.sleep(0)
        assert len(server.receiving) == 1  # the reader asks the server for nothing more...
        tg.cancel_scope.cancel()  # ...and ends only when its owner cancels it


async def test_close_is_sent_once_and_never_for_a_client_that_is_gone() -> None:
    server = CoroutineServer()
    gone, closing = await _accepted(server), await _accepted(server)
    await gone.close(1006)
    await closing.close(1008, "too many bad frames")
    await closing.close(1000)
    closes = [m for m in server.sent if m["type"] == "websocket.close"]
    assert closes == [{"type": "websocket.close", "code": 1008, "reason": "too many bad frames"}]


async def test_a_refusal_in_chunks_goes_out_in_one_piece_with_its_length() -> None:
    """ChunkedRefusalIsEmpty403: Granian would answer an empty 403."""
    server = CoroutineServer()
    sock = ServerSocket(server.receive, server.send)
    await sock.send_from_app({"type": "websocket.http.response.start", "status": 503,
                              "headers": [(b"content-type", b"application/json"),
                                          (b"content-length", b"99")]})
    for chunk, more in ((b'{"error":', True), (b"{}}", True), (b"", False)):
        await sock.send_from_app({"type": "websocket.http.response.body", "body": chunk,
                                  "more_body": more})
    assert server.sent == [
        {"type": "websocket.http.response.start", "status": 503,
         "headers": [(b"content-type", b"application/json"), (b"content-length", b"12")]},
        {"type": "websocket.http.response.body", "body": b'{"error":{}}', "more_body": False},
    ]


async def test_an_error_response_after_the_accept_becomes_a_1011_close() -> None:
    """Quart answers a handler that failed with an error response, which an accepted socket
    cannot carry."""
    server = CoroutineServer()
    sock = await _accepted(server)
    await sock.send_from_app({"type": "websocket.http.response.start", "status": 500,
                              "headers": []})
    await sock.send_from_app({"type": "websocket.http.response.body", "body": b"",
                              "more_body": False})
    assert server.sent[1:] == [{"type": "websocket.close", "code": 1011, "reason": ""}]


def test_the_quirks_were_seen_in_the_installed_granian() -> None:
    """Each workaround names the Granian version that needed it: an upgrade fails here, so
    that someone checks whether the quirk is still there before widening ``SEEN_IN``."""
    from importlib.metadata import version

    installed = version("granian")
    for quirk in transport.QUIRKS:
        assert quirk.SERVER == "granian"
        assert installed.startswith(quirk.SEEN_IN + "."), (quirk.__name__, installed)


def _websocket_scope(query: bytes) -> Message:
    return {"type": "websocket", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "scheme": "ws", "http_version": "1.1", "path": "/ws", "raw_path": b"/ws",
            "query_string": query, "root_path": "", "headers": [], "client": ("1.2.3.4", 5),
            "server": ("127.0.0.1", 80), "subprotocols": [],
            "extensions": {"websocket.http.response": {}}}


async def _echo(scope: Message, sock: ServerSocket) -> None:
    if scope["query_string"] == b"refuse=1":
        await sock.refuse(400, {"content-type": "application/json"}, b'{"error":"no"}')
        return
    if scope["query_string"] == b"fail=before":
        raise RuntimeError("a bug before the accept")
    await sock.accept()
    while (data := await sock.receive()) is not None:
        if data == "fail":
            raise RuntimeError("a bug after the accept")
        await sock.send_text(f"echo {data}")
        if data == "bye":
            await sock.close(1000)
            break


def _gateway_app() -> transport.WebSocketTransport:
    """The transport as the gateway builds it: a routed socket path, Quart for the rest."""
    from quart import Quart

    app = Quart("transport-test")

    @app.route("/page")
    async def page() -> str:
        return "a page"

    return transport.WebSocketTransport(app, {"/ws": _echo})


async def test_a_routed_upgrade_goes_to_its_handler_without_quart() -> None:
    wrapped = _gateway_app()
    server = CoroutineServer()
    for text in ("hi", "bye"):
        server.events.put_nowait({"type": "websocket.receive", "text": text})
    with anyio.fail_after(5):
        await wrapped(_websocket_scope(b""), server.receive, server.send)
    assert [m["type"] for m in server.sent] == [
        "websocket.accept", "websocket.send", "websocket.send", "websocket.close"]
    assert server.frames == ["echo hi", "echo bye"]
    assert server.events.empty()  # every event went to the handler's reader

    refused = CoroutineServer()
    with anyio.fail_after(5):
        await wrapped(_websocket_scope(b"refuse=1"), refused.receive, refused.send)
    start, body = refused.sent
    assert start["type"] == "websocket.http.response.start" and start["status"] == 400
    assert start["headers"] == [(b"content-type", b"application/json"),
                                (b"content-length", b"14")]
    assert body == {"type": "websocket.http.response.body", "body": b'{"error":"no"}',
                    "more_body": False}


async def test_a_failing_handler_ends_its_socket_alone() -> None:
    """A bug in a handler: a 500 before the accept, a 1011 close after it; the server goes on."""
    wrapped = _gateway_app()
    before = CoroutineServer()
    with anyio.fail_after(5):
        await wrapped(_websocket_scope(b"fail=before"), before.receive, before.send)
    assert before.sent[0]["status"] == 500 and b'"internal"' in before.sent[1]["body"]

    after = CoroutineServer()
    after.events.put_nowait({"type": "websocket.receive", "text": "fail"})
    with anyio.fail_after(5):
        await wrapped(_websocket_scope(b""), after.receive, after.send)
    assert after.sent[-1] == {"type": "websocket.close", "code": 1011, "reason": ""}


async def test_other_upgrades_and_http_go_to_quart() -> None:
    """Quart refuses an upgrade to a path no one serves (404, in chunks: it arrives in one
    piece with its length) and serves HTTP as before."""
    wrapped = _gateway_app()
    refused = CoroutineServer()
    scope = {**_websocket_scope(b""), "path": "/elsewhere", "raw_path": b"/elsewhere"}
    with anyio.fail_after(5):
        await wrapped(scope, refused.receive, refused.send)
    start, body = refused.sent
    assert start["status"] == 404 and body["more_body"] is False
    assert (b"content-length", str(len(body["body"])).encode()) in start["headers"]

    sent: list[Message] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if requests:
            return requests.pop()
        await anyio.sleep_forever()  # the client stays until Quart has answered
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    http = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/page", "raw_path": b"/page", "query_string": b"",
            "root_path": "", "headers": [(b"host", b"test")], "client": ("1.2.3.4", 5),
            "server": ("127.0.0.1", 80)}
    with anyio.fail_after(5):
        await wrapped(http, receive, send)
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"a page"
