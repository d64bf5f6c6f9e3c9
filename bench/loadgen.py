"""The WebSocket load generator: connect phase, message phase, delivery accounting.

One Python process cannot drive thousands of sockets receiving tens of thousands of frames a
second, so the generator is a coordinator plus ``--procs`` worker processes. Worker ``k`` owns
users ``k, k+K, k+2K, ...``; every schedule is global (user ``i`` connects at ``start + i/R``,
message ``j`` is due at ``start + j/rate``) so the workers together keep the requested total
rate. Workers take JSON commands on stdin and answer with one JSON line on stdout; the
coordinator merges raw samples (never averages of percentiles).

Timing (open loop, so a slow server cannot slow the offered load down):
- connect: from before the TCP connect to the welcome frame (``start_lag`` says how late the
  generator started connects against their schedule: a generator that cannot keep up with the
  join rate shows up there, not as server latency);
- ack: from the message's *scheduled* send time to its ack, so a generator that falls behind
  shows up as latency rather than as a silently lower rate (``send_lag`` tells which it was).

Delivery: every acknowledged message must reach every member of its room that was connected
when the step started; ``delivered/expected`` counts receipts of acknowledged message ids.

Client (``--client``): ``picows`` by default, ``websockets`` as before. The generator shares
the machine with what it measures, and with the ``websockets`` client it spent more CPU per
message than the ``websockets`` reference server itself; picows's per-frame callbacks (no task
wake-up or queue per frame) take most of that back for the server under test (the figures:
docs/performance.md, "Figures behind design choices").

Standalone: ``python -m bench.loadgen --url ws://127.0.0.1:8080 --users 2000 --connect-rate 200
--room-size 20 --rate 500 --seconds 5`` prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common import PYTHON, Children, cancel_on_sigterm, raise_nofile, summary

log = logging.getLogger("bench.loadgen")
MESSAGE_PREFIX = '{"type":"message","id":"'
CONNECT_TIMEOUT = 15.0
CLIENTS = ("picows", "websockets")
CALL_TIMEOUT = 120.0


def room_of(user: int, room_size: int) -> str:
    return f"r{user // room_size}"


def _is_welcome(data: str | bytes) -> bool:
    try:
        frame = json.loads(data)
    except ValueError:
        return False
    return isinstance(frame, dict) and frame.get("type") == "welcome"


# --- worker ---------------------------------------------------------------------------------

@functools.cache
def _picows_listener() -> type:
    """The picows listener class (built on first use: picows is imported only if chosen).

    picows calls back once per frame, with no task wake-up and no queue in between: the
    generator's CPU per frame is about a third lower than with the ``websockets`` client, and
    that CPU goes back to the servers under test, which share the machine."""
    from picows import WSCloseCode, WSListener, WSMsgType

    class Listener(WSListener):  # type: ignore[misc]
        def __init__(self, worker: Worker) -> None:
            self.worker = worker
            self.welcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self.close_code = 1006  # no close frame seen: abnormal closure

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.TEXT and frame.fin:
                text = frame.get_payload_as_utf8_text()
                if self.welcome.done():
                    self.worker._on_frame(text)
                else:
                    self.welcome.set_result(text)
            elif kind == WSMsgType.CLOSE:
                self.close_code = int(frame.get_close_code() or 1005)
                transport.send_close(WSCloseCode.OK)
                transport.disconnect()
            elif kind not in (WSMsgType.PING, WSMsgType.PONG):  # picows answers pings itself
                self.worker.step.errors["unexpected_frame"] += 1  # no server here fragments

        def on_ws_disconnected(self, transport: Any) -> None:
            if not self.welcome.done():
                self.welcome.set_exception(ConnectionError("closed before welcome"))

    return Listener


class _PicowsSocket:
    """What the worker uses of a ``websockets`` connection, over a picows transport."""

    def __init__(self, transport: Any, listener: Any) -> None:
        from picows import WSMsgType

        self._ws, self._text, self._listener = transport, WSMsgType.TEXT, listener
        self.transport = transport.underlying_transport  # for abort()

    @property
    def close_code(self) -> int:
        return int(self._listener.close_code)

    async def send(self, text: str) -> None:
        if self._ws.is_disconnected:
            raise ConnectionError("closed")
        self._ws.send(self._text, text.encode())

    async def close(self) -> None:
        from picows import WSCloseCode

        self._ws.send_close(WSCloseCode.OK)
        await self._ws.wait_disconnected()


class _Refused(Exception):
    """A connect attempt that failed, with the kind it is counted under."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Tally:
    """Results of concurrent attempts; ``wait`` returns once ``expected`` have reported."""

    def __init__(self, expected: int) -> None:
        self.items: list[tuple[str, Any]] = []
        self.lags: list[float] = []  # ms each attempt started after its due time
        self.expected = expected
        self.full = asyncio.Event()
        if expected <= 0:
            self.full.set()

    def append(self, item: tuple[str, Any]) -> None:
        self.items.append(item)
        if len(self.items) >= self.expected:
            self.full.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.full.wait()


