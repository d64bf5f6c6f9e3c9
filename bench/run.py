"""The benchmark runner: chatsys and the bare references, one after another, in one run.

For each target it starts the server, runs the connect phase (default 2,000 users at 200/s in
rooms of 20), then message steps at fixed rates and a knee search (doubling, then bisection:
the highest total rate whose ack p99 stays <= 100 ms with every acknowledged message delivered
to every member), and stops the server. Every absolute number drifts with the machine and with
whatever else runs on it; the ratios to the ``websockets`` reference measured minutes apart in
the same run are what the performance targets are stated in.

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


async def knee_search(step: Callable[[float], Awaitable[dict[str, Any]]], p: Params,
                      ) -> float:
    """Highest rate that holds: doubling from ``knee_start`` (halving if that fails), then
    bisection until the bracket is within ``knee_resolution`` or the step budget is spent."""
    lo, hi = 0.0, None
    rate = p.knee_start
    while rate <= p.knee_max:
        if holds(await step(rate), p.p99_limit_ms):
            lo, rate = rate, rate * 2
        else:
            hi = rate
            break
    if hi is None:
        return lo
    while lo == 0 and hi > p.knee_start / 4:
        rate = round(hi / 2)
        if holds(await step(rate), p.p99_limit_ms):
            lo = rate
        else:
            hi = rate
    for _ in range(p.knee_bisect):
        if lo == 0 or hi / lo <= 1 + p.knee_resolution:
            break
        rate = round((lo + hi) / 2)
        if holds(await step(rate), p.p99_limit_ms):
            lo = rate
        else:
            hi = rate
    return lo


async def measure(target: str, p: Params, children: Children, log_dir: Path,
                  profile_dir: Path | None, store: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"target": target}
    started_at = time.monotonic()
    async with started(target, children, log_dir, store) as server:
        rss_idle = rss_bytes(process_tree(server.gateway_pid))
        url = f"ws://127.0.0.1:{server.port}"
        async with LoadGen(url, p.procs, children, p.client) as gen:
            result["connect"] = await gen.connect(p.users, p.connect_rate, p.room_size)
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
                try:
                    result["knee_per_s"] = await knee_search(step, p)
                finally:
                    await profiler.stop()
                result["knee_deliveries_per_s"] = result["knee_per_s"] * p.room_size
            result["steps"] = [steps[r] for r in sorted(steps)]
            result["gateway_rss_after_mib"] = round(
                rss_bytes(process_tree(server.gateway_pid)) / 2**20, 1)
            if server.a_pid is not None:
                result["a_rss_after_mib"] = round(rss_bytes([server.a_pid]) / 2**20, 1)
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
                           "gateway_rss_connected_mib": r.get("gateway_rss_connected_mib")}
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


def ratios(medians: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    ref = medians.get(REFERENCE)
    out: dict[str, dict[str, float | None]] = {}
    for target, m in medians.items():
        def ratio(key: str, m: dict[str, Any] = m) -> float | None:
            if ref is None or not ref.get(key) or m.get(key) is None:
                return None
            return round(m[key] / ref[key], 3)

        out[target] = {"knee": ratio("knee_per_s"), "connect_mean": ratio("connect_mean_ms"),
                       "connect_p99": ratio("connect_p99_ms")}
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
            "connect_p99": ratio("connect_p99_ms")}


def verdict(medians: dict[str, dict[str, Any]], rat: dict[str, dict[str, float | None]],
            p: Params) -> dict[str, dict[str, bool | None]]:
    """The targets as first worded (docs/contract.md now states them against asgi-granian;
    issue 18), for chatsys rows (only meaningful at the default parameters)."""
    out: dict[str, dict[str, bool | None]] = {}
    for target, m in medians.items():
        if not target.startswith("chatsys"):
            continue
        mean, p99 = m.get("connect_mean_ms"), m.get("connect_p99_ms")
        knee = rat[target]["knee"]
        out[target] = {
            "connect_mean_le_10ms": None if mean is None else mean <= 10,
            "connect_p99_le_100ms": None if p99 is None else p99 <= 100,
            "no_connect_failures": m.get("connect_failures") == 0,
            "knee_ge_0.6_of_websockets": None if knee is None else knee >= 0.6,
        }
    return out


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def table(medians: dict[str, dict[str, Any]], rat: dict[str, dict[str, float | None]],
          p: Params, rounds: int) -> str:
    rates = [f"{r:g}" for r in p.rates]
    head = ["target", "conn mean", "conn p50", "conn p99", "fail", "conn/s",
            *(f"p99@{r}" for r in rates), *(f"dlv@{r}" for r in rates),
            *(f"cpu@{r}" for r in rates), "knee msg/s",
            "knee/ws", "conn/ws", "P MiB"]
    rows = [head]
    for target, m in medians.items():
        rat_t = rat.get(target, {})
        rows.append([target, _fmt(m["connect_mean_ms"], ".2f"), _fmt(m["connect_p50_ms"], ".2f"),
                     _fmt(m["connect_p99_ms"], ".2f"), _fmt(m["connect_failures"], "g"),
                     _fmt(m["connect_per_s"]),
                     *(_fmt(m.get(f"ack_p99_ms@{r}")) for r in rates),
                     *(_fmt(m.get(f"delivery@{r}"), ".3f") for r in rates),
                     *(_fmt(m.get(f"server_cpu_us@{r}"), ".0f") for r in rates),
                     _fmt(m.get("knee_per_s"), "g"), _fmt(rat_t.get("knee"), ".2f"),
                     _fmt(rat_t.get("connect_mean"), ".2f"),
                     _fmt(m.get("gateway_rss_connected_mib"))])
    rows.append(["seed (Locust, k8s)", f"{SEED['connect_mean_ms']:.2f}", "-", "-", "-",
                 f"{SEED['rps_2000_users']}", *("-" for _ in rates * 3),
                 f"~{SEED['peak_rps']} peak", "-", "-", "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"{p.users} users at {p.connect_rate:g}/s in rooms of {p.room_size}; "
             f"steps of {p.step_seconds:g}s; knee = highest msg/s with ack p99 <= "
             f"{p.p99_limit_ms:g} ms and full delivery; median of {rounds} round(s); "
             "times in ms; cpu@R = server (chatsys: gateway P) CPU µs per message at R msg/s"]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if j else c.ljust(w)
                               for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


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
                      f"knee {_fmt(s['knee_per_s'], 'g')} msg/s "
                      f"({round_results[target]['seconds']} s)", file=sys.stderr, flush=True)
            rounds.append(round_results)
    finally:
        await children.aclose()
    medians = {t: median_of([scalars(r[t], p) for r in rounds]) for t in targets
               if "connect" in rounds[0][t]}
    rat = ratios(medians)
    scale_out = _scale_out(medians)
    info["loadavg_end"] = os.getloadavg()
    result = {"params": vars(p), "machine": info, "targets": targets, "median": medians,
              "ratios": rat, "verdict": verdict(medians, rat, p), "seed": SEED,
              "scale_out": scale_out,
              "rounds": rounds, "command": " ".join(["python", "-m", "bench.run",
                                                      *sys.argv[1:]])}
    _write_json([out_dir / "bench.json", *([Path(args.json)] if args.json else [])], result)
    print(table(medians, rat, p, len(rounds)))
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
                      procs=args.procs or 1, cooldown=0.2, retries=0, client=args.client)
    return Params(users=args.users or 2000, connect_rate=args.connect_rate or 200,
                  room_size=args.room_size or 20, rates=_rates(args.rates or "250,500,1000"),
                  step_seconds=args.step_seconds or 3.0, knee=args.knee != "off",
                  knee_start=args.knee_start, knee_max=args.knee_max,
                  knee_resolution=0.15, knee_bisect=args.knee_bisect,
                  p99_limit_ms=args.p99_limit, procs=args.procs or 2, cooldown=1.5,
                  retries=args.retries, client=args.client)


def _rates(text: str) -> list[float]:
    return [float(r) for r in text.split(",") if r.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: 40 users, one 1-second step at 50 msg/s, no knee "
                             "search, websockets + chatsys-granian unless --targets")
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
