"""Locust users for chatsys: the seed's realistic chat session, measured as round trips.

Each ``ChatUser`` joins one room over one WebSocket (websocket-client, cooperative under Locust's
gevent) and keeps one HTTP session (``self.client``) for uploads:

- ``WS /ws/chat/connect``: TCP connect, upgrade and welcome frame, once per user;
- ``WS /ws/chat/send_text`` (weight 8): from sending a text frame to its ack (A stored it);
- ``POST /api/files`` then ``WS /ws/chat/send_file`` (weight 2): a 10 KB upload, then the file frame
  timed to its ack;
- ``WS /ws/chat/deliver`` (sampled): a room message's server timestamp to its arrival here;
- ``WS /ws/chat/reconnect``: a reconnect with ``since`` after the server closed with 1001.

A reader greenlet consumes every frame and hands acks (and error frames) to the task waiting for
that ``ref``. Every failure is a Locust failure whose text names its cause: ``error frame: CODE``,
``socket closed: CODE``, ``no ack within Ns``, ``upgrade refused: HTTP 400 bad_request``, ...

A request is recorded when it ends. When a run stops, Locust kills each user wherever it is (or,
with ``--stop-timeout``, lets it finish its task for that long), and a request cut off this way is
recorded neither as a success nor as a failure: a user stopped between its upload and the file
frame's ack leaves ``/api/files`` one ahead of ``/ws/chat/send_file``, so the two counts may differ
by up to one per user.

Usage: ``locust -f locustfiles/chat.py --host http://127.0.0.1:8080`` (see docs/load-testing.md).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import gevent
import websocket
from gevent.event import AsyncResult
from locust import HttpUser, events, task

WS = "WS"
CONNECT = "/ws/chat/connect"
RECONNECT = "/ws/chat/reconnect"
SEND_TEXT = "/ws/chat/send_text"
SEND_FILE = "/ws/chat/send_file"
DELIVER = "/ws/chat/deliver"
UNSOLICITED_ERROR = "/ws/chat/error"
CLOSED = "/ws/chat/closed"

# A pooled HTTP connection idle this long is closed rather than reused: a POST sent just as the
# server closes its idle connection gets no response, and no client may resend a POST. Well below
# the gateway's keep-alive timeout (75 s), so that a user delayed by a saturated Locust between
# this check and its request still never reaches the server's boundary.
HTTP_IDLE_LIMIT = 30.0

WS_1000_NORMAL_CLOSURE = 1000
WS_1001_GOING_AWAY = 1001

Frame = dict[str, Any]


class ChatFailure(Exception):
    """A failure reported to Locust; its text is exactly what the failures table shows."""

    def __repr__(self) -> str:
        return str(self)


class ErrorFrame(ChatFailure):
    def __init__(self, frame: Frame) -> None:
        self.code = str(frame.get("code"))
        super().__init__(f"error frame: {self.code}")


class SocketClosed(ChatFailure):
    def __init__(self, code: int | None, reason: str = "") -> None:
        self.code = code
        text = f"socket closed: {code if code is not None else 'no close frame'}"
        super().__init__(f"{text} {reason}".rstrip())


class AckTimeout(ChatFailure):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"no ack within {seconds:g}s")


class UpgradeRefused(ChatFailure):
    def __init__(self, status: int, body: bytes | None) -> None:
        super().__init__(f"upgrade refused: HTTP {status} {error_code(body)}".rstrip())


class ConnectFailed(ChatFailure):
    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"connect failed: {type(exc).__name__}: {exc}")


class HttpFailure(ChatFailure):
    def __init__(self, status: int, body: bytes | None) -> None:
        super().__init__(f"HTTP {status} {error_code(body)}".rstrip())


def error_code(body: bytes | None) -> str:
    """The contract's ``{"error": {"code": ...}}`` code of an error body, or ``""``."""
    try:
        return str(json.loads(body or b"")["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    add = parser.add_argument
    add("--chat-rooms", type=int, default=0, env_var="LOCUST_CHAT_ROOMS",
        help="number of rooms, users assigned round-robin (0: fill rooms of --chat-room-size)")
    add("--chat-room-size", type=int, default=20, env_var="LOCUST_CHAT_ROOM_SIZE",
        help="users per room when --chat-rooms is 0 (default 20)")
    add("--chat-room-prefix", default="load", env_var="LOCUST_CHAT_ROOM_PREFIX",
        help="room names are PREFIX-N (letters, digits, _ and - only)")
    add("--chat-text-size", type=int, default=100, env_var="LOCUST_CHAT_TEXT_SIZE",
        help="characters per text message (default 100)")
    add("--chat-file-size", type=int, default=10240, env_var="LOCUST_CHAT_FILE_SIZE",
        help="bytes per uploaded file (default 10240)")
    add("--chat-wait-min", type=float, default=1.0, env_var="LOCUST_CHAT_WAIT_MIN",
        help="shortest wait between a user's tasks, seconds (default 1)")
    add("--chat-wait-max", type=float, default=3.0, env_var="LOCUST_CHAT_WAIT_MAX",
        help="longest wait between a user's tasks, seconds (default 3)")
    add("--chat-deliver-sample", type=float, default=0.01, env_var="LOCUST_CHAT_DELIVER_SAMPLE",
        help="probability that a received room message is recorded as /ws/chat/deliver")
    add("--chat-ack-timeout", type=float, default=10.0, env_var="LOCUST_CHAT_ACK_TIMEOUT",
        help="seconds to wait for an ack before counting a failure (default 10)")
    add("--chat-connect-timeout", type=float, default=10.0, env_var="LOCUST_CHAT_CONNECT_TIMEOUT",
        help="seconds for TCP connect + upgrade + welcome (default 10)")
    add("--chat-backoff-max", type=float, default=30.0, env_var="LOCUST_CHAT_BACKOFF_MAX",
        help="longest pause between reconnect attempts, seconds (default 30)")
    add("--chat-http-idle", type=float, default=HTTP_IDLE_LIMIT, env_var="LOCUST_CHAT_HTTP_IDLE",
        help="an upload connection idle this long is closed, not reused; keep it well below the "
             f"gateway's --keep-alive-timeout (default {HTTP_IDLE_LIMIT:g})")


def room_for(index: int, worker: int, rooms: int, room_size: int, prefix: str) -> str:
    """Round-robin over ``rooms`` rooms, or fill rooms of ``room_size`` (per worker) in order."""
    if rooms > 0:
        return f"{prefix}-{(index + worker) % rooms}"
    return f"{prefix}-w{worker}-{index // max(1, room_size)}"


def ws_url(host: str, query: dict[str, str]) -> str:
    parts = urlsplit(host)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws/chat?{urlencode(query)}"


class ChatUser(HttpUser):
    """One chat participant: one WebSocket in one room, one HTTP session for uploads."""

    _ids = itertools.count()

    def wait_time(self) -> float:
        options = self.environment.parsed_options
        return random.uniform(options.chat_wait_min, options.chat_wait_max)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.options = options
        worker = getattr(self.environment.runner, "worker_index", 0) or 0
        index = next(ChatUser._ids)
        self.user_name = f"lt{worker}-{index}"
        self.room = room_for(index, worker, options.chat_rooms, options.chat_room_size,
                             options.chat_room_prefix)
        self.text = "x" * options.chat_text_size
        self.file_bytes = os.urandom(options.chat_file_size)
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.token = ""
        self.pending: dict[str, AsyncResult] = {}
        self.refs = itertools.count(1)
        self.last_id: str | None = None
        self.connected_once = False
        self.stopping = False
        self.backoff = 0.0
        self.retry_at = 0.0
        self.http_used_at = time.monotonic()
        self._connect(CONNECT)

    def on_stop(self) -> None:
        self.stopping = True
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.send_close(WS_1000_NORMAL_CLOSURE)
            except (OSError, websocket.WebSocketException):
                pass
            ws.shutdown()
        if self.reader is not None:
            self.reader.kill(block=False)

    # --- tasks -------------------------------------------------------------------------------

    @task(8)
    def send_text(self) -> None:
        if self._ensure_connected():
            self._round_trip(SEND_TEXT, {"type": "text", "text": self.text})

    @task(2)
    def send_file(self) -> None:
        if not self._ensure_connected():
            return
        self._retire_idle_http()
        with self.client.post(
            "/api/files", params={"room": self.room}, name="/api/files", catch_response=True,
            headers={"Authorization": f"Bearer {self.token}"},
            files={"file": ("load.bin", self.file_bytes, "application/octet-stream")},
        ) as response:
            if response.status_code != 201:
                error = getattr(response, "error", None)
                response.failure(ConnectFailed(error) if response.status_code == 0 and error
                                 else HttpFailure(response.status_code, response.content))
                return
            try:
                file_id = str(response.json()["id"])
            except (ValueError, KeyError, TypeError):
                response.failure(ChatFailure("upload answer without an id"))
                return
        self._round_trip(SEND_FILE, {"type": "file", "file_id": file_id})

    def _retire_idle_http(self) -> None:
        """Close the pooled upload connection if it may have idled long enough for the server
        to be closing it (see HTTP_IDLE_LIMIT); the next request opens a new one. Idle time is
        counted from the previous upload's start, which can only overstate it."""
        now = time.monotonic()
        if now - self.http_used_at >= self.options.chat_http_idle:
            self.client.close()
        self.http_used_at = now

    # --- connection --------------------------------------------------------------------------

    def _fire(self, name: str, started: float, length: int = 0,
              exception: BaseException | None = None) -> None:
        self.environment.events.request.fire(
            request_type=WS, name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=length, exception=exception, context={}, url=name,
        )

    def _ensure_connected(self) -> bool:
        """Reconnect (after a backoff) when the socket is gone; False if still not connected."""
        if self.ws is not None:
            return True
        gevent.sleep(max(0.0, self.retry_at - time.monotonic()))
        return self._connect(RECONNECT if self.connected_once else CONNECT)

    def _connect(self, name: str) -> bool:
        query = {"user": self.user_name, "room": self.room}
        if name == RECONNECT and self.last_id:
            query["since"] = self.last_id
        timeout = self.options.chat_connect_timeout
        started = time.perf_counter()
        ws = None
        try:
            ws = websocket.create_connection(ws_url(self.host or "", query), timeout=timeout,
                                             skip_utf8_validation=True)
            raw = ws.recv()
            welcome = json.loads(raw)
            if welcome.get("type") == "error":
                raise ErrorFrame(welcome)
            if welcome.get("type") != "welcome":
                raise ChatFailure(f"first frame is {welcome.get('type')!r}, not welcome")
        except Exception as exc:  # every way a connect fails is a failure of this request
            if ws is not None:
                ws.shutdown()
            self._fire(name, started, 0, self._connect_failure(exc, timeout))
            self._schedule_retry()
            return False
        self._fire(name, started, len(raw))
        self.connected_once, self.backoff = True, 0.0
        self.token = welcome["token"]
        for message in welcome.get("history") or []:
            self._seen(message.get("id"))
        ws.settimeout(None)  # the reader blocks; ack waits have their own timeouts
        self.ws = ws
        self.reader = gevent.spawn(self._read, ws)
        return True

    @staticmethod
    def _connect_failure(exc: Exception, timeout: float) -> ChatFailure:
        if isinstance(exc, ChatFailure):
            return exc
        if isinstance(exc, websocket.WebSocketBadStatusException):
            return UpgradeRefused(exc.status_code, exc.resp_body)
        if isinstance(exc, (websocket.WebSocketTimeoutException, TimeoutError)):
            return ChatFailure(f"connect timed out after {timeout:g}s")
        if isinstance(exc, websocket.WebSocketConnectionClosedException):
            return SocketClosed(None, "before the welcome")
        return ConnectFailed(exc)

    def _schedule_retry(self) -> None:
        """Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... up to --chat-backoff-max."""
        self.backoff = min(self.options.chat_backoff_max, max(0.5, self.backoff * 2))
        self.retry_at = time.monotonic() + self.backoff * random.uniform(0.5, 1.0)

    def _seen(self, message_id: Any) -> None:
        if isinstance(message_id, str) and (self.last_id is None or message_id > self.last_id):
            self.last_id = message_id

    # --- round trips -------------------------------------------------------------------------

    def _round_trip(self, name: str, frame: Frame) -> None:
        ws = self.ws
        if ws is None:  # closed since the task began: a drain's 1001 during the upload
            self._fire(name, time.perf_counter(), 0,
                       SocketClosed(None, "before the frame could be sent"))
            return
        ref = str(next(self.refs))
        waiter = AsyncResult()
        self.pending[ref] = waiter
        data = json.dumps({**frame, "ref": ref})
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            ws.send(data)
            reply = waiter.get(timeout=self.options.chat_ack_timeout)
            if reply.get("type") == "error":
                failure = ErrorFrame(reply)
            else:
                self._seen(reply.get("id"))
        except gevent.Timeout:
            failure = AckTimeout(self.options.chat_ack_timeout)
        except ChatFailure as exc:
            failure = exc
        except (OSError, websocket.WebSocketException) as exc:
            failure = SocketClosed(None, f"on send: {type(exc).__name__}")
            self._drop(ws)
        finally:
            self.pending.pop(ref, None)
        self._fire(name, started, len(data), failure)

    def _drop(self, ws: websocket.WebSocket) -> None:
        if self.ws is ws:
            self.ws = None
            ws.shutdown()
            self._schedule_retry()

    # --- reader greenlet ---------------------------------------------------------------------

    def _read(self, ws: websocket.WebSocket) -> None:
        code: int | None = None
        reason = ""
        try:
            while True:
                opcode, data = _next_frame(ws)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    if len(data) >= 2:
                        code = int.from_bytes(data[:2], "big")
                        reason = data[2:].decode(errors="replace")
                    break
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self._on_frame(json.loads(data), len(data))
        except (OSError, ValueError, websocket.WebSocketException) as exc:
            reason = f"({type(exc).__name__})"
        finally:
            self._on_closed(ws, code, reason)

    def _on_frame(self, frame: Frame, length: int) -> None:
        kind = frame.get("type")
        if kind in ("ack", "error", "pong"):
            waiter = self.pending.pop(str(frame.get("ref")), None)
            if waiter is not None:
                waiter.set(frame)
            elif kind == "error":
                self._fire(UNSOLICITED_ERROR, time.perf_counter(), length, ErrorFrame(frame))
        elif kind == "message":
            self._seen(frame.get("id"))
            if random.random() < self.options.chat_deliver_sample and "ts" in frame:
                delay = max(0.0, time.time() * 1000 - float(frame["ts"]))
                self.environment.events.request.fire(
                    request_type=WS, name=DELIVER, response_time=delay, response_length=length,
                    exception=None, context={}, url=DELIVER,
                )

    def _on_closed(self, ws: websocket.WebSocket, code: int | None, reason: str) -> None:
        closed = SocketClosed(code, reason)
        for waiter in self.pending.values():
            waiter.set_exception(closed)
        self.pending.clear()
        if self.stopping or self.ws is not ws:
            return
        self.ws = None
        ws.shutdown()
        if code == WS_1001_GOING_AWAY:
            # A server going away (drain, rolling update): reconnect with ``since`` at once.
            self.retry_at = time.monotonic() + random.uniform(0.0, 0.5)
        else:
            self._fire(CLOSED, time.perf_counter(), 0, closed)
            self._schedule_retry()


def _next_frame(ws: websocket.WebSocket) -> tuple[int, bytes]:
    """The next text, binary or close frame, answering pings on the way.

    Unlike ``recv_data_frame``, a close frame is returned even when echoing it fails: a server
    that closes with 1001 and drops the TCP connection at once must still count as going away.
    """
    while True:
        frame = ws.recv_frame()
        if frame.opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY,
                            websocket.ABNF.OPCODE_CONT):
            ws.cont_frame.validate(frame)
            ws.cont_frame.add(frame)
            if ws.cont_frame.is_fire(frame):
                opcode, whole = ws.cont_frame.extract(frame)
                return opcode, bytes(whole.data)
        elif frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            try:
                ws.send_close()
            except (OSError, websocket.WebSocketException):
                pass  # the server already dropped the connection; its close code stands
            return frame.opcode, bytes(frame.data)
        elif frame.opcode == websocket.ABNF.OPCODE_PING:
            ws.pong(frame.data)
