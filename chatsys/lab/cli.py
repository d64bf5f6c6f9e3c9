"""``chatsys lab run|report``: the lab's own command line (it has subcommands, not Settings)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from chatsys.lab.bottleneck import Rule
from chatsys.lab.scenarios import NAMES, ScenarioError, parse_duration, scenario

if TYPE_CHECKING:
    from chatsys.lab.autoscaler import HpaSpec
    from chatsys.lab.runner import RunOptions

EPILOG = """scenarios (the seed's A, B and C; see docs/lab.md):
  stress    A: stepped stress (locustfiles/stress.conf + stress.py); --users is the last step
  baseline  B: locustfiles/baseline.conf, one gateway, one A, one B
  hpa       C: locustfiles/scaled.conf, gateways on one port scaled by a local HPA
            (--hpa-metric cpu|connections|off; see docs/lab.md)
  scaled    C: locustfiles/scaled.conf, two A (on Redis) and two B locally

examples:
  chatsys lab run baseline --users 50 --spawn-rate 25 --run-time 20s --out runs/b
  chatsys lab run scaled --users 50 --spawn-rate 25 --run-time 20s --out runs/c
  chatsys lab run hpa --users 200 --run-time 50s --hpa-time-scale 0.1 --out runs/hpa
  chatsys lab report runs/b runs/c --out runs/b-vs-c
  chatsys lab plan runs/b --users 10000 --validate runs/a --out runs/plan
  chatsys lab study --out runs/study                 # B, C-hpa, C-scaled, A: about 45 min
  chatsys lab study --scale 0.01 --out runs/smoke    # the same, tiny
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


def _hpa_flags(parser: argparse.ArgumentParser) -> None:
    from chatsys.lab.autoscaler import POLICIES

    hpa = parser.add_argument_group("local HPA (scenario hpa)")
    hpa.add_argument("--hpa-metric", choices=(*POLICIES, "off"), default="cpu",
                     help="cpu: overlays/hpa (CPU utilisation of the request); connections: "
                          "components/autoscale-connections (CPU and open WebSockets per "
                          "gateway); off: a fixed --gateways (default cpu)")
    hpa.add_argument("--hpa-target", type=_positive(float),
                     help="the policy's own target instead of the manifest's: CPU percent "
                          "(cpu) or WebSockets per gateway (connections)")
    hpa.add_argument("--hpa-min", type=_positive(int), help="minReplicas (manifest: 2)")
    hpa.add_argument("--hpa-max", type=_positive(int), help="maxReplicas (manifest: 10)")
    hpa.add_argument("--hpa-time-scale", type=_positive(float), default=1.0,
                     help="multiply the sync period (15 s), stabilisation windows and policy "
                          "periods, e.g. 0.1 for a run of a minute (default 1)")


def _autoscale(args: argparse.Namespace, elastic: bool) -> HpaSpec | None:
    """The local HPA's spec from the manifests and the --hpa-* flags (None: fixed gateways)."""
    if not elastic or args.hpa_metric == "off" or args.host:
        return None
    from chatsys.lab.autoscaler import load_spec

    spec = load_spec(args.hpa_metric).scaled(args.hpa_time_scale)
    if args.hpa_target:
        spec = spec.with_target(args.hpa_target)
    spec = replace(spec, min_replicas=args.hpa_min or spec.min_replicas,
                   max_replicas=args.hpa_max or spec.max_replicas)
    if spec.min_replicas > spec.max_replicas:
        raise ScenarioError(f"--hpa-min {spec.min_replicas} is above --hpa-max "
                            f"{spec.max_replicas}")
    return spec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatsys lab", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The performance lab: run a scenario end to end and get a report that "
                    "names the bottleneck.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{run,report,plan,study}")
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
    _hpa_flags(run)
    _rule_flags(run)
    rep = sub.add_parser("report", help="(re)write the report of one or more run directories",
                         description="Analyse run directories; with several, add a side-by-side "
                                     "comparison against the first.")
    rep.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="run directories")
    rep.add_argument("--out", type=Path, help="where report.md goes (default: the only DIR)")
    _rule_flags(rep)
    _plan_parser(sub)
    from chatsys.lab import study

    study.add_parser(sub, _positive, _duration, _rule_flags)
    return parser


def _mix(text: str) -> dict[str, float]:
    """``text=8,upload=2`` (the ChatUser's task weights)."""
    out: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in ("text", "upload") or not value:
            raise argparse.ArgumentTypeError(f"not a mix: {text!r} (e.g. text=8,upload=2)")
        out[key.strip()] = _positive(float)(value)
    return out


