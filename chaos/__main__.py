"""``python -m chaos --duration SECONDS --out DIR``: one soak run; writes DIR/summary.json and
DIR/report.md, prints the report, and exits 0 only when the run is valid (1 if not, 2 if the
topology could not even start, 130 if interrupted by Ctrl-C or SIGTERM)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import anyio

from chaos import report
from chaos.runner import Options, run
from chaos.topology import TopologyError

HELP = {
    "duration": "seconds of workload and faults; a minimum: the first round always completes",
    "out": "directory for summary.json, report.md and logs/",
    "bound": "seconds after a heal within which every operation must work again",
    "warmup": "seconds of plain workload before the first fault",
    "hold": "seconds a killed process stays down before its restart",
    "freeze": "seconds between SIGSTOP and SIGCONT of an A replica",
    "partition": "seconds between the proxy's cut and heal",
    "gap": "seconds of plain workload after a recovery, before the next fault",
    "rooms": "rooms at the start",
    "per_room": "members per room at the start (the population churn keeps)",
    "churn_every": "mean seconds between one member leaving and another joining",
    "wait_min": "shortest pause between a member's operations, seconds",
    "wait_max": "longest pause between a member's operations, seconds",
    "op_timeout": "seconds for a join, an upload or an ack",
    "readiness_lag": "seconds /readyz may trail a recovery (A caches its storage check 2 s)",
    "give_up": "seconds after a heal before a fault counts as never recovered",
    "grpc_keepalive": "the gateways' --grpc-keepalive (a frozen replica is left after it)",
    "grpc_timeout": "the gateways' --grpc-timeout",
    "drain_timeout": "seconds, at the end, for every member to catch up",
    "max_rss_mib": "largest gateway RSS allowed, MiB",
    "max_tasks": "largest chatsys_asyncio_tasks allowed",
    "task_slack": "tasks above the pre-workload count allowed once the clients have gone",
    "faults": "comma list of fault kinds to inject (kill-A, kill-B, kill-redis, kill-gateway, "
              "freeze-A, partition); empty: all",
}


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    defaults = Options()
    for f in fields(Options):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        kind = Path if f.name == "out" else type(default)
        parser.add_argument(flag, type=kind, default=default,
                            help=f"{HELP.get(f.name, '')} (default {default})")
    return Options(**vars(parser.parse_args(argv)))


def machine() -> dict[str, str]:
    cpu = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True,
                                   timeout=5).stdout.splitlines():
            if line.startswith("Model name"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"nproc": str(os.cpu_count()), "cpu": cpu or "unknown"}


async def run_until_signalled(options: Options) -> dict[str, Any] | None:
    """The run, cancelled (and so cleaned up: every process stopped) on Ctrl-C or SIGTERM;
    None if cancelled."""
    summary: dict[str, Any] | None = None
    async with anyio.create_task_group() as tg:
        async def on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(on_signal)
        summary = await run(options)
        tg.cancel_scope.cancel()
    return summary


def topology_error(exc: BaseException) -> TopologyError | None:
    """The TopologyError in ``exc``, which anyio's task groups wrap in exception groups."""
    if isinstance(exc, TopologyError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := topology_error(inner)) is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        summary = anyio.run(run_until_signalled, options)
    except (TopologyError, BaseExceptionGroup) as exc:
        found = topology_error(exc)
        if found is None:
            raise
        print(f"chaos: the topology did not start: {found}", file=sys.stderr)
        return 2
    if summary is None:
        print("chaos: interrupted; every process stopped", file=sys.stderr)
        return 130
    summary["machine"] = machine()
    summary["command"] = " ".join(["python -m chaos", *(argv if argv is not None
                                                        else sys.argv[1:])])
    text = report.render(summary, summary["machine"])
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (options.out / "report.md").write_text(text)
    print(text)
    return 0 if summary["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
