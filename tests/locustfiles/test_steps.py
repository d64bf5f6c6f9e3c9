"""Scenario A's stepped stress schedule (``locustfiles/steps.py``), as pure functions.

The module is loaded by path: importing Locust here would monkey-patch the test process.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_steps() -> ModuleType:
    spec = importlib.util.spec_from_file_location("locust_steps", ROOT / "locustfiles/steps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


steps = _load_steps()


def test_default_steps_are_the_seeds_100_to_100000() -> None:
    assert steps.parse_steps() == (100, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
    assert steps.parse_steps(start=1_000, stop=5_000) == (1_000, 2_000, 5_000)


def test_explicit_and_linear_steps() -> None:
    assert steps.parse_steps(" 10, 20,40 ") == (10, 20, 40)
    assert steps.parse_steps(start=100, stop=1_000, step=300) == (100, 400, 700, 1_000)
    assert steps.parse_steps(start=100, stop=700, step=300) == (100, 400, 700)


@pytest.mark.parametrize("text", ["10,5", "0,10", "10,10", "-5"])
def test_steps_must_increase(text: str) -> None:
    with pytest.raises(ValueError):
        steps.parse_steps(text)


def test_tick_ramps_holds_then_stops() -> None:
    # 100 users at 50/s: 2 s ramp + 10 s hold; then +400 users: 8 s ramp + 10 s hold.
    schedule = steps.StepSchedule((100, 500), hold=10, spawn_rate=50)
    assert schedule.boundaries() == [(12.0, 100), (30.0, 500)]
    assert schedule.duration == 30.0
    assert schedule.tick(0) == (100, 50)
    assert schedule.tick(11.99) == (100, 50)
    assert schedule.tick(12.0) == (500, 50)
    assert schedule.tick(29.9) == (500, 50)
    assert schedule.tick(30.0) is None
    assert schedule.tick(1e9) is None


def test_full_seed_stress_lasts_ramp_plus_holds() -> None:
    schedule = steps.StepSchedule(steps.parse_steps(), hold=120, spawn_rate=50)
    # 100,000 users at 50/s is 2,000 s of ramping, plus nine 2-minute holds.
    assert schedule.duration == pytest.approx(2_000 + 9 * 120)
    users = [schedule.tick(t)[0] for t in (0, 200, 2_000, schedule.duration - 1)]
    assert users == sorted(users) and users[-1] == 100_000


@pytest.mark.parametrize("kwargs", [{"hold": 0}, {"spawn_rate": 0}, {"steps": ()}])
def test_schedule_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        steps.StepSchedule(**({"steps": (10,)} | kwargs))