def _plan_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from chatsys.lab.plan import DEFAULT_MIX, DEFAULT_ROOM_SIZE, DEFAULT_THINK

    plan = sub.add_parser("plan", help="costs per operation from runs, and a cluster plan",
                          description="Fit each module's CPU and memory per operation from run "
                                      "directories, then plan replicas of P, A and B for "
                                      "--users (see docs/lab.md).")
    plan.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="run directories")
    plan.add_argument("--users", type=_positive(int), required=True, help="users to plan for")
    plan.add_argument("--mix", type=_mix, default=dict(DEFAULT_MIX),
                      help="task weights (default text=8,upload=2, the ChatUser's)")
    plan.add_argument("--room-size", type=_positive(int), default=DEFAULT_ROOM_SIZE,
                      help=f"users per room (default {DEFAULT_ROOM_SIZE})")
    plan.add_argument("--think", type=_positive(float), default=DEFAULT_THINK,
                      help=f"mean seconds between a user's tasks (default {DEFAULT_THINK:g})")
    plan.add_argument("--join-rate", type=float, default=0.0, help="joins per second (default 0)")
    plan.add_argument("--cores-per-pod", type=_positive(float), default=1.0,
                      help="CPU request of every pod (default 1; A and B use one core at most)")
    plan.add_argument("--target-utilization", type=_positive(float), default=0.6,
                      help="share of a pod's cores the plan fills, the HPA's target (default 0.6)")
    plan.add_argument("--peak-factor", type=_positive(float), default=2.0,
                      help="the HPA's maximum is the plan for this many times --users")
    plan.add_argument("--window", type=_positive(float), default=5.0,
                      help="seconds per regression window (default 5)")
    plan.add_argument("--validate", type=Path, metavar="STEPPED_DIR",
                      help="a stepped (stress) run: predict where it saturated and give the error")
    plan.add_argument("--out", type=Path, help="also write DIR/plan.md")
    _rule_flags(plan)


def main(argv: Sequence[str], launch: Callable[[RunOptions], int] | None = None) -> int:
    """``launch`` plays a ``run`` (default: the runner; the study narrows A's scenario)."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.command == "run" and args.prometheus and not args.host:
        parser.error("--prometheus reads the metrics of a system you started: give its --host "
                     "too (a local topology is scraped directly)")
    logging.basicConfig(level=logging.WARNING, format="lab: %(levelname)s %(message)s")
    if args.command == "report":
        return _report(args)
    if args.command == "plan":
        return _plan(args)
    if args.command == "study":
        from chatsys.lab import study

        return study.main(args, _rule(args))
    from chatsys.lab.runner import RunOptions, run

    chosen = scenario(args.scenario).with_overrides(users=args.users, spawn_rate=args.spawn_rate,
                                                    run_time=args.run_time)
    chosen = replace(chosen, gateways=args.gateways or chosen.gateways,
                     a_replicas=args.a_replicas or chosen.a_replicas,
                     b_replicas=args.b_replicas or chosen.b_replicas)
    try:
        autoscale = _autoscale(args, chosen.elastic)
    except (ValueError, OSError) as exc:  # a bad flag, or manifests missing or not understood
        parser.error(f"hpa: {exc}")
    if autoscale is not None and not args.gateways:  # the HPA starts from minReplicas
        chosen = replace(chosen, gateways=autoscale.min_replicas)
    options = RunOptions(chosen, args.out, host=args.host, prometheus=args.prometheus,
                         prom_step=args.prom_step, label=args.label, rule=_rule(args),
                         locust_processes=args.locust_processes, autoscale=autoscale,
                         driver=args.driver, driver_workers=args.driver_workers)
    return (launch or run)(options)


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


def _plan(args: argparse.Namespace) -> int:
    from chatsys.lab import analysis, costs, plan_report
    from chatsys.lab.plan import Cluster, Load, PlanError, plan, validate

    dirs = [*args.runs, *([args.validate] if args.validate else [])]
    missing = [str(d) for d in dirs if not (d / "metrics.jsonl").exists()]
    if missing:
        print(f"chatsys lab plan: no metrics.jsonl in {', '.join(missing)}", file=sys.stderr)
        return 2
    rule = _rule(args)
    runs = [analysis.load(d, rule) for d in args.runs]
    model = costs.fit(runs, args.window)
    load = Load(args.users, args.mix, args.room_size, args.think, args.join_rate)
    try:
        result = plan(model, load, Cluster(args.cores_per_pod, args.target_utilization),
                      args.peak_factor)
    except PlanError as exc:
        print(f"chatsys lab plan: {exc}", file=sys.stderr)
        return 2
    checked = None
    if args.validate:
        checked = validate(model, analysis.load(args.validate, rule), rule, args.window)
    text = plan_report.render(model, runs, result, checked)
    print(text, end="", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "plan.md").write_text(text)
        print(f"chatsys lab plan: wrote {args.out / 'plan.md'}", file=sys.stderr)
    return 0
