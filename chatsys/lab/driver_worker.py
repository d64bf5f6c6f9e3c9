"""One process of the native driver: its share of the users on one asyncio (uvloop) loop.

Every user plays ``ChatUser`` of ``locustfiles/chat.py``: connect once (``WS
/ws/chat/connect``, TCP connect to parsed welcome), then tasks picked 8:2 — a text frame timed
to its ack (``WS /ws/chat/send_text``), or a 10 KB upload with the welcome's bearer token (``POST
/api/files``, to the full 201 answer) then the file frame timed to its ack (``WS
/ws/chat/send_file``) — waiting ``--chat-wait-min``..``--chat-wait-max`` s after each task.
Reconnects, backoff, 1001 handling, sampled ``/ws/chat/deliver`` and failure texts follow
chat.py, so a driver run's tables read like a Locust run's.

Why it is cheaper than Locust + websocket-client: picows hands each frame to a callback (no
reader task, no queue, no greenlet switch per frame); room messages, the bulk of what a user
receives, are recognised by their prefix and never parsed as JSON except when sampled; an upload
reuses a keep-alive connection from a per-worker pool and sends a multipart body assembled from
one shared buffer; stats are counters and a rounded histogram, drained once a second.

Protocol with the coordinator (``chatsys.lab.driver``): the config is the one JSON argument;
the worker prints ``{"ready": true}``, then reads ``{"op": "start", "at": UNIX_TIME}`` and later
``{"op": "stop"}`` (or EOF) on stdin, and prints one JSON line a second: ``{"users": N, "stats":
DELTA}``, the last one with ``"final": true``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import signal
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from picows import (
    WSCloseCode,
    WSError,
    WSInvalidStatusError,
    WSListener,
    WSMsgType,
    ws_connect,
)

from chatsys.lab.driver_http import HttpPool
from chatsys.lab.driver_plan import WorkerConfig, room_for
from chatsys.lab.driver_stats import Stats
from chatsys.runtime.lifecycle import tune_gc

WS, POST = "WS", "POST"
CONNECT = "/ws/chat/connect"
RECONNECT = "/ws/chat/reconnect"
SEND_TEXT = "/ws/chat/send_text"
SEND_FILE = "/ws/chat/send_file"
DELIVER = "/ws/chat/deliver"
UNSOLICITED_ERROR = "/ws/chat/error"
CLOSED = "/ws/chat/closed"
UPLOAD = "/api/files"
GOING_AWAY = 1001
UPLOAD_TIMEOUT = 60.0
MESSAGE_PREFIX = b'{"type":"message","id":"'
PRESENCE_PREFIX = b'{"type":"presence"'
BOUNDARY = "chatsys-driver-boundary-7d1e"
UNIQUE = 16  # leading bytes of each uploaded file made unique per upload


# --- failures: the same texts as chat.py's ------------------------------------------------------

class ChatFailure(Exception):
    """A failed request; its text is what the failures table shows."""


def error_code(body: bytes | None) -> str:
    try:
        return str(json.loads(body or b"")["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def error_frame(frame: dict[str, Any]) -> ChatFailure:
    return ChatFailure(f"error frame: {frame.get('code')}")


def socket_closed(code: int | None, reason: str = "") -> ChatFailure:
    text = f"socket closed: {code if code is not None else 'no close frame'}"
    return ChatFailure(f"{text} {reason}".rstrip())


def connect_failed(exc: BaseException) -> ChatFailure:
    return ChatFailure(f"connect failed: {type(exc).__name__}: {exc}")


def http_failure(status: int, body: bytes | None) -> ChatFailure:
    return ChatFailure(f"HTTP {status} {error_code(body)}".rstrip())


# --- the user -------------------------------------------------------------------------------

class Connection(WSListener):  # type: ignore[misc]
    """picows's callbacks for one socket of one user."""

    def __init__(self, user: ChatUser) -> None:
        self.user = user
        self.welcome: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.live = False  # the welcome was accepted: closing is the user's business now
        self.close_code: int | None = None
        self.close_reason = ""

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            data = frame.get_payload_as_bytes()
            if self.live:
                self.user.on_frame(data)
            elif not self.welcome.done():
                self.welcome.set_result(data)
        elif kind == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code() or 1005)
            self.close_reason = frame.get_close_reason() or ""
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: Any) -> None:
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionResetError("closed before the welcome"))
        if self.live:
            self.user.on_closed(transport, self.close_code, self.close_reason)


