"""``chatsys lab study --out DIR``: the seed's scenarios at the seed's scale, in one command.

The study plays, one after another on this machine, scenario B (``baseline``: 2,000 users at
50/s for 10 minutes, ``locustfiles/baseline.conf``), C-hpa (``hpa``), C-scaled (``scaled``),
then A: the seed's stress steps (100 … 100,000 users, ``locustfiles/stress.conf``), one lab run
per step, climbing until a step does not hold (:func:`chatsys.lab.study_report.held`). Every
run goes through ``chatsys lab run``'s own command line (:func:`chatsys.lab.cli.main`), so a
study run is exactly the run that command documents, with whatever flags it has; A's runs are
the ``stress`` scenario narrowed to one step. Then one report puts the figures beside the
seed's (:mod:`chatsys.lab.study_report`).

``DIR/study.json`` records each run (:mod:`chatsys.lab.study_state`): re-running the same
command skips complete runs and redoes an interrupted one. ``--scale`` shrinks users and
durations for a smoke.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from chatsys.lab.bottleneck import Rule
from chatsys.lab.scenarios import Scenario, scenario

MIN_USERS = 2
MIN_SECONDS = 3.0
MIN_HOLD = 2.0
RAMP_SHARE = 1 / 3  # a scaled run ramps up in at most this share of its time
OVERHEAD = 25.0  # seconds a run spends outside its load: topology, Locust, report
EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 130
C_RUNS = (("C-hpa", "hpa"), ("C-scaled", "scaled"))
# A gateway process holds at most its --max-connections (default) and what its open files allow;
# an A step keeps a fifth of that free, so that a gateway's limit is never what stops the climb.
GATEWAY_CONNECTIONS = 20_000
GATEWAY_SHARE = 0.8


@dataclass(frozen=True)
class PlannedRun:
    """One lab run of the study, at the scale it will actually run."""

    key: str  # B, C-hpa, C-scaled, A-00100 …
    scenario: str  # the lab scenario's name
    label: str
    users: int
    spawn_rate: float
    run_time: float
    seed_users: int  # the same run at the seed's scale (A: the seed's step)
    hold: float = 0.0  # A: seconds the step holds after its ramp

    @property
    def is_step(self) -> bool:
        return self.scenario == "stress"

    @property
    def estimate(self) -> float:
        return self.run_time + OVERHEAD


@dataclass(frozen=True)
class Settings:
    """What makes two invocations the same study (stored in ``study.json``)."""

    scale: float = 1.0
    users: int | None = None  # B and C
    spawn_rate: float | None = None
    run_time: float | None = None
    a_steps: tuple[int, ...] | None = None  # absolute, not scaled
    a_hold: float | None = None
    a_spawn_rate: float | None = None
    driver: str = "locust"
    calibration: str = "short"

    def stored(self) -> dict[str, Any]:
        out = asdict(self)
        out["a_steps"] = list(self.a_steps) if self.a_steps else None
        return out


def scale_run(users: int, rate: float, run_time: float, scale: float) -> tuple[int, float, float]:
    """Users and seconds times ``scale`` (at least ``MIN_USERS``, ``MIN_SECONDS``); the spawn
    rate too, but fast enough that the ramp takes at most ``RAMP_SHARE`` of the run."""
    if scale == 1.0:
        return users, rate, run_time
    u = max(MIN_USERS, round(users * scale))
    t = max(MIN_SECONDS, run_time * scale)
    return u, max(rate * scale, u / (t * RAMP_SHARE)), t


def scale_step(step: int, rate: float, hold: float, scale: float) -> tuple[int, float, float]:
    """One A step: (users, spawn rate, hold); the scaled ramp is at most the scaled hold."""
    if scale == 1.0:
        return step, rate, hold
    u = max(MIN_USERS, round(step * scale))
    h = max(MIN_HOLD, hold * scale)
    return u, max(rate * scale, u / h), h


def plan(settings: Settings) -> list[PlannedRun]:
    """B, C-hpa, C-scaled, then every A step (the climb may stop before the last)."""
    runs: list[PlannedRun] = []
    for key, name in (("B", "baseline"), *C_RUNS):
        sc = scenario(name)
        users, rate, run_time = scale_run(sc.users, sc.spawn_rate, sc.run_time, settings.scale)
        runs.append(PlannedRun(key, name, f"{key} {name}", settings.users or users,
                               settings.spawn_rate or rate, settings.run_time or run_time,
                               sc.users))
    stress = scenario("stress")
    if settings.a_steps:
        hold = settings.a_hold or max(MIN_HOLD, stress.hold * settings.scale)
        steps = [(s, s, settings.a_spawn_rate or max(stress.spawn_rate * settings.scale,
                                                     s / hold), hold)
                 for s in settings.a_steps]
    else:
        steps = []
        for seed_step in stress.steps:
            u, r, h = scale_step(seed_step, stress.spawn_rate, stress.hold, settings.scale)
            steps.append((seed_step, u, settings.a_spawn_rate or r, settings.a_hold or h))
    seen: set[int] = set()
    for seed_step, users, rate, hold in steps:
        if users in seen:  # scaling folded two seed steps into one
            continue
        seen.add(users)
        runs.append(PlannedRun(f"A-{users:06d}", "stress", f"A {users} users", users, rate,
                               users / rate + hold, seed_step, hold))
    return runs


def one_step(sc: Scenario, run: PlannedRun) -> Scenario:
    """The stress scenario narrowed to one step: ramp to ``run.users``, hold, end."""
    return replace(sc, users=run.users, spawn_rate=run.spawn_rate, run_time=run.run_time,
                   steps=(run.users,))


def run_accepts(scenario_name: str, *flags: str) -> bool:
    """Whether ``chatsys lab run SCENARIO FLAGS…`` parses: what the lab's other features
    added to it (the native driver, the local HPA) without naming their modules."""
    from chatsys.lab.cli import build_parser

    argv = ["run", scenario_name, "--out", "unused", *flags]
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            _, unknown = build_parser().parse_known_args(argv)
    except SystemExit:  # an invalid value, e.g. a --driver without that choice
        return False
    return not unknown


def native_available() -> bool:
    return run_accepts("stress", "--driver", "native")


def choose_driver(requested: str) -> str:
    """``auto``: the native driver when ``lab run`` has one, else Locust."""
    if requested == "auto":
        return "native" if native_available() else "locust"
    if requested == "native" and not native_available():
        raise ValueError("this lab has no native driver (lab run --driver native)")
    return requested


def gateways_for(users: int, open_files: int | None = None) -> int:
    """Gateway processes (on one host each, as ``--workers`` would on one port) an A step of
    ``users`` needs, each holding at most :data:`GATEWAY_SHARE` of what one process can:
    the seed's 100,000 users need 7 where a process may open 20,000 files."""
    from chatsys.runtime.limits import sockets_allowed

    if open_files is None:  # the gateways raise their soft limit to this one
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    allowed = sockets_allowed(open_files)
    one = GATEWAY_CONNECTIONS if allowed is None else max(1, min(GATEWAY_CONNECTIONS, allowed))
    return max(1, math.ceil(users / (one * GATEWAY_SHARE)))


