"""The benchmark runner: chatsys and the bare references, one after another, in one run.

For each target it starts the server, runs the connect phase (default 2,000 users at 200/s in
rooms of 20), then message steps at fixed rates and a knee search (doubling, then bisection:
the highest total rate whose ack p99 stays <= 100 ms with every acknowledged message delivered
to every member), then the connect knee search (the same search over join rates: the highest
rate of users joining fresh rooms whose connect p99 stays <= 100 ms with none failing), and
stops the server. Every absolute number drifts with the machine and with whatever else runs on
it; the ratios to the references (``asgi-granian``, which the targets are stated against, and
``websockets``) measured minutes apart in the same run are what the performance targets are
stated in, and every table opens with a calibration line: the machine, and the ``websockets``
reference's two knees in this run.

Prints a table, then one JSON line (the same object ``--json`` writes, indented).

    python -m bench.run                      # full run, about 7 minutes
    python -m bench.run --repeat 3           # three rounds, medians per target
    python -m bench.run --quick              # seconds: a smoke test of the whole pipeline
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.abc

from bench.common import (
    PYTHON,
    ROOT,
    Children,
    cancel_on_sigterm,
    cpu_seconds,
    process_tree,
    raise_nofile,
    rss_bytes,
)
from bench.loadgen import CLIENTS, LoadGen, holds
from chatsys.runtime import ready
from chatsys.runtime.topology import Topology

REFERENCE = "websockets"
TARGET_REFERENCE = "asgi-granian"  # what docs/contract.md states the targets against
ALL_TARGETS = ["websockets", "asgi-granian", "quart-granian", "quart-hypercorn",
               "chatsys-granian", "chatsys-hypercorn"]
REDIS_TARGETS = ["chatsys-redis-1", "chatsys-redis-2"]
EXTRA_TARGETS = ["asgi-hypercorn"]  # accepted by --targets, not in the default run
READY_TIMEOUT = 60.0
SEED = {"connect_mean_ms": 69.57, "rps_2000_users": 122.2, "peak_rps": 290.9}


@dataclass
class Params:
    users: int
    connect_rate: float
    room_size: int
    rates: list[float]
    step_seconds: float
    knee: bool
    knee_start: float
    knee_max: float
    knee_resolution: float
    knee_bisect: int
    p99_limit_ms: float
    procs: int
    cooldown: float
    retries: int
    client: str = CLIENTS[0]
    connect_knee: bool = False
    connect_knee_start: float = 200.0
    connect_knee_max: float = 12800.0
    connect_p99_limit_ms: float = 100.0
    connect_probe_seconds: float = 3.0
    connect_probe_min_users: int = 200
    connect_probe_max_users: int = 3000


@dataclass
class Server:
    """A started target: its port and the pids whose RSS counts as 'the server'."""

    name: str
    port: int
    gateway_pid: int
    a_pid: int | None = None


async def _http_ok(port: int, path: str) -> bool:
    """A bare HTTP/1.0 GET on loopback (no client library: the runner stays dependency-light)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(2):
            status = await reader.readline()
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError, IndexError):
        return False
    finally:
        writer.close()


async def _http_get(port: int, path: str) -> str:
    """The body of a bare HTTP/1.0 GET on loopback ("" if it failed)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return ""
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(5):
            data = await reader.read()
        return data.partition(b"\r\n\r\n")[2].decode(errors="replace")
    except (OSError, TimeoutError):
        return ""
    finally:
        writer.close()


JOIN_STAGES = ("validate", "session", "room_join", "history", "accept", "welcome", "presence")


async def _join_timings(port: int) -> dict[str, tuple[float, float]]:
    """(sum, count) of the gateway's ``chatsys_ws_connect_seconds`` ("connect") and of each
    stage of ``chatsys_ws_connect_stage_seconds``, as its /metrics says now."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(await _http_get(port, "/metrics")):
        if family.name not in ("chatsys_ws_connect_seconds", "chatsys_ws_connect_stage_seconds"):
            continue
        for sample in family.samples:
            key = sample.labels.get("stage", "connect")
            total, count = out.get(key, (0.0, 0.0))
            if sample.name.endswith("_sum"):
                out[key] = (sample.value, count)
            elif sample.name.endswith("_count"):
                out[key] = (total, sample.value)
    return out


def _join_breakdown(before: dict[str, tuple[float, float]],
                    after: dict[str, tuple[float, float]]) -> dict[str, float | None]:
    """Mean ms of the gateway's connect (upgrade to welcome) and of each stage between two
    readings; a stage that did not run (history without ``since``) is None."""
    out: dict[str, float | None] = {}
    for key in ("connect", *JOIN_STAGES):
        total = after.get(key, (0.0, 0.0))[0] - before.get(key, (0.0, 0.0))[0]
        count = after.get(key, (0.0, 0.0))[1] - before.get(key, (0.0, 0.0))[1]
        out[key] = round(total / count * 1000, 3) if count else None
    return out


