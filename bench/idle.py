"""Idle connections: 10,000 WebSockets on one gateway, pings answered, memory per socket.

For each target: start it, read the server's RSS (the sum over its process tree: for chatsys
the gateway process P and any workers, not A or B), connect ``--sockets`` users at ``--rate``/s
into rooms of ``--room-size``, let it settle, read the RSS again, send one protocol ping on
every socket and count the pongs. Bytes per connection = (RSS connected - RSS before) / sockets.

Both ends need more file descriptors than the usual soft limit of 1,024: the bench raises its
own RLIMIT_NOFILE (the servers it spawns inherit it) and spreads the client sockets over
``--procs`` load processes. chatsys's gateway refuses upgrades beyond ``--max-connections``
(default 20,000); the bench passes ``--max-connections`` above ``--sockets`` anyway.

    python -m bench.idle                                    # chatsys on Granian and Hypercorn
    python -m bench.idle --targets quart-granian,websockets --rate 500

Prints one JSON line per target as it goes, then a summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Children, cancel_on_sigterm, process_tree, raise_nofile, rss_bytes
from bench.loadgen import LoadGen
from bench.run import ALL_TARGETS, _output_dir, started

GIB = 2**30


def _nofile(pid: int) -> int | None:
    """The gateway's soft RLIMIT_NOFILE as the kernel sees it (inherited from the bench)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        return None
    return None


async def idle(target: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    children = Children()
    extra: tuple[str, ...] = ()
    if target.startswith("chatsys"):
        extra = ("--max-connections", str(args.sockets + 1000))
    try:
        async with started(target, children, out_dir, extra=extra) as server:
            tree = process_tree(server.gateway_pid)
            before = rss_bytes(tree)
            nofile = _nofile(server.gateway_pid)
            async with LoadGen(f"ws://127.0.0.1:{server.port}", args.procs, children) as gen:
                connect = await gen.connect(args.sockets, args.rate, args.room_size)
                await asyncio.sleep(args.settle)
                tree = process_tree(server.gateway_pid)
                connected = rss_bytes(tree)
                pings = await gen.ping(30)
                after_ping = rss_bytes(process_tree(server.gateway_pid))
            a_rss = rss_bytes([server.a_pid]) if server.a_pid else None
    finally:
        await children.aclose()
    n = connect["connected"]
    return {"target": target, "sockets": args.sockets, "connected": n,
            "failures": connect["failures"], "failure_kinds": connect["failure_kinds"],
            "connect_mean_ms": connect["mean_ms"], "connect_p99_ms": connect["p99_ms"],
            "pongs": pings["pongs"], "gateway_processes": len(tree),
            "gateway_nofile_limit": nofile,
            "rss_before_mib": round(before / 2**20, 1),
            "rss_connected_mib": round(connected / 2**20, 1),
            "rss_after_ping_mib": round(after_ping / 2**20, 1),
            "bytes_per_socket": round((max(connected, after_ping) - before) / n) if n else None,
            "a_rss_mib": round(a_rss / 2**20, 1) if a_rss else None,
            "under_1_gib": max(connected, after_ping) <= GIB,
            "all_connected_and_answered": n == args.sockets and pings["pongs"] == n}


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    cancel_on_sigterm()
    out_dir = _output_dir(args.out)
    results = []
    for target in args.targets.split(","):
        print(f"{target}: {args.sockets} sockets at {args.rate:g}/s ...", file=sys.stderr,
              flush=True)
        started_at = time.monotonic()
        result = await idle(target, args, out_dir)
        result["seconds"] = round(time.monotonic() - started_at, 1)
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="chatsys-granian,chatsys-hypercorn",
                        help=f"comma list from {','.join(ALL_TARGETS)}")
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="connections per second (each chatsys join also sends a presence "
                             "frame to every member of the room: 500/s into rooms of 125 "
                             "overloads a 2-core gateway)")
    parser.add_argument("--room-size", type=int, default=125,
                        help="125: 80 rooms for 10,000 sockets")
    parser.add_argument("--procs", type=int, default=4, help="load worker processes")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    parser.add_argument("--out", default=None, help="directory for server logs")
    args = parser.parse_args(argv)
    limit = raise_nofile(args.sockets + 4096)
    if limit < args.sockets + 256:
        parser.error(f"RLIMIT_NOFILE hard limit {limit} is too low for {args.sockets} sockets")
    try:
        try:
            import uvloop
        except ImportError:
            results = asyncio.run(main_async(args))
        else:
            results = uvloop.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process the bench started was stopped", file=sys.stderr)
        raise SystemExit(130) from None
    print(json.dumps({"idle": results}), flush=True)


if __name__ == "__main__":
    main()
