"""``chatsys lab run|report``: the lab's own command line (it has subcommands, not Settings)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from chatsys.lab.bottleneck import Rule
from chatsys.lab.scenarios import NAMES, ScenarioError, parse_duration, scenario

EPILOG = """scenarios (the seed's A, B and C; see docs/lab.md):
  stress    A: stepped stress (locustfiles/stress.conf + stress.py); --users is the last step
  baseline  B: locustfiles/baseline.conf, one gateway, one A, one B
  hpa       C: locustfiles/scaled.conf, two gateways locally (what the HPA scales out to)
  scaled    C: locustfiles/scaled.conf, two A (on Redis) and two B locally

examples:
  chatsys lab run baseline --users 50 --spawn-rate 25 --run-time 20s --out runs/b
  chatsys lab run scaled --users 50 --spawn-rate 25 --run-time 20s --out runs/c
  chatsys lab report runs/b runs/c --out runs/b-vs-c
  chatsys lab run baseline --host http://GATEWAY --prometheus http://PROMETHEUS:9090 --out runs/k8s
"""


def _rule_flags(parser: argparse.ArgumentParser) -> None:
    default = Rule()
    parser.add_argument("--cpu-threshold", type=float, default=default.cpu_threshold,
                        help="cores at which one process counts as saturated "
                             f"(default {default.cpu_threshold})")
    parser.add_argument("--latency-threshold", type=float, default=default.latency_threshold,
                        help="p99 seconds at which a module's own latency counts as saturated "
                             f"(default {default.latency_threshold})")
    parser.add_argument("--machine-threshold", type=float, default=default.machine_threshold,
                        help="share of all cores busy at which the machine counts as "
                             f"saturated (default {default.machine_threshold})")


def _driver_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--driver", choices=("locust", "native"), default="locust",
                        help="load generator: Locust (default), or the lab's native driver "
                             "(same session and stats files, far less CPU per user: for "
                             "scenario A's high steps; see docs/load-testing.md)")
    parser.add_argument("--driver-workers", type=_positive(int), default=0,
                        help="processes of the native driver (default: one per 10,000 users)")


def _rule(args: argparse.Namespace) -> Rule:
    return Rule(cpu_threshold=args.cpu_threshold, latency_threshold=args.latency_threshold,
                machine_threshold=args.machine_threshold)


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be greater than 0")
        return value

    parse.__name__ = getattr(kind, "__name__", "number")
    return parse


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ScenarioError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatsys lab", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The performance lab: run a scenario end to end and get a report that "
                    "names the bottleneck.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,report}")
    run = sub.add_parser("run", help="run a scenario and write its data and report",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                         description="Start a local topology (or use --host), run Locust "
                                     "headless, record metrics every second, write DIR/report.md.")
    run.add_argument("scenario", choices=NAMES, help="which scenario to play")
    run.add_argument("--out", type=Path, required=True, help="run directory (created)")
    run.add_argument("--users", type=_positive(int), help="override the scenario's users")
    run.add_argument("--spawn-rate", type=_positive(float), help="users started per second")
    run.add_argument("--run-time", type=_duration, help="e.g. 20s, 5m, 1h30m")
    run.add_argument("--gateways", type=_positive(int), help="gateway processes (P)")
    run.add_argument("--a-replicas", type=_positive(int),
                     help="replicas of A; more than one runs A on a local redis-server")
    run.add_argument("--b-replicas", type=_positive(int),
                     help="replicas of B (sharing one data directory)")
    run.add_argument("--host", help="an already running gateway (e.g. a cluster's): no local "
                                    "topology is started")
    run.add_argument("--prometheus", metavar="URL",
                     help="read metrics from this Prometheus (query_range) instead of scraping")
    run.add_argument("--prom-step", type=_positive(float), default=1.0,
                     help="query_range step in seconds (default 1)")
    run.add_argument("--locust-processes", type=_positive(int), default=1,
                     help="Locust processes (one core each; more than 1 runs a master and "
                          "workers, Locust's --processes)")
    _driver_flags(run)
    run.add_argument("--label", help="the run's name in reports (default: the directory name)")
    _rule_flags(run)
    rep = sub.add_parser("report", help="(re)write the report of one or more run directories",
                         description="Analyse run directories; with several, add a side-by-side "
                                     "comparison against the first.")
    rep.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="run directories")
    rep.add_argument("--out", type=Path, help="where report.md goes (default: the only DIR)")
    _rule_flags(rep)
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.command == "run" and args.prometheus and not args.host:
        parser.error("--prometheus reads the metrics of a system you started: give its --host "
                     "too (a local topology is scraped directly)")
    logging.basicConfig(level=logging.WARNING, format="lab: %(levelname)s %(message)s")
    if args.command == "report":
        return _report(args)
    from chatsys.lab.runner import RunOptions, run

    chosen = scenario(args.scenario).with_overrides(users=args.users, spawn_rate=args.spawn_rate,
                                                    run_time=args.run_time)
    chosen = replace(chosen, gateways=args.gateways or chosen.gateways,
                     a_replicas=args.a_replicas or chosen.a_replicas,
                     b_replicas=args.b_replicas or chosen.b_replicas)
    options = RunOptions(chosen, args.out, host=args.host, prometheus=args.prometheus,
                         prom_step=args.prom_step, label=args.label, rule=_rule(args),
                         locust_processes=args.locust_processes, driver=args.driver,
                         driver_workers=args.driver_workers)
    return run(options)


def _report(args: argparse.Namespace) -> int:
    from chatsys.lab import report

    missing = [str(d) for d in args.runs if not (d / "run.json").exists()
               and not (d / "locust_stats.csv").exists()]
    if missing:
        print(f"chatsys lab report: not a run directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = args.out or (args.runs[0] if len(args.runs) == 1 else None)
    if out is None:
        print("chatsys lab report: several runs need --out DIR", file=sys.stderr)
        return 2
    path = report.write(args.runs, out, _rule(args))
    print(path)
    return 0