async def _welcome_ok(port: int) -> bool:
    """One real WebSocket join: a server is ready only once it sends a welcome."""
    from websockets.asyncio.client import connect

    try:
        async with asyncio.timeout(3):
            async with connect(f"ws://127.0.0.1:{port}/ws/chat?user=probe&room=probe",
                               compression=None, ping_interval=None) as ws:
                return '"welcome"' in str(await ws.recv())
    except Exception:
        return False


async def _wait_ready(proc: asyncio.subprocess.Process | anyio.abc.Process, port: int,
                      http: bool) -> None:
    async with asyncio.timeout(READY_TIMEOUT):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"server exited with {proc.returncode} while starting")
            if (not http or await _http_ok(port, "/readyz")) and await _welcome_ok(port):
                return
            await asyncio.sleep(0.2)


def reference_command(target: str, ready_file: Path) -> list[str]:
    return [PYTHON, "-m", "bench.refs", target.removeprefix("quart-"), "--port", "0",
            "--ready-file", str(ready_file)]


def chatsys_topology(target: str, work: Path, data_dir: Path, store: str | None,
                     extra: tuple[str, ...] = (), src: Path | None = None) -> Topology:
    """What ``chatsys all`` runs (P, A and B), or for ``chatsys-redis-N`` A on N processes
    sharing one local redis-server (append-only file, fsync always, as the scaled deployment
    configures it), B, and one gateway balancing over every A: the scaled topology, on one
    machine."""
    server = "hypercorn" if target == "chatsys-hypercorn" else "granian"
    replicas = int(target.rsplit("-", 1)[1]) if target in REDIS_TARGETS else 1
    return Topology(
        work, a_replicas=replicas, data_dir=data_dir, store=store or "", cwd=src,
        common_flags=["--log-level", "warning", "--shutdown-grace", "5"],
        gateway_flags=["--server", server, "--drain-timeout", "0.2", *extra])


@contextlib.asynccontextmanager
async def started(name: str, children: Children, log_dir: Path,  # type: ignore[no-untyped-def]
                  store: str | None = None, extra: tuple[str, ...] = ()):
    """Start target ``name`` on a port it chooses and stop it, and every process it is made
    of, afterwards.

    ``name@DIR`` runs the target from the source tree DIR (a checkout or ``git archive`` of
    another commit): a before/after comparison side by side in one run, against the same
    references. DIR's servers must report their ports (``--ready-file``, this tree or later).
    """
    target, _, src = name.partition("@")
    label = name.replace("/", "_").replace("@", "-")
    work = log_dir / label
    work.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-{label}-", dir=log_dir))
    try:
        if target.startswith("chatsys"):
            system = chatsys_topology(target, work, data_dir, store, extra,
                                      Path(src) if src else None)
            try:
                await system.start()
                gateway, a = (next(m for m in system.members if m.module == module)
                              for module in ("P", "A"))
                assert gateway.proc is not None and a.proc is not None
                await _wait_ready(gateway.proc, gateway.port, http=True)
                yield Server(name, gateway.port, gateway.proc.pid, a.proc.pid)
            finally:
                await system.stop()
        else:
            proc, port = await _started_reference(target, children, work,
                                                  Path(src) if src else None)
            try:
                yield Server(name, port, proc.pid)
            finally:
                await children.stop(proc)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def _started_reference(target: str, children: Children, work: Path,
                             src: Path | None) -> tuple[asyncio.subprocess.Process, int]:
    ready_file = work / "ready.json"
    ready_file.unlink(missing_ok=True)
    with (work / "server.log").open("ab") as log:
        proc = await children.spawn(reference_command(target, ready_file), stdout=log,
                                    stderr=log, cwd=src)
    async with asyncio.timeout(READY_TIMEOUT):
        while (ports := ready.read(ready_file)) is None:
            if proc.returncode is not None:
                raise RuntimeError(f"{target} exited with {proc.returncode} while starting: "
                                   f"see {work / 'server.log'}")
            await asyncio.sleep(0.05)
    await _wait_ready(proc, ports.port, http=False)
    return proc, ports.port