def lab_argv(run: PlannedRun, run_dir: Path, settings: Settings, rule: Rule) -> list[str]:
    """``chatsys lab run`` arguments for one planned run."""
    argv = ["run", run.scenario, "--out", str(run_dir), "--label", run.label,
            "--users", str(run.users), "--spawn-rate", f"{run.spawn_rate:g}",
            "--run-time", f"{run.run_time:g}", "--cpu-threshold", f"{rule.cpu_threshold:g}",
            "--latency-threshold", f"{rule.latency_threshold:g}",
            "--machine-threshold", f"{rule.machine_threshold:g}"]
    if run.is_step and settings.driver != "locust":
        argv += ["--driver", settings.driver]
    if run.is_step and (gateways := gateways_for(run.users)) > 1:
        argv += ["--gateways", str(gateways)]
    hpa_time = ["--hpa-time-scale", f"{max(settings.scale, 0.1):g}"]
    if run.scenario == "hpa" and settings.scale < 1 and run_accepts("hpa", *hpa_time):
        # The HPA's periods shrink with the run, or a smoke would never see it act.
        argv += hpa_time
    return argv


def launch(run: PlannedRun, argv: Sequence[str]) -> int:
    """Play one run through ``chatsys lab run``'s own code path."""
    from chatsys.lab import cli, runner

    def start(options: runner.RunOptions) -> int:
        if run.is_step:
            options = replace(options, scenario=one_step(options.scenario, run))
        return runner.run(options)

    return cli.main(list(argv), launch=start)


