"""One client's WebSocket as the fan-out sees it: a bounded outbox and its close state.

The fan-out never awaits a socket: it appends an already-encoded frame to the outbox and
moves on. A connection whose outbox is full is a slow consumer; it is marked for closing with
1013 and its outbox dropped, so one stuck client costs bounded memory and stalls nobody.

Offering is on the hot path (once per member per message), so the writer's wakeup is a bare
asyncio future, created only when the writer finds the outbox empty and resolved by the next
offer: no Event bookkeeping and no waiter list per frame (the gateway always runs on asyncio:
Granian and Hypercorn both serve it on asyncio). A writer driven by the server's completion
callbacks rather than by a task (:mod:`chatsys.gateway.transport`) asks to be called on each
offer instead, with :meth:`Connection.on_offer`. Writing to the socket is the transport's job.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import anyio

WS_1000_NORMAL = 1000
WS_1001_GOING_AWAY = 1001
WS_1006_NO_CLOSE_FRAME = 1006  # the client went away: the connection ends with no close to send
WS_1008_POLICY_VIOLATION = 1008
WS_1009_MESSAGE_TOO_BIG = 1009
WS_1011_INTERNAL_ERROR = 1011
WS_1013_TRY_AGAIN_LATER = 1013


class Connection:
    """Outbound side of one member socket."""

    def __init__(self, *, user: str, room: str, queue_limit: int, session: str = "") -> None:
        # Set once A created the session: a join enters the room while that call is under way.
        self.session = session
        self.user = user
        self.room = room
        self.queue_limit = queue_limit
        self._outbox: deque[tuple[str | None, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._listener: Callable[[], None] | None = None
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
        if self._listener is not None:
            self._listener()
        else:
            self._wake()
        return True

    def on_offer(self, listener: Callable[[], None] | None) -> None:
        """Call ``listener`` after each frame is queued (None: stop), for a writer that is not
        waiting in :meth:`next_frame`. It must not raise: it runs inside the fan-out's loop."""
        self._listener = listener

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

    def pop(self) -> str | None:
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
            if (frame := self.pop()) is not None:
                return frame
            # Created only when the outbox is empty, in the same step as the check: the next
            # offer resolves it, so no frame can be left waiting.
            self._waiter = self._loop.create_future()
            await self._waiter
        return None