class Profiler:
    """py-spy record on the gateway and A while the knee search runs (``--py-spy DIR``)."""

    def __init__(self, out: Path | None, children: Children) -> None:
        self.out = out
        self.children = children
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, server: Server) -> None:
        if self.out is None or not server.name.startswith("chatsys"):
            return
        spy = shutil.which("py-spy")
        if spy is None:
            print("py-spy not found: no profile", file=sys.stderr)
            return
        self.out.mkdir(parents=True, exist_ok=True)
        label = server.name.replace("/", "_").replace("@", "-")
        for role, pid in (("P", server.gateway_pid), ("A", server.a_pid)):
            if pid is None:
                continue
            self.procs.append(await self.children.spawn(
                [spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                 "--nonblocking", "--output", str(self.out / f"{label}-{role}.txt")],
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))

    async def stop(self) -> None:
        """SIGINT makes py-spy write its output; the runner then reaps it like any child."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 20)
            await self.children.stop(proc, grace=1)
        self.procs = []


async def knee_search(holds_at: Callable[[float], Awaitable[bool]], start: float, top: float,
                      resolution: float, bisect: int) -> float:
    """Highest rate that holds: doubling from ``start`` up to ``top`` (halving if ``start``
    fails), then bisection until the bracket is within ``resolution`` or ``bisect`` steps are
    spent. The message knee and the connect knee are both searched this way."""
    lo, hi = 0.0, None
    rate = start
    while rate <= top:
        if await holds_at(rate):
            lo, rate = rate, rate * 2
        else:
            hi = rate
            break
    if hi is None:
        return lo
    while lo == 0 and hi > start / 4:
        rate = round(hi / 2)
        if await holds_at(rate):
            lo = rate
        else:
            hi = rate
    for _ in range(bisect):
        if lo == 0 or hi / lo <= 1 + resolution:
            break
        rate = round((lo + hi) / 2)
        if await holds_at(rate):
            lo = rate
        else:
            hi = rate
    return lo


def probe_users(rate: float, p: Params) -> int:
    """Users one connect-knee probe joins: ``connect_probe_seconds`` of joins at ``rate``, at
    least enough for the p99 to be more than the one slowest join, at most what a probe can
    hold open on the machine (above that the probe is shorter than the nominal seconds)."""
    return max(p.connect_probe_min_users,
               min(p.connect_probe_max_users, round(rate * p.connect_probe_seconds)))


def connect_holds(c: dict[str, Any], p: Params) -> bool:
    """The connect knee criterion: every user joined, connect p99 within the limit, and the
    generator started the joins on schedule (else the rate was not offered at all)."""
    return (c["failures"] == 0 and c["connected"] == c["users"] and c["p99_ms"] is not None
            and c["p99_ms"] <= p.connect_p99_limit_ms
            and (c["start_lag_p99_ms"] or 0) <= p.connect_p99_limit_ms)


# The generator is saturated when its workers were this busy on average over a probe (one
# event loop each, so 1.0 is a full core), or when it started joins later than the connect p99
# limit (then it did not offer the rate at all). Later starts below the limit are not counted:
# on a shared machine a neighbour's burst delays them too, with the generator far from busy.
GENERATOR_BUSY = 0.8


async def connect_knee(gen: LoadGen, server: Server, p: Params) -> dict[str, Any]:
    """The connect knee: probes at join rates searched like the message knee. Each probe joins
    fresh users into fresh rooms of ``room_size`` on a server with no one connected, then
    disconnects them all and waits ``cooldown`` so that their leaves are done before the next
    probe: every probe starts from the same empty server, without the seconds a restart of
    chatsys's three processes would cost per probe.

    Besides the server, the probe reads the generator's CPU: when a failing probe finds the
    generator saturated (``GENERATOR_BUSY``, or joins started too late), the knee is reported
    as bound by the generator, a lower bound of the server's."""
    a_pids = [server.a_pid] if server.a_pid is not None else []
    probes: dict[float, dict[str, Any]] = {}
    await gen.disconnect()  # the message phase's users
    await asyncio.sleep(p.cooldown)

    async def holds_at(rate: float) -> bool:
        if rate in probes:
            return bool(probes[rate]["holds"])
        attempts = []
        for _ in range(1 + p.retries):
            groups = (process_tree(server.gateway_pid), a_pids, gen.pids)
            cpu_before = tuple(cpu_seconds(g) for g in groups)
            c = await gen.connect(probe_users(rate, p), rate, p.room_size)
            cpu_after = tuple(cpu_seconds(g) for g in groups)
            await gen.disconnect()
            joined = max(c["connected"], 1)
            c["server_cpu_us_per_connect"] = round((cpu_after[0] - cpu_before[0]) / joined * 1e6)
            c["a_cpu_us_per_connect"] = round((cpu_after[1] - cpu_before[1]) / joined * 1e6) \
                if a_pids else None
            busy = (cpu_after[2] - cpu_before[2]) / max(c["active_s"], 1e-3) / len(gen.pids)
            c["load_busy"] = round(busy, 3)
            c["generator_saturated"] = (busy >= GENERATOR_BUSY or (c["start_lag_p99_ms"] or 0)
                                        > p.connect_p99_limit_ms)
            c["holds"] = connect_holds(c, p)
            attempts.append(c)
            await asyncio.sleep(p.cooldown)  # the leaves, before the next probe joins
            if c["holds"] or c["failures"]:  # failed joins are not noise: not retried
                break
        best = next((a for a in attempts if a["holds"]), attempts[-1])
        best["attempts"] = [{k: a[k] for k in ("p99_ms", "failures", "start_lag_p99_ms",
                                               "load_busy", "holds")} for a in attempts]
        probes[rate] = best
        return bool(best["holds"])

    knee = await knee_search(holds_at, p.connect_knee_start, p.connect_knee_max,
                             p.knee_resolution, p.knee_bisect)
    failed = [rate for rate, c in probes.items() if not c["holds"] and rate > knee]
    if not failed:
        bound_by = "ceiling"  # held up to --connect-knee-max
    else:
        bound_by = "generator" if probes[min(failed)]["generator_saturated"] else "server"
    return {"connect_knee_per_s": knee, "connect_knee_bound_by": bound_by,
            "connect_probes": [probes[r] for r in sorted(probes)]}


