"""Chat members: one logical user in one room, across any number of WebSocket connections.

A member joins, then reads every frame of its socket in one task while another task acts
(text 80 %, a 10 KB upload announced with a ``file`` frame 20 %). When the socket goes (close
1001, 1006, any close, a reset), it reconnects with ``since=<the newest id it has seen>`` —
first to its own gateway, then alternating — and keeps everything the resume returns. What it
saw is kept raw (``received``: every message id in arrival order), so the checker can find
losses, duplicates and reordering after the fact instead of trusting the client's logic.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import websockets
from websockets.asyncio.client import ClientConnection

log = logging.getLogger("chaos.members")
FILE_BYTES = 10_240


@dataclass
class OpStats:
    """Operations attempted and succeeded per kind, and why the others failed."""

    attempted: Counter[str] = field(default_factory=Counter)
    succeeded: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    close_codes: Counter[str] = field(default_factory=Counter)
    # (began, ended, what) of every failure, monotonic: the checker matches them to faults
    failed_at: list[tuple[float, float, str]] = field(default_factory=list)

    def record(self, kind: str, ok: bool, why: str = "", began: float | None = None) -> None:
        self.attempted[kind] += 1
        if ok:
            self.succeeded[kind] += 1
        else:
            what = f"{kind}: {why}"[:120]
            self.failures[what] += 1
            now = time.monotonic()
            self.failed_at.append((now if began is None else began, now, what))


@dataclass
class Ledger:
    """Every acknowledged message, per room: id -> (monotonic time of the ack, member)."""

    acked: dict[str, dict[str, tuple[float, str]]] = field(default_factory=dict)

    def add(self, room: str, message_id: str, member: str) -> None:
        self.acked.setdefault(room, {})[message_id] = (time.monotonic(), member)

    def newest(self, room: str) -> str | None:
        ids = self.acked.get(room)
        return max(ids) if ids else None

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.acked.values())


class OpFailed(Exception):
    """One operation failed; the text says why (an error code, a status, a timeout)."""


class Waiter:
    """The reply (ack or error frame) to one ``ref``."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.frame: dict[str, Any] | None = None

    def set(self, frame: dict[str, Any]) -> None:
        self.frame = frame
        self.event.set()


async def open_socket(port: int, user: str, room: str, since: str | None,
                      seconds: float) -> tuple[ClientConnection, dict[str, Any]]:
    """A WebSocket to ``port`` and its welcome frame; raises OpFailed with the reason."""
    query = {"user": user, "room": room} | ({"since": since} if since else {})
    url = f"ws://127.0.0.1:{port}/ws/chat?{httpx.QueryParams(query)}"
    try:
        with anyio.fail_after(seconds):
            ws = await websockets.connect(url, max_size=None, compression=None,
                                          open_timeout=None, ping_interval=5, ping_timeout=10)
            try:
                welcome = json.loads(await ws.recv())
            except BaseException:
                await ws.close()
                raise
    except websockets.InvalidStatus as exc:
        body = bytes(exc.response.body or b"")[:80].decode(errors="replace")
        raise OpFailed(f"HTTP {exc.response.status_code} {body}") from None
    except TimeoutError:
        raise OpFailed(f"no welcome within {seconds:g}s") from None
    except (OSError, websockets.WebSocketException) as exc:
        raise OpFailed(type(exc).__name__) from None
    if welcome.get("type") != "welcome":
        await ws.close()
        raise OpFailed(f"first frame {welcome.get('type')!r}")
    return ws, welcome


async def upload(http: httpx.AsyncClient, port: int, room: str, token: str,
                 data: bytes) -> str:
    """POST a file; returns its id (OpFailed otherwise)."""
    try:
        reply = await http.post(f"http://127.0.0.1:{port}/api/files", params={"room": room},
                                headers={"Authorization": f"Bearer {token}"},
                                files={"file": ("chaos.bin", data, "application/octet-stream")})
    except httpx.HTTPError as exc:
        raise OpFailed(type(exc).__name__) from None
    if reply.status_code != 201:
        raise OpFailed(f"HTTP {reply.status_code} {reply.text[:80]}")
    return str(reply.json()["id"])


@dataclass
class Pace:
    wait_min: float = 0.5
    wait_max: float = 1.5
    upload_share: float = 0.2
    op_timeout: float = 10.0


