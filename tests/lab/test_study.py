"""``chatsys lab study``: its plan at the seed's scale, resume state, the seed comparison, and a
tiny end-to-end study that is interrupted (a run left ``running``) and resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatsys.lab.bottleneck import Rule
from chatsys.lab.calibration import calibrate
from chatsys.lab.locust_csv import AGGREGATED, StatsRow
from chatsys.lab.study import PlannedRun, Settings, lab_argv, plan, scale_run
from chatsys.lab.study_report import SEED, Figures, Step, baseline_table, stress_table
from chatsys.lab.study_state import COMPLETE, FAILED, RUNNING, StudyState, StudyStateError
from chatsys.lab.study_steps import StepVerdict, judge

ROOT = Path(__file__).resolve().parents[2]


def test_full_scale_plan_is_the_seeds_scenarios() -> None:
    runs = {r.key: r for r in plan(Settings())}
    for key in ("B", "C-hpa", "C-scaled"):
        assert (runs[key].users, runs[key].spawn_rate, runs[key].run_time) == (2000, 50, 600)
    assert [runs["B"].scenario, runs["C-hpa"].scenario, runs["C-scaled"].scenario] == \
        ["baseline", "hpa", "scaled"]
    steps = [r for r in runs.values() if r.is_step]
    assert [s.users for s in steps] == [100, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000,
                                        100_000]
    assert all(s.hold == 120 and s.spawn_rate == 50 for s in steps)
    assert steps[3].run_time == 2_000 / 50 + 120


def test_scaling_floors_users_and_time_and_ramps_within_a_third() -> None:
    assert scale_run(2000, 50, 600, 1.0) == (2000, 50, 600)
    users, rate, seconds = scale_run(2000, 50, 600, 0.005)
    assert (users, seconds) == (10, 3.0) and users / rate <= seconds / 3
    assert scale_run(2000, 50, 600, 0.0001)[0] == 2  # the floor
    steps = [r.users for r in plan(Settings(scale=0.001)) if r.is_step]
    assert steps == sorted(set(steps)) and steps[0] == 2  # folded steps run once


def test_only_a_gets_the_driver() -> None:
    b, *_, a = plan(Settings(scale=0.01, driver="native"))
    assert "--driver" not in lab_argv(b, Path("x"), Settings(driver="native"), Rule())
    argv = lab_argv(a, Path("x"), Settings(driver="native"), Rule())
    assert argv[argv.index("--driver") + 1] == "native"
    assert argv[:2] == ["run", "stress"] and argv[argv.index("--users") + 1] == str(a.users)


def test_high_steps_run_several_gateways() -> None:
    from chatsys.lab.study import gateways_for

    # 20,000 open files per process, as here: a gateway holds 15,795 of a step's users.
    assert [gateways_for(n, 20_000) for n in (5_000, 15_795, 15_796, 100_000)] == [1, 1, 2, 7]
    assert gateways_for(2_000, 1_024) == 4  # a shell's usual limit
    step = PlannedRun("A-100000", "stress", "A 100000 users", 100_000, 50, 2_120, 100_000, 120)
    argv = lab_argv(step, Path("x"), Settings(driver="native"), Rule())
    assert int(argv[argv.index("--gateways") + 1]) == gateways_for(100_000)
    small = PlannedRun("A-000100", "stress", "A 100 users", 100, 50, 122, 100, 120)
    assert "--gateways" not in lab_argv(small, Path("x"), Settings(driver="native"), Rule())


def _written(run_dir: Path, interrupted: bool = False) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"interrupted": interrupted}))
    (run_dir / "report.md").write_text("# report\n")


def test_a_run_is_complete_only_when_its_data_and_report_are_written(tmp_path: Path) -> None:
    state = StudyState.open(tmp_path, {"scale": 1})
    state.started("B")
    assert StudyState.open(tmp_path, {"scale": 1}).status("B") == RUNNING  # saved at once
    assert state.finished("B", 0, tmp_path / "runs" / "B") == FAILED  # no files
    _written(tmp_path / "runs" / "C")
    state.started("C")
    assert state.finished("C", 130, tmp_path / "runs" / "C") == RUNNING  # Ctrl-C: redo
    _written(tmp_path / "runs" / "D", interrupted=True)
    state.started("D")
    assert state.finished("D", 0, tmp_path / "runs" / "D") == FAILED
    _written(tmp_path / "runs" / "E")
    state.started("E")
    assert state.finished("E", 0, tmp_path / "runs" / "E") == COMPLETE
    again = StudyState.open(tmp_path, {"scale": 1})
    assert again.is_complete("E", tmp_path / "runs" / "E")
    assert not again.is_complete("C", tmp_path / "runs" / "C")
    (tmp_path / "runs" / "E" / "report.md").unlink()  # deleted since: redone
    assert not again.is_complete("E", tmp_path / "runs" / "E")
    with pytest.raises(StudyStateError, match="scale"):
        StudyState.open(tmp_path, {"scale": 0.5})


def _stats(label: str, requests: int, failures: int, p99: float) -> StatsRow:
    kind, _, name = label.partition(" ")
    return StatsRow(kind, name, requests, failures, 10.0, 10.0, p99, p99, p99, 1.0)


def test_a_step_holds_on_joins_connect_p99_and_acks() -> None:
    ok = [_stats("WS /ws/chat/connect", 100, 0, 900), _stats("WS /ws/chat/send_text", 50, 0, 5)]
    assert judge(ok, 100, 100) == StepVerdict(True, [])
    bad = [_stats("WS /ws/chat/connect", 90, 3, 1500), _stats("WS /ws/chat/send_text", 50, 2, 5),
           StatsRow("", AGGREGATED, 140, 5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)]
    verdict = judge(bad, 90, 100)
    assert not verdict.held
    assert verdict.reasons == ["the load reached 90 of 100 users", "3 of 90 joins failed",
                               "connect p99 1,500 ms (limit 1 s)",
                               "2 of 50 texts not acknowledged"]


def _figures(key: str, users: int, mean: float, rps: float) -> Figures:
    return Figures(key, users, mean, mean * 3, rps, 0.0, "P (cpu at 14 s)")


def test_the_seeds_figures_stand_beside_ours() -> None:
    text = "\n".join(baseline_table([_figures("B", 2000, 12.5, 400.0)], 1.0))
    assert f"| connect mean (ms) | {SEED['connect_mean_ms']} | 12.50 |" in text
    assert f"| aggregate RPS | {SEED['rps_2000_users']} | 400.0 |" in text
    assert "P (cpu at 14 s)" in text and "Scaled study" not in text
    assert "Scaled study" in "\n".join(baseline_table([], 0.01))

    def step(users: int, held: bool) -> Step:
        run = PlannedRun(f"A-{users:06d}", "stress", "", users, 50, 10, users, 2)
        return Step(run, COMPLETE, StepVerdict(held, [] if held else ["12 of 900 joins failed"]),
                    _figures(run.key, users, 20.0, users / 5))

    rows = "\n".join(stress_table([step(500, True), step(1000, False)],
                                  [_figures("B", 2000, 12.5, 400.0)]))
    assert f"~{SEED['peak_rps']}" in rows and "400.0 (B, 2,000 users)" in rows
    assert "500 users (A-000500)" in rows
    assert "1,000 users (A-001000): 12 of 900 joins failed; bottleneck P (cpu at 14 s)" in rows


def test_without_calibration_the_line_says_so() -> None:
    line = calibrate("off", Path("unused"))["line"]
    assert line.startswith("calibration: ") and "not calibrated (--calibration off)" in line


def _study(out: Path, *more: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "chatsys", "lab", "study", "--scale", "0.005", "--a-steps", "2,4",
         "--driver", "auto", "--calibration", "off", "--out", str(out), *more],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.slow
def test_a_tiny_study_runs_reports_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "study"
    first = _study(out)
    assert first.returncode == 0, first.stderr[-3000:]
    keys = ["B", "C-hpa", "C-scaled", "A-000002", "A-000004"]
    state = json.loads((out / "study.json").read_text())
    assert [state["runs"][k]["status"] for k in keys] == [COMPLETE] * 5
    report = (out / "report.md").read_text()
    assert "not calibrated" in report
    assert str(SEED["connect_mean_ms"]) in report and str(SEED["rps_2000_users"]) in report
    for key in keys:  # each run's row names its bottleneck, from its own data
        row = next(line for line in report.splitlines() if line.startswith(f"| {key} | "))
        assert "saturates first" in row or "nearest to saturation" in row, row
    # A crash in the middle of C-scaled: its state says running; the next invocation redoes
    # it alone.
    state["runs"]["C-scaled"]["status"] = RUNNING
    (out / "study.json").write_text(json.dumps(state))
    second = _study(out, "--publish", str(tmp_path / "docs"))
    assert second.returncode == 0, second.stderr[-3000:]
    after = json.loads((out / "study.json").read_text())["runs"]
    assert {k: after[k]["attempts"] for k in keys} == {**dict.fromkeys(keys, 1), "C-scaled": 2}
    skipped = [line for line in second.stderr.splitlines() if "complete, skipped" in line]
    assert len(skipped) == 4 and not any("C-scaled" in line for line in skipped)
    assert all(after[k]["status"] == COMPLETE for k in keys)
    published = {p.relative_to(tmp_path / "docs").as_posix()
                 for p in (tmp_path / "docs").rglob("*")}
    assert {"report.md", "study_a.png", "runs/B/report.md", "runs/A-000004/report.md"} \
        <= published
    assert not any(p.endswith((".jsonl", ".csv", ".json", ".log")) for p in published)


def test_the_first_step_with_a_cpu_or_machine_event_is_where_a_saturated() -> None:
    from types import SimpleNamespace

    from chatsys.lab.bottleneck import Event
    from chatsys.lab.study_steps import first_saturated

    def run(*events: Event) -> Any:
        return SimpleNamespace(verdict=SimpleNamespace(events=list(events)))

    latency = Event("latency", "A", 3, "gRPC p99")
    steps = [(100, run()), (500, run(latency)), (1000, run(latency, Event("cpu", "P", 9, "")))]
    assert first_saturated(steps) == steps[2]
    assert first_saturated(steps[:2]) is None


def test_a_dead_process_or_exhausted_descriptors_stop_a_step(tmp_path: Path) -> None:
    from chatsys.lab.study_steps import limits_hit

    run = tmp_path / "run"
    _written(run)
    (run / "run.json").write_text(json.dumps({"died": {"P-0": -9}}))
    (run / "logs").mkdir()
    (run / "logs" / "P-0.log").write_text("OSError: [Errno 24] Too many open files\n")
    (run / "logs" / "A-0.log").write_text("fine\n")
    assert [r.split(" ")[0] for r in limits_hit(run)] == ["P-0", "P-0"]
    assert "file descriptors" in limits_hit(run)[1]


def test_the_hpa_runs_replicas_come_from_its_decisions(tmp_path: Path) -> None:
    from chatsys.lab.study_report import topology_text

    meta = {"topology": {"gateways": 2, "a_replicas": 1, "b_replicas": 1}}
    assert topology_text(tmp_path, meta) == "P 2, A 1, B 1"
    (tmp_path / "hpa.jsonl").write_text("".join(
        json.dumps(r) + "\n" for r in ({"event": "replicas", "replicas": 2},
                                       {"event": "decision", "desired": 4},
                                       {"event": "replicas", "replicas": 4},
                                       {"event": "replicas", "replicas": 3})))
    assert topology_text(tmp_path, meta) == "P 2→4 (HPA, 2 changes, 3 at the end), A 1, B 1"


def test_study_help_names_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from chatsys.lab.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["study", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--scale", "--a-steps", "--driver", "--calibration", "--publish",
                 "--cpu-threshold"):
        assert flag in text


def test_one_study_per_directory_at_a_time(tmp_path: Path) -> None:
    from chatsys.lab.study_state import exclusive

    with exclusive(tmp_path), pytest.raises(StudyStateError, match="another study"):
        with exclusive(tmp_path):
            pass
    with exclusive(tmp_path):  # released
        pass