async def measure(target: str, p: Params, children: Children, log_dir: Path,
                  profile_dir: Path | None, store: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"target": target}
    started_at = time.monotonic()
    async with started(target, children, log_dir, store) as server:
        rss_idle = rss_bytes(process_tree(server.gateway_pid))
        url = f"ws://127.0.0.1:{server.port}"
        async with LoadGen(url, p.procs, children, p.client) as gen:
            chatsys = server.a_pid is not None
            timings = await _join_timings(server.port) if chatsys else {}
            joiners = (process_tree(server.gateway_pid), [server.a_pid] if chatsys else [])
            cpu = tuple(cpu_seconds(g) for g in joiners)
            result["connect"] = await gen.connect(p.users, p.connect_rate, p.room_size)
            # Where a join's time and CPU go (chatsys): the gateway's own stage timings and
            # the CPU P and A spent per user joined, over the connect phase alone.
            joined = max(result["connect"]["connected"], 1)
            spent = [cpu_seconds(g) - before for g, before in zip(joiners, cpu, strict=True)]
            result["connect"]["server_cpu_us_per_join"] = round(spent[0] / joined * 1e6)
            if chatsys:
                result["connect"]["a_cpu_us_per_join"] = round(spent[1] / joined * 1e6)
                result["connect"]["gateway_ms"] = _join_breakdown(
                    timings, await _join_timings(server.port))
            result["gateway_rss_idle_mib"] = round(rss_idle / 2**20, 1)
            result["gateway_rss_connected_mib"] = round(
                rss_bytes(process_tree(server.gateway_pid)) / 2**20, 1)
            steps: dict[float, dict[str, Any]] = {}
            a_pids = [server.a_pid] if server.a_pid is not None else []

            async def step(rate: float) -> dict[str, Any]:
                """One rate, measured once; a failure is confirmed by a second attempt (a
                shared machine stalls now and then), and the better attempt is kept."""
                if rate in steps:
                    return steps[rate]
                attempts = []
                for _ in range(1 + p.retries):
                    gw_tree = process_tree(server.gateway_pid)
                    groups = (gw_tree, a_pids, gen.pids)
                    cpu_before = tuple(cpu_seconds(g) for g in groups)
                    r = await gen.messages(rate, p.step_seconds)
                    r["holds"] = holds(r, p.p99_limit_ms)
                    _cpu_per_message(r, cpu_before, tuple(cpu_seconds(g) for g in groups))
                    attempts.append(r)
                    if r["holds"] or not _latency_only(r):
                        break
                    await asyncio.sleep(p.cooldown)  # let a saturated server catch up
                best = next((a for a in attempts if a["holds"]), attempts[-1])
                best["attempts"] = [{k: a[k] for k in ("ack_p99_ms", "delivery_ratio",
                                                       "unacked", "send_lag_p99_ms", "holds")}
                                    for a in attempts]
                steps[rate] = best
                return best

            for rate in p.rates:
                await step(rate)
            if p.knee:
                profiler = Profiler(profile_dir, children)
                await profiler.start(server)

                async def step_holds(rate: float) -> bool:
                    return bool((await step(rate))["holds"])

                try:
                    result["knee_per_s"] = await knee_search(
                        step_holds, p.knee_start, p.knee_max, p.knee_resolution,
                        p.knee_bisect)
                finally:
                    await profiler.stop()
                result["knee_deliveries_per_s"] = result["knee_per_s"] * p.room_size
            result["steps"] = [steps[r] for r in sorted(steps)]
            result["gateway_rss_after_mib"] = round(
                rss_bytes(process_tree(server.gateway_pid)) / 2**20, 1)
            if server.a_pid is not None:
                result["a_rss_after_mib"] = round(rss_bytes([server.a_pid]) / 2**20, 1)
            if p.connect_knee:
                result.update(await connect_knee(gen, server, p))
    result["seconds"] = round(time.monotonic() - started_at, 1)
    return result


def _latency_only(step: dict[str, Any]) -> bool:
    """Failed on latency alone: worth a second attempt (a neighbour's burst on a shared
    machine can do that). Lost acks or deliveries are not noise and are not retried."""
    return step["unacked"] == 0 and not step["errors"] and step["delivered"] == step["expected"]