class Member:
    def __init__(self, name: str, room: str, gateways: list[int], home: int, *,
                 stats: OpStats, ledger: Ledger, http: httpx.AsyncClient, pace: Pace,
                 ops_stopped: anyio.Event) -> None:
        self.name, self.room = name, room
        self.gateways, self.home = gateways, home
        self.stats, self.ledger, self.http, self.pace = stats, ledger, http, pace
        self.ops_stopped = ops_stopped
        self.start: str | None = None  # the newest id of the first welcome (before our time)
        self.received: list[str] = []  # every message id after ``start``, in arrival order
        self.received_at: list[float] = []  # when each arrived (monotonic), for diagnosis
        # (monotonic, gateway port, since, ids in the welcome's history, its first, its last)
        self.connections: list[tuple[float, int, str | None, int, str | None, str | None]] = []
        self.joined = False
        self.connected = False
        self.leaving = False
        self.left_at: float | None = None
        self.reconnects = 0
        self.busy = False  # an operation is in flight (its ack may still come)
        self._ws: ClientConnection | None = None
        self._token = ""
        self._port = gateways[home]
        self._pending: dict[str, Waiter] = {}
        self._refs = 0
        self._scope = anyio.CancelScope()

    @property
    def cursor(self) -> str | None:
        """The newest id this member has seen (or knows to be before its time)."""
        newest = max(self.received) if self.received else None
        if self.start is None:
            return newest
        return max(self.start, newest) if newest else self.start

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.left_at = self.left_at or time.monotonic()
            if self._ws is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await self._ws.close()

    async def _run(self) -> None:
        with self._scope:
            attempt = 0
            while not self.leaving:
                port = self.gateways[(self.home + attempt) % len(self.gateways)]
                ws = await self._connect(port)
                if ws is None:
                    attempt += 1
                    await anyio.sleep(min(2.0, 0.2 * attempt) * random.uniform(0.5, 1.0))
                    continue
                attempt = 0
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._read, ws, tg.cancel_scope)
                    tg.start_soon(self._act, ws)
                self.connected = False
                self._fail_pending("socket lost")
                with anyio.move_on_after(1):  # a dead peer never answers our close frame
                    await ws.close()
                await anyio.sleep(random.uniform(0.0, 0.3))

    async def leave(self) -> None:
        """Leave the room for good (close 1000)."""
        self.leaving = True
        if self._ws is not None:
            with anyio.move_on_after(2):
                await self._ws.close()
        self._scope.cancel()

    async def _connect(self, port: int) -> ClientConnection | None:
        kind = "reconnect" if self.joined else "join"
        since = self.cursor if self.joined else None
        began = time.monotonic()
        try:
            ws, welcome = await open_socket(port, self.name, self.room, since,
                                            self.pace.op_timeout)
        except OpFailed as exc:
            self.stats.record(kind, False, str(exc), began)
            return None
        self.stats.record(kind, True)
        history = [m["id"] for m in welcome.get("history") or []]
        self.connections.append((time.monotonic(), port, since, len(history),
                                 history[0] if history else None,
                                 history[-1] if history else None))
        if self.joined:
            self.reconnects += 1
            self.received.extend(history)  # with since: exactly what we missed
            self.received_at.extend([time.monotonic()] * len(history))
        else:
            self.start = history[-1] if history else None
        self.joined = self.connected = True
        self._ws, self._token, self._port = ws, welcome["token"], port
        return ws

    async def _read(self, ws: ClientConnection, pair: anyio.CancelScope) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "message":
                    self.received.append(frame["id"])
                    self.received_at.append(time.monotonic())
                elif kind in ("ack", "error"):
                    waiter = self._pending.pop(str(frame.get("ref")), None)
                    if waiter is not None:
                        waiter.set(frame)
        except (OSError, websockets.WebSocketException):
            pass
        finally:
            pair.cancel()
        if not self.leaving:  # the server (or the network) ended it: count how
            code = ws.close_code
            self.stats.close_codes[str(code) if code is not None else "none"] += 1

    async def _act(self, ws: ClientConnection) -> None:
        while not self.ops_stopped.is_set():
            await anyio.sleep(random.uniform(self.pace.wait_min, self.pace.wait_max))
            if self.ops_stopped.is_set() or self.leaving:
                return
            self.busy = True
            try:
                if random.random() < self.pace.upload_share:
                    await self.share_file(ws)
                else:
                    await self.say(ws, f"{self.name} says {random.randrange(10**6)}")
            finally:
                self.busy = False

    async def say(self, ws: ClientConnection, text: str) -> None:
        await self._op("text", self._round_trip(ws, {"type": "text", "text": text}))

    async def share_file(self, ws: ClientConnection) -> None:
        file_id = await self._op("upload", self._upload())
        if file_id is not None:
            await self._op("file", self._round_trip(ws, {"type": "file", "file_id": file_id}))

    async def _upload(self) -> str:
        with anyio.fail_after(self.pace.op_timeout):
            return await upload(self.http, self._port, self.room, self._token,
                                os.urandom(FILE_BYTES))

    async def _op(self, kind: str, op: Awaitable[str]) -> str | None:
        """One operation, counted as a success or, unless we caused it by leaving, a failure
        with its cause; its result, or None if it failed."""
        began = time.monotonic()
        try:
            result = await op
        except TimeoutError:
            self._failed(kind, "timeout", began)
            return None
        except OpFailed as exc:
            self._failed(kind, str(exc), began)
            return None
        except anyio.get_cancelled_exc_class():
            self._failed(kind, "socket lost", began)
            raise
        self.stats.record(kind, True)
        return result

    def _failed(self, kind: str, why: str, began: float) -> None:
        """Count a failure, unless we caused it by leaving."""
        if not self.leaving:
            self.stats.record(kind, False, why, began)

    async def _round_trip(self, ws: ClientConnection, frame: dict[str, Any]) -> str:
        """Send ``frame`` and wait for its ack; the acked id goes to the ledger."""
        self._refs += 1
        ref = f"{self.name}-{self._refs}"
        waiter = self._pending[ref] = Waiter()
        try:
            await ws.send(json.dumps({**frame, "ref": ref}))
            with anyio.fail_after(self.pace.op_timeout):
                await waiter.event.wait()
        except TimeoutError:
            raise OpFailed("no ack in time") from None
        except (OSError, websockets.WebSocketException):
            raise OpFailed("socket lost") from None
        finally:
            self._pending.pop(ref, None)
        reply = waiter.frame or {}
        if reply.get("type") != "ack":
            raise OpFailed(str(reply.get("code") or reply.get("reason") or "no reply"))
        self.ledger.add(self.room, reply["id"], self.name)
        return str(reply["id"])

    def _fail_pending(self, why: str) -> None:
        for waiter in self._pending.values():
            waiter.set({"type": "lost", "reason": why})
        self._pending.clear()