class ChatUser:
    """One chat participant: one WebSocket in one room; uploads through the worker's pool."""

    __slots__ = ("backoff", "connected_once", "host", "index", "last_id", "name", "pending",
                 "refs", "retry_at", "room", "source", "token", "worker", "ws")

    def __init__(self, worker: Worker, index: int) -> None:
        self.worker = worker
        self.index = index
        self.name = f"lt0-{index}"
        self.room = room_for(index, 0, worker.options)
        self.host = worker.hosts[index % len(worker.hosts)]
        self.source = worker.sources[index % len(worker.sources)] if worker.sources else ""
        self.ws: Any = None
        self.token = ""
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.refs = 0
        self.last_id: str | None = None
        self.connected_once = False
        self.backoff = 0.0
        self.retry_at = 0.0

    async def run(self) -> None:
        worker, options = self.worker, self.worker.options
        await self.connect(CONNECT)
        while True:
            if random.random() < 0.8:  # chat.py's @task(8) send_text against @task(2) send_file
                if await self.ensure_connected():
                    await self.round_trip(SEND_TEXT, worker.text_frame)
            elif await self.ensure_connected():
                file_id = await self.upload()
                if file_id is not None:
                    await self.round_trip(SEND_FILE,
                                          '{"type":"file","file_id":' + json.dumps(file_id))
            await asyncio.sleep(random.uniform(options.wait_min, options.wait_max))

    # --- connection -------------------------------------------------------------------------

    async def ensure_connected(self) -> bool:
        if self.ws is not None:
            return True
        delay = self.retry_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return await self.connect(RECONNECT if self.connected_once else CONNECT)

    async def connect(self, name: str) -> bool:
        worker = self.worker
        query = f"user={self.name}&room={self.room}"
        if name == RECONNECT and self.last_id:
            query += f"&since={self.last_id}"
        timeout = worker.options.connect_timeout
        started = time.perf_counter()
        listener: Connection | None = None
        try:
            async with asyncio.timeout(timeout):
                transport, listener = await ws_connect(
                    functools.partial(Connection, self), f"{worker.ws_base[self.host]}?{query}",
                    websocket_handshake_timeout=None, read_buffer_init_size=4096,
                    **({"local_addr": (self.source, 0)} if self.source else {}))
                raw = await listener.welcome
            welcome = json.loads(raw)
            if welcome.get("type") == "error":
                raise error_frame(welcome)
            if welcome.get("type") != "welcome":
                raise ChatFailure(f"first frame is {welcome.get('type')!r}, not welcome")
        except Exception as exc:  # every way a connect fails is a failure of this request
            if listener is not None:
                transport.disconnect(graceful=False)
            worker.record(WS, name, started, 0, self._connect_failure(exc, timeout))
            self.schedule_retry()
            return False
        worker.record(WS, name, started, len(raw))
        self.connected_once, self.backoff = True, 0.0
        self.token = welcome["token"]
        for message in welcome.get("history") or ():
            self.seen(message.get("id"))
        self.ws = transport
        listener.live = True
        if transport.is_disconnected:  # closed between the welcome and now
            self.on_closed(transport, listener.close_code, listener.close_reason)
        return True

    @staticmethod
    def _connect_failure(exc: Exception, timeout: float) -> ChatFailure:
        if isinstance(exc, ChatFailure):
            return exc
        if isinstance(exc, WSInvalidStatusError) and exc.response is not None:
            status = int(exc.response.status)
            return ChatFailure(f"upgrade refused: HTTP {status} {error_code(exc.raw_body)}"
                               .rstrip())
        if isinstance(exc, TimeoutError):
            return ChatFailure(f"connect timed out after {timeout:g}s")
        if isinstance(exc, ConnectionResetError) and str(exc) == "closed before the welcome":
            return socket_closed(None, "before the welcome")
        return connect_failed(exc)

    def schedule_retry(self) -> None:
        """chat.py's exponential backoff with jitter: 0.5 s, 1 s, 2 s ... up to the max."""
        self.backoff = min(self.worker.options.backoff_max, max(0.5, self.backoff * 2))
        self.retry_at = time.monotonic() + self.backoff * random.uniform(0.5, 1.0)

    def seen(self, message_id: Any) -> None:
        if isinstance(message_id, str) and (self.last_id is None or message_id > self.last_id):
            self.last_id = message_id

    def on_closed(self, transport: Any, code: int | None, reason: str) -> None:
        closed = socket_closed(code, reason)
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_exception(closed)
        self.pending.clear()
        if self.worker.stopping or self.ws is not transport:
            return
        self.ws = None
        if code == GOING_AWAY:  # a draining server: reconnect with ``since`` at once
            self.retry_at = time.monotonic() + random.uniform(0.0, 0.5)
        else:
            self.worker.record(WS, CLOSED, time.perf_counter(), 0, closed)
            self.schedule_retry()

    # --- requests ---------------------------------------------------------------------------

    async def round_trip(self, name: str, frame_head: str) -> None:
        """Send ``frame_head`` (a JSON object without its closing brace) with a fresh ``ref``,
        timed to the ack (or error frame) with that ``ref``."""
        worker, ws = self.worker, self.ws
        if ws is None:  # closed since the task began: a drain's 1001 during the upload
            worker.record(WS, name, time.perf_counter(), 0,
                          socket_closed(None, "before the frame could be sent"))
            return
        self.refs += 1
        ref = str(self.refs)
        waiter: asyncio.Future[dict[str, Any]] = worker.loop.create_future()
        self.pending[ref] = waiter
        data = f'{frame_head},"ref":"{ref}"}}'.encode()
        started = time.perf_counter()
        failure: ChatFailure | None = None
        try:
            if ws.is_disconnected:
                raise ConnectionResetError("closed")
            ws.send(WSMsgType.TEXT, data)
            async with asyncio.timeout(worker.options.ack_timeout):
                reply = await waiter
            if reply.get("type") == "error":
                failure = error_frame(reply)
            else:
                self.seen(reply.get("id"))
        except TimeoutError:
            failure = ChatFailure(f"no ack within {worker.options.ack_timeout:g}s")
        except ChatFailure as exc:
            failure = exc
        except (OSError, WSError) as exc:
            failure = socket_closed(None, f"on send: {type(exc).__name__}")
        finally:
            self.pending.pop(ref, None)
        worker.record(WS, name, started, len(data), failure)

    async def upload(self) -> str | None:
        """``POST /api/files?room=R`` with the bearer token and a 10 KB multipart file."""
        worker = self.worker
        host, port = worker.address[self.host]
        head = (f"POST /api/files?room={self.room} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {self.token}\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                f"Content-Length: {worker.upload_length}\r\n\r\n").encode()
        worker.uploads += 1
        unique = f"{self.index:x}-{worker.uploads:x}".encode().ljust(UNIQUE, b".")[:UNIQUE]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(UPLOAD_TIMEOUT):
                status, body = await worker.http.post(
                    host, port, self.source, [head, worker.part_head, unique, worker.file_tail,
                                              worker.part_tail])
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a garbled answer
            worker.record(POST, UPLOAD, started, 0, connect_failed(exc))
            return None
        if status != 201:
            worker.record(POST, UPLOAD, started, len(body), http_failure(status, body))
            return None
        try:
            file_id = str(json.loads(body)["id"])
        except (ValueError, KeyError, TypeError):
            worker.record(POST, UPLOAD, started, len(body),
                          ChatFailure("upload answer without an id"))
            return None
        worker.record(POST, UPLOAD, started, len(body))
        return file_id

    # --- frames (picows callback) -----------------------------------------------------------

    def on_frame(self, data: bytes) -> None:
        if data.startswith(MESSAGE_PREFIX):  # the bulk: room fan-out, parsed only if sampled
            end = data.find(b'"', len(MESSAGE_PREFIX))
            message_id = data[len(MESSAGE_PREFIX):end].decode()
            if self.last_id is None or message_id > self.last_id:
                self.last_id = message_id
            worker = self.worker
            if random.random() < worker.options.deliver_sample:
                ts = json.loads(data).get("ts")
                if ts is not None:
                    delay = max(0.0, time.time() * 1000 - float(ts))
                    worker.stats.record(WS, DELIVER, delay, len(data), int(time.time()))
            return
        if data.startswith(PRESENCE_PREFIX):
            return
        try:
            frame = json.loads(data)
        except ValueError:
            return
        kind = frame.get("type")
        if kind in ("ack", "error", "pong"):
            waiter = self.pending.pop(str(frame.get("ref")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
            elif kind == "error":
                self.worker.record(WS, UNSOLICITED_ERROR, time.perf_counter(), len(data),
                                   error_frame(frame))
        elif kind == "message":
            self.seen(frame.get("id"))

    def close(self) -> None:
        """chat.py's on_stop: a 1000 close frame, then the socket goes."""
        ws, self.ws = self.ws, None
        if ws is not None and not ws.is_disconnected:
            ws.send_close(WSCloseCode.OK)
            ws.disconnect()


# --- the worker -----------------------------------------------------------------------------

class Worker:
    """This process's users, its upload pool and its stats delta."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.plan, self.options = config.parsed()
        self.hosts = config.hosts
        self.sources = config.sources
        self.address: dict[str, tuple[str, int]] = {}
        self.ws_base: dict[str, str] = {}
        for host in self.hosts:
            parts = urlsplit(host)
            self.address[host] = (parts.hostname or "127.0.0.1",
                                  parts.port or (443 if parts.scheme == "https" else 80))
            scheme = "wss" if parts.scheme == "https" else "ws"
            self.ws_base[host] = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws/chat"
        self.loop = asyncio.get_running_loop()
        self.stats = Stats()
        self.http = HttpPool()
        self.users: list[ChatUser] = []
        self.stopping = False
        self.uploads = 0
        self.text_frame = '{"type":"text","text":' + json.dumps("x" * self.options.text_size)
        blob = os.urandom(max(self.options.file_size, UNIQUE))
        self.part_head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
                          f"filename=\"load.bin\"\r\nContent-Type: application/octet-stream"
                          f"\r\n\r\n").encode()
        self.file_tail = blob[UNIQUE:]
        self.part_tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.upload_length = (len(self.part_head) + len(blob) + len(self.part_tail))

    def record(self, kind: str, name: str, started: float, length: int,
               failure: BaseException | None = None) -> None:
        self.stats.record(kind, name, (time.perf_counter() - started) * 1000, length,
                          int(time.time()), None if failure is None else str(failure))

    async def spawn(self, tg: asyncio.TaskGroup, start_at: float) -> None:
        """Start this worker's users on the plan's schedule (``start_at`` is Unix time)."""
        base = time.monotonic() + (start_at - time.time())
        for index, offset in self.plan.owned(self.config.index, self.config.workers):
            delay = base + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            user = ChatUser(self, index)
            self.users.append(user)
            tg.create_task(user.run())

    async def report(self) -> None:
        """One stats delta a second, just after each wall-clock second."""
        while True:
            await asyncio.sleep(1.05 - time.time() % 1.0)
            self.emit()

    def emit(self, final: bool = False) -> None:
        line = {"users": len(self.users), "stats": self.stats.drain()}
        if final:
            line["final"] = True
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    async def stop(self) -> None:
        """Stop every user where it is (a request cut off is recorded nowhere, as in Locust)
        and close its socket with 1000."""
        self.stopping = True
        for user in self.users:
            user.close()
        self.http.close()
        await asyncio.sleep(0.2)  # let the close frames reach the kernel


class _Stopped(Exception):
    """Ends the worker's task group, and with it every user."""


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def next_command(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next command from the coordinator; EOF (the coordinator went away) reads as stop."""
    line = await reader.readline()
    return json.loads(line) if line.strip() else {"op": "stop"}


async def main(config: WorkerConfig) -> None:
    tune_gc()  # thousands of live sockets: the gateway's reason holds here too
    worker = Worker(config)
    commands = await stdin_reader()
    print(json.dumps({"ready": True}), flush=True)
    start = await next_command(commands)
    if start.get("op") != "start":
        return
    try:
        # asyncio's TaskGroup (picows is asyncio-only): it owns every user task, and a stop
        # command ends it by raising, which cancels them all.
        async with asyncio.TaskGroup() as tg:
            tg.create_task(worker.spawn(tg, float(start["at"])))
            tg.create_task(worker.report())
            while (await next_command(commands)).get("op") != "stop":
                pass
            raise _Stopped
    except* _Stopped:
        pass
    await worker.stop()
    worker.emit(final=True)


def run(argv: list[str]) -> None:
    # Ctrl-C in a terminal reaches the whole process group: only the coordinator acts on it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = WorkerConfig(**json.loads(argv[0]))
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(config))
    else:
        uvloop.run(main(config))


if __name__ == "__main__":
    run(sys.argv[1:])