def _cpu_per_message(step: dict[str, Any], before: tuple[float, ...],
                     after: tuple[float, ...]) -> None:
    """CPU time of the server (P for chatsys), of A and of the load generator's workers per
    acknowledged message, in µs. The generator shares the machine, so its CPU is CPU the
    servers under test did not get.

    Counted over the whole step including its drain and settle time, so it is an upper bound
    that includes idle wakeups; at a fixed rate it compares builds and servers fairly."""
    acked = max(step["acked"], 1)
    step["server_cpu_us_per_msg"] = round((after[0] - before[0]) / acked * 1e6, 1)
    step["a_cpu_us_per_msg"] = round((after[1] - before[1]) / acked * 1e6, 1) \
        if after[1] or before[1] else None
    step["load_cpu_us_per_msg"] = round((after[2] - before[2]) / acked * 1e6, 1)


def scalars(r: dict[str, Any], p: Params) -> dict[str, Any]:
    """The figures a table row and a median are made of."""
    c = r["connect"]
    out: dict[str, Any] = {"connect_mean_ms": c["mean_ms"], "connect_p50_ms": c["p50_ms"],
                           "connect_p99_ms": c["p99_ms"], "connect_failures": c["failures"],
                           "connect_per_s": c["achieved_per_s"],
                           "knee_per_s": r.get("knee_per_s"),
                           "connect_knee_per_s": r.get("connect_knee_per_s"),
                           "gateway_rss_connected_mib": r.get("gateway_rss_connected_mib"),
                           "server_cpu_us_per_join": c.get("server_cpu_us_per_join"),
                           "a_cpu_us_per_join": c.get("a_cpu_us_per_join")}
    for stage, ms in (c.get("gateway_ms") or {}).items():
        out[f"gateway_ms.{stage}"] = ms
    for s in r.get("steps", []):
        if s["rate"] in p.rates:
            key = f"{s['rate']:g}"
            out[f"ack_p99_ms@{key}"] = s["ack_p99_ms"]
            out[f"ack_mean_ms@{key}"] = s["ack_mean_ms"]
            out[f"delivery@{key}"] = s["delivery_ratio"]
            out[f"achieved@{key}"] = s["achieved_per_s"]
            out[f"server_cpu_us@{key}"] = s.get("server_cpu_us_per_msg")
            out[f"a_cpu_us@{key}"] = s.get("a_cpu_us_per_msg")
            out[f"load_cpu_us@{key}"] = s.get("load_cpu_us_per_msg")
    return out


def median_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = [row.get(key) for row in rows if isinstance(row.get(key), (int, float))]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def ratios(medians: dict[str, dict[str, Any]], reference: str = REFERENCE,
           ) -> dict[str, dict[str, float | None]]:
    """Each target's medians over ``reference``'s (None where it did not run)."""
    ref = medians.get(reference)
    out: dict[str, dict[str, float | None]] = {}
    for target, m in medians.items():
        def ratio(key: str, m: dict[str, Any] = m) -> float | None:
            if ref is None or not ref.get(key) or m.get(key) is None:
                return None
            return round(m[key] / ref[key], 3)

        out[target] = {"knee": ratio("knee_per_s"), "connect_mean": ratio("connect_mean_ms"),
                       "connect_p99": ratio("connect_p99_ms"),
                       "connect_knee": ratio("connect_knee_per_s")}
    return out


def _scale_out(medians: dict[str, dict[str, Any]]) -> dict[str, float | None] | None:
    """2 vs 1 replicas of A on Redis, when both ran (on 2 cores they compete for the same
    CPUs as the gateway and the load, so this shows the cost of the topology, not its gain)."""
    one, two = medians.get("chatsys-redis-1"), medians.get("chatsys-redis-2")
    if one is None or two is None:
        return None

    def ratio(key: str) -> float | None:
        return round(two[key] / one[key], 3) if one.get(key) and two.get(key) is not None \
            else None

    return {"knee": ratio("knee_per_s"), "connect_mean": ratio("connect_mean_ms"),
            "connect_p99": ratio("connect_p99_ms"),
            "connect_knee": ratio("connect_knee_per_s")}


def _at_least(ratio: float | None, bound: float) -> bool | None:
    return None if ratio is None else ratio >= bound