def say(text: str) -> None:
    print(f"study: {text}", file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


@dataclass
class Study:
    out: Path
    settings: Settings
    rule: Rule = field(default_factory=Rule)  # given to every run and to the report
    publish: Path | None = None  # where the reports and plots are copied (docs/study)
    runner: Callable[[PlannedRun, Sequence[str]], int] = launch

    def run_dir(self, run: PlannedRun) -> Path:
        return self.out / "runs" / run.key

    def main(self) -> int:
        from chatsys.lab import calibration, study_report, study_steps
        from chatsys.lab.study_state import COMPLETE, FAILED, StudyState

        # The rule's thresholds are part of the study: every run's report is written with them.
        state = StudyState.open(self.out, {**self.settings.stored(), "rule": asdict(self.rule)})
        planned = plan(self.settings)
        began = time.monotonic()
        if state.calibration is None:
            if self.settings.calibration != "off":
                say(f"calibrating ({self.settings.calibration}): bench's websockets reference")
            state.calibration = calibration.calibrate(self.settings.calibration, self.out)
            state.save()
        say(state.calibration["line"])
        climbing = True
        for i, run in enumerate(planned, 1):
            run_dir = self.run_dir(run)
            if run.is_step and not climbing:
                continue
            if state.is_complete(run.key, run_dir):
                say(f"[{i}/{len(planned)}] {run.key}: complete, skipped")
            else:
                remaining = sum(r.estimate for r in planned[i - 1:]
                                if state.status(r.key) != COMPLETE)
                say(f"[{i}/{len(planned)}] {run.key}: {run.scenario}, {run.users} users at "
                    f"{run.spawn_rate:g}/s for {_clock(run.run_time)}; elapsed "
                    f"{_clock(time.monotonic() - began)}, remaining at most {_clock(remaining)}"
                    f" (A stops at its first step that does not hold)")
                if run_dir.exists():  # an interrupted or failed attempt: start it afresh
                    shutil.rmtree(run_dir)
                state.started(run.key)
                code = self.runner(run, lab_argv(run, run_dir, self.settings, self.rule))
                status = state.finished(run.key, code, run_dir)
                say(f"{run.key}: {status} (exit {code})")
                if code == EXIT_INTERRUPTED:
                    say("interrupted: run the same command again to resume")
                    return EXIT_INTERRUPTED
            if run.is_step:
                record = state.runs[run.key]
                verdict = (study_steps.held(run_dir, run.users)
                           if record["status"] == COMPLETE else study_steps.StepVerdict(
                               False, [f"the run failed (exit {record.get('exit')})"]))
                record["held"], record["why_not"] = verdict.held, verdict.reasons
                state.save()
                if not verdict.held:
                    climbing = False
                    say(f"{run.key} did not hold ({'; '.join(verdict.reasons)}): A stops "
                        "climbing here")
        path = study_report.write(self.out, planned, state, self.rule)
        say(f"report: {path} ({_clock(time.monotonic() - began)})")
        if self.publish is not None:
            copied = study_report.publish(self.out, self.publish)
            say(f"published {len(copied)} files (reports and plots, no raw data) to "
                f"{self.publish}")
        failed = [key for key, record in state.runs.items() if record.get("status") == FAILED]
        if failed:
            say(f"failed: {', '.join(failed)} (see their run.json); run the same command again "
                "to redo them")
            return EXIT_FAILED
        return EXIT_OK


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(sorted({int(s) for s in text.split(",") if s.strip()}))
    except ValueError:
        steps = ()
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"not a list of users: {text!r} (e.g. 100,500,1000)")
    return steps


def add_parser(sub: Any, positive: Callable[..., Any], duration: Callable[[str], float],
               rule_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """``chatsys lab study``'s flags (registered by :mod:`chatsys.lab.cli`)."""
    study = sub.add_parser(
        "study", help="the seed's B, C-hpa, C-scaled and A in one command, one report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run scenario B (2,000 users at 50/s, 10 min), C-hpa, C-scaled, then A's "
                    "steps until one does not hold, and write DIR/report.md beside the seed's "
                    "figures. About 45 minutes at full scale on a 2-core machine. Re-run the "
                    "same command to resume after an interruption (see docs/lab.md).")
    study.add_argument("--out", type=Path, required=True, help="study directory (created)")
    study.add_argument("--scale", type=positive(float), default=1.0,
                       help="multiply users and durations (and spawn rates, fast enough to "
                            "ramp in a third of a run), e.g. 0.01 for a smoke (default 1)")
    study.add_argument("--users", type=positive(int),
                       help="B and C: users (as given: --scale does not apply)")
    study.add_argument("--spawn-rate", type=positive(float), help="B and C: users per second")
    study.add_argument("--run-time", type=duration, help="B and C: e.g. 20s, 10m")
    study.add_argument("--a-steps", type=_steps,
                       help="A: the steps, in users, as given (--scale does not apply)")
    study.add_argument("--a-hold", type=duration, help="A: how long each step holds")
    study.add_argument("--a-spawn-rate", type=positive(float), help="A: ramp, users per second")
    study.add_argument("--driver", choices=("auto", "locust", "native"), default="auto",
                       help="A's load generator: auto = the native driver when this lab has "
                            "one, else Locust (B and C always use Locust)")
    study.add_argument("--calibration", choices=("short", "quick", "off"), default="short",
                       help="short: bench's websockets reference, about 30 s (default); quick: "
                            "bench --quick, seconds, no knees; off: machine only")
    study.add_argument("--publish", type=Path, metavar="DEST",
                       help="also copy the reports and plots, not the raw data, to DEST "
                            "(e.g. docs/study)")
    rule_flags(study)


def main(args: argparse.Namespace, rule: Rule) -> int:
    from chatsys.lab.study_state import StudyStateError, exclusive

    try:
        driver = choose_driver(args.driver)
    except ValueError as exc:
        print(f"chatsys lab study: {exc}", file=sys.stderr)
        return EXIT_SETUP
    settings = Settings(args.scale, args.users, args.spawn_rate, args.run_time, args.a_steps,
                        args.a_hold, args.a_spawn_rate, driver, args.calibration)
    try:
        with exclusive(args.out):
            return Study(args.out, settings, rule, publish=args.publish).main()
    except StudyStateError as exc:
        print(f"chatsys lab study: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:  # between runs (a run itself handles Ctrl-C and returns 130)
        say("interrupted: run the same command again to resume")
        return EXIT_INTERRUPTED


