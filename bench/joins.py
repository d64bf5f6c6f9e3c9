"""Join and leave storms, chatsys trees side by side: CPU per join + leave of P and A.

``python -m bench.joins --targets chatsys-granian@/path/to/before,chatsys-granian``

For each round and each target (a chatsys target of ``bench.run``, ``@DIR`` for another source
tree), it starts ``chatsys all``'s three processes, joins ``--users`` users at ``--rate``/s into
rooms of ``--room-size`` (the connect phase of ``bench.run``, with its load generator), then
disconnects them all and waits until the gateway has no socket left; the CPU that P (with its
native threads) and A spent from before the first join to after the last leave, divided by the
users, is the figure. CPU per operation travels between runs far better than latency; every
row is still compared only with the first target's in the same invocation (the ``/first``
columns). The connect mean and p99 of the storm are printed beside it.

This is what ``bench.run``'s connect phase does not show: there joins come at 200/s and the
leaves come after the measurement, so coalescing of a storm's calls (which a join or leave
storm triggers) barely shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from typing import Any

from bench.common import Children, cancel_on_sigterm, cpu_seconds, process_tree, raise_nofile
from bench.loadgen import LoadGen
from bench.run import _fmt, _http_get, calibration, calibration_line, machine, started

SETTLE_TIMEOUT = 60.0


async def _gateway_sockets(port: int) -> float | None:
    """``chatsys_ws_connections`` on the gateway's /metrics (None if unreadable)."""
    for line in (await _http_get(port, "/metrics")).splitlines():
        if line.startswith("chatsys_ws_connections "):
            return float(line.split()[1])
    return None


async def storm(target: str, args: argparse.Namespace, children: Children,
                out: Any) -> dict[str, Any]:
    async with started(target, children, out) as server:
        assert server.a_pid is not None, f"{target} is not a chatsys target"
        groups = (process_tree(server.gateway_pid), [server.a_pid])
        before = [cpu_seconds(g) for g in groups]
        async with LoadGen(f"ws://127.0.0.1:{server.port}", args.procs, children) as gen:
            connect = await gen.connect(args.users, args.rate, args.room_size)
            await gen.disconnect()
        async with asyncio.timeout(SETTLE_TIMEOUT):
            while True:  # another process's count: polled, nothing to wait on here
                if await _gateway_sockets(server.port) == 0:
                    break
                await asyncio.sleep(0.1)
        # A leave's EndSessions and presence end after its socket count drops: let them land.
        await asyncio.sleep(args.settle)
        spent = [cpu_seconds(g) - b for g, b in zip(groups, before, strict=True)]
    users = max(connect["connected"], 1)
    return {"p_us": round(spent[0] / users * 1e6), "a_us": round(spent[1] / users * 1e6),
            "connect_mean_ms": connect["mean_ms"], "connect_p99_ms": connect["p99_ms"],
            "failures": connect["failures"], "connected": connect["connected"]}


def table(targets: list[str], rounds: list[dict[str, dict[str, Any]]]) -> list[str]:
    medians = {t: {k: statistics.median(r[t][k] for r in rounds)
                   for k in ("p_us", "a_us", "connect_mean_ms", "connect_p99_ms")}
               for t in targets}
    first = medians[targets[0]]
    head = ["target", "P µs/join+leave", "A µs/join+leave", "P /first", "A /first",
            "conn mean", "conn p99", "failed", "rounds (P µs)"]
    rows = [head]
    for t in targets:
        m = medians[t]
        rows.append([t, f"{m['p_us']:.0f}", f"{m['a_us']:.0f}",
                     _fmt(m["p_us"] / first["p_us"] if first["p_us"] else None, ".2f"),
                     _fmt(m["a_us"] / first["a_us"] if first["a_us"] else None, ".2f"),
                     f"{m['connect_mean_ms']:.2f}", f"{m['connect_p99_ms']:.1f}",
                     str(sum(r[t]["failures"] for r in rounds)),
                     " / ".join(str(r[t]["p_us"]) for r in rounds)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in
                      enumerate(zip(row, widths, strict=True))) for row in rows]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    cancel_on_sigterm()
    targets = args.targets.split(",")
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-joins-"))
    children = Children()
    rounds: list[dict[str, dict[str, Any]]] = []
    info = machine()
    try:
        for n in range(args.rounds):
            rounds.append({})
            for target in targets:  # alternating, so a neighbour's burst hits every target
                print(f"[round {n + 1}/{args.rounds}] {target} ...", file=sys.stderr,
                      flush=True)
                rounds[-1][target] = await storm(target, args, children, out)
    finally:
        await children.aclose()
    result = {"machine": info, "targets": targets, "rounds": rounds,
              "params": {k: getattr(args, k) for k in ("users", "rate", "room_size", "settle")},
              "command": " ".join(["python", "-m", "bench.joins", *sys.argv[1:]])}
    print(calibration_line(calibration(info, {})))
    print(f"{args.users} users joining at {args.rate:g}/s into rooms of {args.room_size}, then "
          f"all leaving; medians of {args.rounds} round(s); /first = ratio to {targets[0]}")
    print("\n".join(table(targets, rounds)))
    print(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.joins", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="chatsys-granian",
                        help="comma list of chatsys targets of bench.run, TARGET@DIR for "
                             "another source tree (default chatsys-granian)")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0, help="joins per second")
    parser.add_argument("--room-size", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds after the last socket closed, for the leaves' calls")
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--out", default=None, help="directory for the servers' logs")
    args = parser.parse_args(argv)
    raise_nofile(65536)
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