def verdict(medians: dict[str, dict[str, Any]], rat: dict[str, dict[str, float | None]],
            rat_target: dict[str, dict[str, float | None]],
            ) -> dict[str, dict[str, bool | None]]:
    """docs/contract.md's targets, for chatsys rows (meaningful at the default parameters
    only): ``rat_target`` holds the ratios to ``asgi-granian``, ``rat`` to ``websockets``
    (the moonshot). None = not decided by this run: the reference did not run, a knee search
    was off, or a bound by the load generator leaves it open. A chatsys connect knee the
    generator bound is a lower bound (a pass stands, a fail is open); a reference's is too,
    which makes the ratio an upper bound (a fail stands, a pass is open)."""
    out: dict[str, dict[str, bool | None]] = {}
    ref_bound = (medians.get(TARGET_REFERENCE) or {}).get("connect_knee_generator_rounds")
    for target, m in medians.items():
        if not target.startswith("chatsys"):
            continue
        p99 = m.get("connect_p99_ms")
        mean = rat_target[target]["connect_mean"]
        cknee = _at_least(rat_target[target]["connect_knee"], 0.5)
        if (cknee is True and ref_bound) or (cknee is False
                                             and m.get("connect_knee_generator_rounds")):
            cknee = None
        out[target] = {
            "connect_mean_le_2x_asgi_granian": None if mean is None else mean <= 2,
            "connect_p99_le_100ms": None if p99 is None else p99 <= 100,
            "no_connect_failures": m.get("connect_failures") == 0,
            "connect_knee_ge_0.5x_asgi_granian": cknee,
            "knee_ge_0.9x_asgi_granian": _at_least(rat_target[target]["knee"], 0.9),
            "moonshot_knee_ge_0.6x_websockets": _at_least(rat[target]["knee"], 0.6),
        }
    return out