@dataclass
class Client:
    user: int
    room: str
    ws: Any = None
    alive: bool = False


@dataclass
class Step:
    """What one worker saw of one message step."""

    pending: dict[str, tuple[float, str]] = field(default_factory=dict)  # ref -> (due, room)
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    acked: list[tuple[str, str]] = field(default_factory=list)  # (message id, room)
    errors: Counter[str] = field(default_factory=Counter)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Worker:
    """Holds this process's share of the sockets and runs the coordinator's commands."""

    def __init__(self, url: str, index: int, procs: int, tg: asyncio.TaskGroup,
                 client: str = CLIENTS[0]) -> None:
        self.url = url.rstrip("/")
        self.client = client
        self.index = index
        self.procs = procs
        self.tg = tg
        self.clients: dict[int, Client] = {}
        self.receipts: Counter[str] = Counter()
        self.step = Step()
        self.pongs = 0
        self.pongs_wanted = 0
        self.all_pongs = asyncio.Event()
        self.closed_codes: Counter[str] = Counter()
        self.room_size = 1

    # receiving
    def _on_frame(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            data = data.decode()
        if data.startswith(MESSAGE_PREFIX):  # the hot path: no JSON parse for fan-out frames
            end = data.find('"', len(MESSAGE_PREFIX))
            self.receipts[data[len(MESSAGE_PREFIX):end]] += 1
            return
        try:
            frame = json.loads(data)
        except ValueError:
            self.step.errors["bad_json"] += 1
            return
        kind = frame.get("type")
        if kind == "ack":
            self._settle(frame.get("ref"), frame.get("id"))
        elif kind == "message":
            self.receipts[str(frame.get("id"))] += 1
        elif kind == "pong":
            self.pongs += 1
            if self.pongs >= self.pongs_wanted:
                self.all_pongs.set()
        elif kind == "error":
            self.step.errors[str(frame.get("code"))] += 1
            self._settle(frame.get("ref"), None)

    def _settle(self, ref: Any, message_id: Any) -> None:
        step = self.step
        entry = step.pending.pop(ref, None) if isinstance(ref, str) else None
        if entry is None:
            return
        due, room = entry
        if message_id is not None:
            step.latencies.append((time.perf_counter() - due) * 1000)
            step.acked.append((str(message_id), room))
        if not step.pending:
            step.done.set()

    async def _lifetime(self, client: Client, due: float, report: Tally) -> None:
        """Connect at ``due`` (perf_counter time), then read until the socket closes."""
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        url = f"{self.url}/ws/chat?user=u{client.user}&room={client.room}"
        open_socket = self._open_picows if self.client == "picows" else self._open_websockets
        started = time.perf_counter()
        report.lags.append((started - due) * 1000)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                ws, welcome, read_until_closed = await open_socket(url)
        except _Refused as exc:
            report.append(("fail", exc.kind))
            return
        except TimeoutError:
            report.append(("fail", "TimeoutError"))
            return
        if not _is_welcome(welcome):
            report.append(("fail", "no_welcome"))
            ws.transport.abort()
            return
        report.append(("ok", (time.perf_counter() - started) * 1000))
        client.ws, client.alive = ws, True
        try:
            await read_until_closed()
        finally:
            client.alive = False
            self.closed_codes[str(ws.close_code)] += 1

    async def _open_picows(self, url: str) -> tuple[Any, Any, Callable[[], Awaitable[Any]]]:
        """A socket, its first frame, and how to read it until it closes (frames are handed
        to ``_on_frame`` by the listener's callbacks meanwhile)."""
        from picows import WSError, ws_connect

        try:
            transport, listener = await ws_connect(
                functools.partial(_picows_listener(), self), url, max_frame_size=1 << 22,
                websocket_handshake_timeout=CONNECT_TIMEOUT)
        except (WSError, OSError) as exc:
            status = re.search(r"\b([1-5]\d\d)\b", str(exc)) if isinstance(exc, WSError) else None
            raise _Refused(f"http_{status[1]}" if status else type(exc).__name__) from None
        try:
            welcome = await listener.welcome
        except BaseException as exc:
            transport.disconnect(graceful=False)
            if isinstance(exc, ConnectionError):
                raise _Refused(type(exc).__name__) from None
            raise
        return _PicowsSocket(transport, listener), welcome, transport.wait_disconnected

    async def _open_websockets(self, url: str) -> tuple[Any, Any, Callable[[], Awaitable[Any]]]:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        try:
            ws = await connect(url, compression=None, ping_interval=None, max_size=1 << 22,
                               max_queue=64, close_timeout=1, open_timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            raise _Refused(f"http_{status}" if status else type(exc).__name__) from None
        try:
            welcome = await ws.recv()
        except BaseException as exc:
            ws.transport.abort()
            if isinstance(exc, Exception):
                raise _Refused(type(exc).__name__) from None
            raise

        async def read_until_closed() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for data in ws:
                    self._on_frame(data)

        return ws, welcome, read_until_closed

    # commands
    async def connect(self, users: int, rate: float, room_size: int, start_at: float,
                      first: int = 0) -> dict[str, Any]:
        """Connect users ``first..first+users-1`` that belong to this worker, on schedule."""
        self.room_size = room_size
        t0 = time.perf_counter() + (start_at - time.time())
        mine = [i for i in range(first, first + users) if i % self.procs == self.index]
        report = Tally(len(mine))
        for i in mine:
            client = self.clients[i] = Client(i, room_of(i, room_size))
            self.tg.create_task(self._lifetime(client, t0 + (i - first) / rate, report))
        await report.wait(users / rate + CONNECT_TIMEOUT + 10)
        ok = [v for kind, v in report.items if kind == "ok"]
        failures = Counter(v for kind, v in report.items if kind == "fail")
        failures["timeout"] += len(mine) - len(report.items)
        return {"latencies": [round(v, 3) for v in ok], "failures": dict(+failures),
                "attempted": len(mine), "lag_p99": summary(report.lags)["p99"]}

    async def disconnect(self) -> dict[str, Any]:
        """Close every socket and forget its user: the next connect starts from none."""
        await self.close()
        count = len(self.clients)
        self.clients = {}
        return {"disconnected": count}

    async def _reconnect(self) -> int:
        """Bring back sockets that the server closed (e.g. 1013 after an overload step)."""
        dead = [c for c in self.clients.values() if not c.alive]
        if not dead:
            return 0
        report = Tally(len(dead))
        now = time.perf_counter()
        for n, client in enumerate(dead):
            self.tg.create_task(self._lifetime(client, now + n * 0.005, report))
        await report.wait(len(dead) * 0.005 + CONNECT_TIMEOUT)
        return len(dead)

    def members(self) -> dict[str, int]:
        return dict(Counter(c.room for c in self.clients.values() if c.alive))

    async def send(self, rate: float, seconds: float, start_at: float, step_id: int,
                   drain: float) -> dict[str, Any]:
        """Send this worker's share of ``rate`` messages/s for ``seconds``, then await acks."""
        reconnected = await self._reconnect()
        self.receipts = Counter()
        self.step = step = Step()
        members = self.members()
        senders = sorted((c for c in self.clients.values() if c.alive),
                         key=lambda c: (c.user % self.room_size, c.user))
        total = round(rate * seconds)
        mine = range(self.index, total, self.procs)
        t0 = time.perf_counter() + (start_at - time.time())
        if senders:
            for n, j in enumerate(mine):
                due = t0 + j / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                client = senders[n % len(senders)]
                if not client.alive:
                    step.errors["closed"] += 1
                    continue
                ref = f"{step_id}.{self.index}.{j}"
                step.pending[ref] = (due, client.room)
                step.lags.append((time.perf_counter() - due) * 1000)
                try:
                    await client.ws.send(f'{{"type":"text","text":"m {ref}","ref":"{ref}"}}')
                except Exception:
                    step.pending.pop(ref, None)
                    step.errors["send_failed"] += 1
        # ``done`` may have been set while sending, whenever every ack so far had come back.
        step.done.clear()
        if step.pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain):
                    await step.done.wait()
        lags = summary(step.lags)
        return {"latencies": [round(v, 3) for v in step.latencies], "sent": len(step.lags),
                "acked": [list(a) for a in step.acked], "errors": dict(step.errors),
                "unacked": len(step.pending), "members": members,
                "lag_p99": lags["p99"], "lag_max": lags["max"], "reconnected": reconnected}

    async def ping(self, seconds: float) -> dict[str, Any]:
        """One protocol ping per open socket; counts the pongs that come back in time."""
        alive = [c for c in self.clients.values() if c.alive]
        self.pongs, self.pongs_wanted = 0, len(alive)
        self.all_pongs = asyncio.Event()
        for n, client in enumerate(alive):
            with contextlib.suppress(Exception):
                await client.ws.send(f'{{"type":"ping","ref":"p{n}"}}')
        if self.pongs < len(alive):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self.all_pongs.wait()
        return {"sockets": len(alive), "pongs": self.pongs}

    async def close(self) -> None:
        """Close every socket, bounded: a server that hangs on close gets its socket aborted."""
        alive = [c for c in self.clients.values() if c.alive and c.ws is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                await asyncio.gather(*(c.ws.close() for c in alive), return_exceptions=True)
        for c in self.clients.values():
            if c.ws is not None:
                c.ws.transport.abort()


async def worker_main(url: str, index: int, procs: int, client: str) -> None:
    """Serve commands from stdin until ``quit`` or EOF; every answer is one JSON line."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout

    def answer(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        out.flush()

    async with asyncio.TaskGroup() as tg:
        worker = Worker(url, index, procs, tg, client)
        answer({"ready": True})
        try:
            while line := await reader.readline():
                cmd = json.loads(line)
                op = cmd.pop("op")
                if op == "quit":
                    break
                if op == "connect":
                    answer(await worker.connect(**cmd))
                elif op == "send":
                    answer(await worker.send(**cmd))
                elif op == "receipts":
                    answer({"receipts": dict(worker.receipts)})
                elif op == "disconnect":
                    answer(await worker.disconnect())
                elif op == "members":
                    answer({"members": worker.members(), "closed": dict(worker.closed_codes)})
                elif op == "ping":
                    answer(await worker.ping(**cmd))
                else:
                    answer({"error": f"unknown op {op}"})
        finally:
            await worker.close()
        raise _Done


class _Done(Exception):
    """Ends the worker's task group (and with it every socket reader)."""


def run_worker(url: str, index: int, procs: int, client: str) -> None:
    raise_nofile(65536)
    try:
        _run(worker_main(url, index, procs, client))
    except* _Done:
        pass


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# --- coordinator ----------------------------------------------------------------------------

class LoadGen:
    """Drives ``procs`` worker processes against one server and merges what they saw."""

    def __init__(self, url: str, procs: int, children: Children,
                 client: str = CLIENTS[0]) -> None:
        self.url = url
        self.procs = procs
        self.client = client
        self.children = children
        self.workers: list[asyncio.subprocess.Process] = []
        self.step_id = 0
        self.room_size = 1
        self.next_user = 0  # every connect takes fresh user ids and, from there, fresh rooms

    async def __aenter__(self) -> LoadGen:
        for k in range(self.procs):
            proc = await self.children.spawn(
                [PYTHON, "-m", "bench.loadgen", "--worker", "--url", self.url,
                 "--index", str(k), "--procs", str(self.procs), "--client", self.client],
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            self.workers.append(proc)
        for proc in self.workers:
            await self._read(proc, 30)
        return self

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.workers]

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.workers:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.write(b'{"op":"quit"}\n')
                await proc.stdin.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(asyncio.gather(
                *(p.wait() for p in self.workers))), 8)
        for proc in self.workers:
            await self.children.stop(proc, grace=2)

    @staticmethod
    async def _read(proc: asyncio.subprocess.Process, seconds: float) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), seconds)
        if not line:
            raise RuntimeError(f"load worker {proc.pid} exited ({await proc.wait()})")
        return json.loads(line)  # type: ignore[no-any-return]

    async def _call(self, cmd: dict[str, Any], seconds: float = CALL_TIMEOUT,
                    ) -> list[dict[str, Any]]:
        data = (json.dumps(cmd) + "\n").encode()
        for proc in self.workers:
            assert proc.stdin is not None
            proc.stdin.write(data)
            await proc.stdin.drain()
        return list(await asyncio.gather(*(self._read(p, seconds) for p in self.workers)))

    async def connect(self, users: int, rate: float, room_size: int) -> dict[str, Any]:
        """Connect phase: ``users`` sockets at ``rate``/s into rooms of ``room_size``.

        Users are numbered on from the last connect (rounded up to a whole room), so a second
        connect joins new users into new, empty rooms."""
        self.room_size = room_size
        first = -(-self.next_user // room_size) * room_size
        self.next_user = first + users
        start_at = time.time() + 0.5
        started = time.perf_counter()
        parts = await self._call({"op": "connect", "users": users, "rate": rate,
                                  "room_size": room_size, "start_at": start_at,
                                  "first": first}, seconds=users / rate + CALL_TIMEOUT)
        wall = time.perf_counter() - started - 0.5
        latencies = [v for p in parts for v in p["latencies"]]
        failures: Counter[str] = Counter()
        for p in parts:
            failures.update(p["failures"])
        stats = summary(latencies)
        return {"users": users, "rate": rate, "room_size": room_size,
                "connected": len(latencies), "failures": sum(failures.values()),
                "failure_kinds": dict(failures), "mean_ms": stats["mean"],
                "p50_ms": stats["p50"], "p99_ms": stats["p99"], "max_ms": stats["max"],
                "achieved_per_s": round(len(latencies) / wall, 1) if wall > 0 else None,
                "start_lag_p99_ms": max((p["lag_p99"] or 0) for p in parts),
                "active_s": round(wall, 3)}

    async def disconnect(self) -> int:
        """Close every socket of every worker; returns how many users were dropped."""
        return sum(p["disconnected"] for p in await self._call({"op": "disconnect"}))

    async def messages(self, rate: float, seconds: float, *, drain: float = 3.0,
                       settle: float = 2.0) -> dict[str, Any]:
        """One message step at a fixed total ``rate``; figures merged over every worker."""
        self.step_id += 1
        start_at = time.time() + 0.3
        parts = await self._call({"op": "send", "rate": rate, "seconds": seconds,
                                  "start_at": start_at, "step_id": self.step_id,
                                  "drain": drain}, seconds=seconds + drain + CALL_TIMEOUT)
        members: Counter[str] = Counter()
        for p in parts:
            members.update(p["members"])
        acked = [(mid, room) for p in parts for mid, room in p["acked"]]
        expected = sum(members[room] for _, room in acked)
        # Fan-out trails the ack: poll receipts until complete or the settle time is up.
        deadline = time.monotonic() + settle
        delivered, duplicates = 0, 0
        while True:
            receipts: Counter[str] = Counter()
            for r in await self._call({"op": "receipts"}):
                receipts.update(r["receipts"])
            delivered = sum(min(receipts[mid], members[room]) for mid, room in acked)
            duplicates = sum(max(0, receipts[mid] - members[room]) for mid, room in acked)
            if delivered >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        latencies = [v for p in parts for v in p["latencies"]]
        errors: Counter[str] = Counter()
        for p in parts:
            errors.update(p["errors"])
        stats = summary(latencies)
        sent = sum(p["sent"] for p in parts)
        lag_p99 = max((p["lag_p99"] or 0) for p in parts)
        return {"rate": rate, "seconds": seconds, "sent": sent, "acked": len(acked),
                "unacked": sum(p["unacked"] for p in parts), "errors": dict(errors),
                "ack_mean_ms": stats["mean"], "ack_p50_ms": stats["p50"],
                "ack_p99_ms": stats["p99"], "ack_max_ms": stats["max"],
                "achieved_per_s": round(len(acked) / seconds, 1),
                "delivered": delivered, "expected": expected,
                "delivery_ratio": round(delivered / expected, 6) if expected else None,
                "duplicates": duplicates, "send_lag_p99_ms": lag_p99,
                "members": sum(members.values()),
                "reconnected": sum(p["reconnected"] for p in parts)}

    async def ping(self, seconds: float = 30.0) -> dict[str, int]:
        parts = await self._call({"op": "ping", "seconds": seconds}, seconds=seconds + 30)
        return {"sockets": sum(p["sockets"] for p in parts),
                "pongs": sum(p["pongs"] for p in parts)}


def holds(step: dict[str, Any], p99_limit_ms: float = 100.0) -> bool:
    """The knee criterion: ack p99 within the limit, everything acked and fully delivered."""
    return (step["ack_p99_ms"] is not None and step["ack_p99_ms"] <= p99_limit_ms
            and step["unacked"] == 0 and not step["errors"]
            and step["acked"] >= 0.99 * step["sent"] and step["sent"] > 0
            and step["delivered"] == step["expected"])


async def standalone(args: argparse.Namespace) -> dict[str, Any]:
    cancel_on_sigterm()
    children = Children()
    try:
        async with LoadGen(args.url, args.procs, children, args.client) as gen:
            result: dict[str, Any] = {"url": args.url, "procs": args.procs}
            result["connect"] = await gen.connect(args.users, args.connect_rate, args.room_size)
            if args.rate > 0:
                result["messages"] = await gen.messages(args.rate, args.seconds)
            return result
    finally:
        await children.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8080")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--connect-rate", type=float, default=200.0)
    parser.add_argument("--room-size", type=int, default=20)
    parser.add_argument("--rate", type=float, default=500.0, help="messages/s in total (0: none)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2, help="load worker processes")
    parser.add_argument("--client", choices=CLIENTS, default=CLIENTS[0],
                        help="WebSocket client library of the load workers")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.worker:
        run_worker(args.url, args.index, args.procs, args.client)
        return
    raise_nofile(65536)
    print(json.dumps(_run(standalone(args))), flush=True)


if __name__ == "__main__":
    main()
