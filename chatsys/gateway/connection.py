"""One client's WebSocket as the fan-out sees it: a bounded outbox and per-connection limits.

The fan-out never awaits a socket: it appends an already-encoded frame to the outbox and
moves on. A connection whose outbox is full is a slow consumer; it is marked for closing with
1013 and its outbox dropped, so one stuck client costs bounded memory and stalls nobody.

Offering is on the hot path (once per member per message), so the writer's wakeup is a bare
asyncio future, created only when the writer finds the outbox empty and resolved by the next
offer: no Event bookkeeping and no waiter list per frame (the gateway always runs on asyncio:
Granian and Hypercorn both serve it on asyncio).

A server whose ``send`` hands back a future (Granian) is written to without the writer task:
:meth:`Connection.pump` sends the next frame from the previous send's completion callback and
from ``offer``, one frame in flight at a time, so a frame costs one loop callback instead of two
steps of a task (about 20 per chat message per member socket).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

WS_1000_NORMAL = 1000
WS_1001_GOING_AWAY = 1001
WS_1006_NO_CLOSE_FRAME = 1006  # the client went away: the connection ends with no close to send
WS_1008_POLICY_VIOLATION = 1008
WS_1009_MESSAGE_TOO_BIG = 1009
WS_1011_INTERNAL_ERROR = 1011
WS_1013_TRY_AGAIN_LATER = 1013


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Connection:
    """Outbound side of one member socket."""

    def __init__(self, *, session: str, user: str, room: str, queue_limit: int) -> None:
        self.session = session
        self.user = user
        self.room = room
        self.queue_limit = queue_limit
        self._outbox: deque[tuple[str | None, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        # Pumping (see the module docstring): the server's send, whether a frame is in flight,
        # whether _pump is on the stack (a send that completes at once calls back into it),
        # and the future that carries a failed send to the pump's awaiter.
        self._send: Callable[[str], Awaitable[None]] | None = None
        self._in_flight = False
        self._pumping = False
        self._pump_failed: asyncio.Future[None] | None = None
        # Looked up once: get_running_loop() costs a getpid() call, and the writer waits often.
        self._loop = asyncio.get_running_loop()
        # Messages with ids up to the watermark were already sent in the welcome.
        self.watermark: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._closing = anyio.Event()

    def offer(self, frame: str, message_id: str | None = None) -> bool:
        """Queue a frame without waiting; False when the connection is (now) closing."""
        if self.close_code is not None:
            return False
        if len(self._outbox) >= self.queue_limit:
            self.request_close(WS_1013_TRY_AGAIN_LATER, "slow consumer")
            return False
        self._outbox.append((message_id, frame))
        if self._send is not None:
            self._pump()
        else:
            self._wake()
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def request_close(self, code: int, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self._outbox.clear()
        self._wake()
        self._closing.set()

    async def wait_closing(self) -> None:
        """Until someone asked for this connection to close (slow consumer, drain, policy)."""
        await self._closing.wait()

    def _pop(self) -> str | None:
        """The next frame to write, skipping duplicates of the welcome; None when there is
        none or the connection is closing."""
        outbox = self._outbox
        while outbox and self.close_code is None:
            message_id, frame = outbox.popleft()
            if message_id is not None and self.watermark is not None \
                    and message_id <= self.watermark:
                continue
            return frame
        return None

    async def next_frame(self) -> str | None:
        """The next frame to write; waits for one; None when closing."""
        while self.close_code is None:
            if (frame := self._pop()) is not None:
                return frame
            # Created only when the outbox is empty, in the same step as the check: the next
            # offer resolves it, so no frame can be left waiting.
            self._waiter = self._loop.create_future()
            await self._waiter
        return None

    async def pump(self, send: Callable[[str], Awaitable[None]]) -> None:
        """Write every frame, now and from now on, through ``send``, which should return a
        future (anything else costs a task); returns only by raising what a send failed with
        (or when cancelled, which stops the pumping: nothing more is sent)."""
        self._send = send
        failed = self._pump_failed = self._loop.create_future()
        self._pump()
        try:
            await failed
        finally:
            self._send = None

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self._in_flight and self._send is not None \
                    and (frame := self._pop()) is not None:
                try:
                    sent = self._send(frame)
                except Exception as exc:  # this socket fails alone, not the fan-out's loop
                    self._fail(exc)
                    return
                self._in_flight = True
                try:
                    sent.add_done_callback(self._sent)  # type: ignore[attr-defined]
                except AttributeError:
                    # Not a future: Granian answers a send on a closing socket with a plain
                    # awaitable, already done or raising; a task awaits it, off the hot path.
                    # (Asking first, with asyncio.isfuture, cost 2-3 % of the gateway's loop.)
                    asyncio.ensure_future(sent).add_done_callback(self._sent)
        finally:
            self._pumping = False

    def _sent(self, sent: asyncio.Future[None]) -> None:
        self._in_flight = False
        if not sent.cancelled() and (exc := sent.exception()) is not None:
            self._fail(exc)
            return
        self._pump()

    def _fail(self, exc: BaseException) -> None:
        self._send = None
        failed = self._pump_failed
        if failed is not None and not failed.done():
            failed.set_exception(exc)