def calibration(info: dict[str, Any], medians: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What every table carries so that runs on other machines can be told apart: the machine,
    and the ``websockets`` reference's knees in this same run (None if it did not run)."""
    ref = medians.get(REFERENCE) or {}
    return {"nproc": info["nproc"], "cpu": info["cpu"], "ram_gib": info["ram_gib"],
            "python": info["python"], "versions": info["versions"], "reference": REFERENCE,
            "reference_knee_per_s": ref.get("knee_per_s"),
            "reference_connect_knee_per_s": ref.get("connect_knee_per_s")}


def calibration_line(c: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in c["versions"].items())
    knees = (f"{c['reference']} reference in this run: knee {_fmt(c['reference_knee_per_s'], 'g')}"
             f" msg/s, connect knee {_fmt(c['reference_connect_knee_per_s'], 'g')} /s")
    return (f"calibration: {c['nproc']} CPUs ({c['cpu'] or 'unknown model'}), "
            f"{c['ram_gib']:g} GiB RAM, Python {c['python']}, {versions}; {knees}")


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def table(medians: dict[str, dict[str, Any]], rat: dict[str, dict[str, float | None]],
          rat_target: dict[str, dict[str, float | None]], p: Params, rounds: int,
          calib: dict[str, Any]) -> str:
    rates = [f"{r:g}" for r in p.rates]
    head = ["target", "conn mean", "conn p50", "conn p99", "fail", "conn/s",
            *(f"p99@{r}" for r in rates), *(f"dlv@{r}" for r in rates),
            *(f"cpu@{r}" for r in rates), "knee msg/s", "connect knee /s",
            "knee/ws", "conn/ws", "cknee/ws", "knee/ag", "conn/ag", "cknee/ag", "P MiB"]
    rows = [head]
    for target, m in medians.items():
        rat_t, rat_ag = rat.get(target, {}), rat_target.get(target, {})
        generator = "*" if m.get("connect_knee_generator_rounds") else ""
        rows.append([target, _fmt(m["connect_mean_ms"], ".2f"), _fmt(m["connect_p50_ms"], ".2f"),
                     _fmt(m["connect_p99_ms"], ".2f"), _fmt(m["connect_failures"], "g"),
                     _fmt(m["connect_per_s"]),
                     *(_fmt(m.get(f"ack_p99_ms@{r}")) for r in rates),
                     *(_fmt(m.get(f"delivery@{r}"), ".3f") for r in rates),
                     *(_fmt(m.get(f"server_cpu_us@{r}"), ".0f") for r in rates),
                     _fmt(m.get("knee_per_s"), "g"),
                     _fmt(m.get("connect_knee_per_s"), "g") + generator,
                     *(_fmt(r.get(k), ".2f") for r in (rat_t, rat_ag)
                       for k in ("knee", "connect_mean", "connect_knee")),
                     _fmt(m.get("gateway_rss_connected_mib"))])
    rows.append(["seed (Locust, k8s)", f"{SEED['connect_mean_ms']:.2f}", "-", "-", "-",
                 f"{SEED['rps_2000_users']}", *("-" for _ in rates * 3),
                 f"~{SEED['peak_rps']} peak", *("-" for _ in range(8))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    cknee = (f"connect knee = highest joins/s into fresh rooms of {p.room_size} with connect p99 "
             f"<= {p.connect_p99_limit_ms:g} ms and none failing"
             + ("; * = bound by the load generator in a round (a lower bound)"
                if any(m.get("connect_knee_generator_rounds") for m in medians.values())
                else "") if p.connect_knee else "connect knee off")
    lines = [calibration_line(calib),
             f"{p.users} users at {p.connect_rate:g}/s in rooms of {p.room_size}; "
             f"steps of {p.step_seconds:g}s; knee = highest msg/s with ack p99 <= "
             f"{p.p99_limit_ms:g} ms and full delivery; {cknee}; median of {rounds} round(s); "
             "times in ms; cpu@R = server (chatsys: gateway P) CPU µs per message at R msg/s; "
             f"/ws = ratio to {REFERENCE}, /ag = ratio to {TARGET_REFERENCE}"]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if j else c.ljust(w)
                               for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.extend(join_lines(medians))
    return "\n".join(lines)


def join_lines(medians: dict[str, dict[str, Any]]) -> list[str]:
    """Where a join goes, per chatsys target, in the connect phase: the client's connect mean,
    the gateway's (upgrade to welcome) and its stages' means, ms; CPU per join of P and A, µs.
    The session call runs beside room_join + history, so stages do not add up to the total."""
    lines = []
    for target, m in medians.items():
        if m.get("gateway_ms.connect") is None:
            continue
        stages = ", ".join(f"{stage} {_fmt(m.get(f'gateway_ms.{stage}'), '.2f')}"
                           for stage in JOIN_STAGES if m.get(f"gateway_ms.{stage}") is not None)
        lines.append(f"join {target}: client {_fmt(m['connect_mean_ms'], '.2f')} ms, gateway "
                     f"{_fmt(m['gateway_ms.connect'], '.2f')} ms ({stages}); CPU per join "
                     f"P {_fmt(m.get('server_cpu_us_per_join'), '.0f')} µs, "
                     f"A {_fmt(m.get('a_cpu_us_per_join'), '.0f')} µs")
    return lines


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    versions = {}
    for dist in ("websockets", "picows", "uvloop", "granian", "hypercorn", "quart", "grpclib",
                 "anyio"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gib": round(mem / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions, "loadavg_start": os.getloadavg()}


def _output_dir(given: str | None) -> Path:
    out = Path(given or ROOT / "runs" / time.strftime("bench-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_json(paths: list[Path], result: dict[str, Any]) -> None:
    for path in paths:
        path.write_text(json.dumps(result, indent=1))


async def run(args: argparse.Namespace, p: Params) -> dict[str, Any]:
    cancel_on_sigterm()
    out_dir = _output_dir(args.out)
    profile_dir = Path(args.py_spy) if args.py_spy else None
    targets = args.targets.split(",")
    rounds: list[dict[str, Any]] = []
    children = Children()
    info = machine()
    try:
        for n in range(args.repeat):
            round_results: dict[str, Any] = {}
            for target in targets:
                store = None
                print(f"[round {n + 1}/{args.repeat}] {target} ...", file=sys.stderr,
                      flush=True)
                round_results[target] = await measure(
                    target, p, children, out_dir, profile_dir if n == 0 else None, store)
                s = scalars(round_results[target], p)
                print(f"  {target}: connect mean {_fmt(s['connect_mean_ms'], '.2f')} ms, "
                      f"knee {_fmt(s['knee_per_s'], 'g')} msg/s, connect knee "
                      f"{_fmt(s['connect_knee_per_s'], 'g')}/s "
                      f"({round_results[target].get('connect_knee_bound_by', '-')}) "
                      f"({round_results[target]['seconds']} s)", file=sys.stderr, flush=True)
            rounds.append(round_results)
    finally:
        await children.aclose()
    medians = {t: median_of([scalars(r[t], p) for r in rounds]) for t in targets
               if "connect" in rounds[0][t]}
    for t, m in medians.items():  # not a median: how many rounds the generator bounded
        m["connect_knee_bound_by"] = [r[t].get("connect_knee_bound_by") for r in rounds]
        m["connect_knee_generator_rounds"] = m["connect_knee_bound_by"].count("generator")
    rat = ratios(medians)
    rat_target = ratios(medians, TARGET_REFERENCE)
    scale_out = _scale_out(medians)
    info["loadavg_end"] = os.getloadavg()
    calib = calibration(info, medians)
    result = {"params": vars(p), "machine": info, "calibration": calib, "targets": targets,
              "median": medians, "ratios": rat, "ratios_asgi_granian": rat_target,
              "verdict": verdict(medians, rat, rat_target), "seed": SEED,
              "scale_out": scale_out,
              "rounds": rounds, "command": " ".join(["python", "-m", "bench.run",
                                                      *sys.argv[1:]])}
    _write_json([out_dir / "bench.json", *([Path(args.json)] if args.json else [])], result)
    print(table(medians, rat, rat_target, p, len(rounds), calib))
    if scale_out:
        print("A on Redis, 2 replicas / 1 replica: " + ", ".join(
            f"{k} {_fmt(v, '.2f')}" for k, v in scale_out.items()))
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}))
    return result


def params(args: argparse.Namespace) -> Params:
    if args.quick:
        return Params(users=args.users or 40, connect_rate=args.connect_rate or 100,
                      room_size=args.room_size or 10,
                      rates=_rates(args.rates or "50"), step_seconds=args.step_seconds or 1.0,
                      knee=args.knee == "on", knee_start=50, knee_max=100,
                      knee_resolution=0.5, knee_bisect=0, p99_limit_ms=args.p99_limit,
                      procs=args.procs or 1, cooldown=0.2, retries=0, client=args.client,
                      connect_knee=args.connect_knee == "on", connect_knee_start=50,
                      connect_knee_max=100, connect_p99_limit_ms=args.connect_p99_limit,
                      connect_probe_seconds=0.5, connect_probe_min_users=20,
                      connect_probe_max_users=50)
    return Params(users=args.users or 2000, connect_rate=args.connect_rate or 200,
                  room_size=args.room_size or 20, rates=_rates(args.rates or "250,500,1000"),
                  step_seconds=args.step_seconds or 3.0, knee=args.knee != "off",
                  knee_start=args.knee_start, knee_max=args.knee_max,
                  knee_resolution=0.15, knee_bisect=args.knee_bisect,
                  p99_limit_ms=args.p99_limit, procs=args.procs or 2, cooldown=1.5,
                  retries=args.retries, client=args.client,
                  connect_knee=args.connect_knee != "off",
                  connect_knee_start=args.connect_knee_start,
                  connect_knee_max=args.connect_knee_max,
                  connect_p99_limit_ms=args.connect_p99_limit,
                  connect_probe_seconds=args.connect_probe_seconds,
                  connect_probe_min_users=200,
                  connect_probe_max_users=args.connect_probe_max_users)


def _rates(text: str) -> list[float]:
    return [float(r) for r in text.split(",") if r.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: 40 users, one 1-second step at 50 msg/s, no knee "
                             "searches, websockets + chatsys-granian unless --targets")
    parser.add_argument("--targets", default=None, metavar="LIST",
                        help=f"comma list from {','.join(ALL_TARGETS)} (default: all), "
                             f"{','.join(EXTRA_TARGETS)}, "
                             f"or {','.join(REDIS_TARGETS)} (A on 1 or 2 replicas sharing a "
                             "local redis-server); TARGET@DIR runs a chatsys target from the "
                             "source tree DIR")
    parser.add_argument("--users", type=int, default=None, help="default 2000")
    parser.add_argument("--connect-rate", type=float, default=None, help="per s, default 200")
    parser.add_argument("--room-size", type=int, default=None, help="default 20")
    parser.add_argument("--rates", default=None,
                        help="fixed message rates (msg/s in total), default 250,500,1000")
    parser.add_argument("--step-seconds", type=float, default=None, help="default 3")
    parser.add_argument("--knee", choices=["on", "off"], default=None,
                        help="knee search (default on; off with --quick)")
    parser.add_argument("--knee-start", type=float, default=250.0)
    parser.add_argument("--knee-max", type=float, default=16000.0)
    parser.add_argument("--knee-bisect", type=int, default=3, help="bisection steps")
    parser.add_argument("--retries", type=int, default=1,
                        help="extra attempts before a step that failed on latency alone "
                             "counts as failed")
    parser.add_argument("--p99-limit", type=float, default=100.0, help="ack p99 bound, ms")
    parser.add_argument("--connect-knee", choices=["on", "off"], default=None,
                        help="connect knee search (default on; off with --quick, where 'on' "
                             "probes 50 and 100 joins/s with a few dozen users)")
    parser.add_argument("--connect-knee-start", type=float, default=200.0,
                        help="joins/s of the first probe")
    parser.add_argument("--connect-knee-max", type=float, default=12800.0,
                        help="highest joins/s probed")
    parser.add_argument("--connect-p99-limit", type=float, default=100.0,
                        help="connect p99 bound of the connect knee, ms")
    parser.add_argument("--connect-probe-seconds", type=float, default=3.0,
                        help="a probe joins rate x this many users (at least 200)")
    parser.add_argument("--connect-probe-max-users", type=int, default=3000,
                        help="at most this many users per probe")
    parser.add_argument("--procs", type=int, default=None,
                        help="load worker processes (default 2; 1 with --quick)")
    parser.add_argument("--client", choices=CLIENTS, default=CLIENTS[0],
                        help="WebSocket client library of the load workers")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows medians")
    parser.add_argument("--out", default=None, help="directory for logs and bench.json "
                                                    "(default runs/bench-<time>)")
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--py-spy", default=None, metavar="DIR",
                        help="record chatsys's gateway and A with py-spy during the knee "
                             "search (raw collapsed stacks into DIR)")
    args = parser.parse_args(argv)
    if args.targets is None:
        args.targets = "websockets,chatsys-granian" if args.quick else ",".join(ALL_TARGETS)
    unknown = {t.partition("@")[0] for t in args.targets.split(",")} - set(ALL_TARGETS) \
        - set(REDIS_TARGETS) - set(EXTRA_TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    raise_nofile(65536)
    p = params(args)
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(run(args, p))
        else:
            uvloop.run(run(args, p))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process the bench started was stopped", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
