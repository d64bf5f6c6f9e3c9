"""The cost model's regression on synthetic windows whose costs are known."""

from __future__ import annotations

import random

import numpy as np
import pytest

from chatsys.lab.costs import OPERATIONS, Window, fit_module, fit_windows, nnls, separable

IDLE = 0.05
TRUE = {"connects": 0.004, "texts": 0.0008, "uploads": 0.003, "deliveries": 0.00002,
        "users": 0.0001}
MIB = 2**20


def _window(i: int, rates: dict[str, float], replicas: int = 1, noise: float = 0.0,
            rng: random.Random | None = None) -> Window:
    cpu = replicas * IDLE + sum(TRUE[op] * rates[op] for op in OPERATIONS)
    if rng is not None:
        cpu += rng.gauss(0.0, noise)
    rss = replicas * 40 * MIB + 50_000 * rates["users"]
    return Window(float(i), float(i + 5), dict(rates), {"P": cpu}, {"P": rss},
                  {"P": replicas}, 0.5)


def _varied(rng: random.Random, count: int = 60) -> list[Window]:
    """Windows in which every operation moves on its own (different mixes and room sizes)."""
    rows = []
    for i in range(count):
        users = rng.uniform(50, 1000)
        texts = users * rng.uniform(0.2, 0.6)
        uploads = users * rng.uniform(0.02, 0.2)
        rows.append(_window(i * 5, {"connects": rng.uniform(0, 50), "texts": texts,
                                    "uploads": uploads,
                                    "deliveries": (texts + uploads) * rng.uniform(5, 50),
                                    "users": users}, replicas=rng.choice((1, 2)),
                            noise=0.002, rng=rng))
    return rows


def test_nnls_finds_the_constrained_optimum() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([2.0, -1.0, 1.0])  # unconstrained: b2 < 0
    coef = nnls(x, y)
    assert coef[1] == 0.0
    assert coef[0] == pytest.approx(1.5)


def test_known_costs_are_recovered_from_varied_windows() -> None:
    costs = fit_module("P", _varied(random.Random(7)))
    assert costs is not None
    assert costs.merges == [] and costs.unfitted == []
    assert costs.idle == pytest.approx(IDLE, rel=0.1)
    for op, value in TRUE.items():
        assert costs.cpu[op] == pytest.approx(value, rel=0.15), op
    assert costs.r2 is not None and costs.r2 > 0.99
    assert costs.memory_base == pytest.approx(40 * MIB, rel=0.01)
    assert costs.memory_per_user == pytest.approx(50_000, rel=0.01)


def test_a_steady_mix_is_merged_and_still_predicts_at_that_mix() -> None:
    """Texts, uploads, deliveries and users all proportional to users, joins only while the
    users ramp up: a steady run. Their costs cannot be told apart, and the model says so."""
    rows = []
    for i in range(40):
        users = min(1000.0, 50.0 * (i + 1))
        rates = {"connects": 50.0 if users < 1000 else 0.0, "texts": 0.4 * users,
                 "uploads": 0.1 * users, "deliveries": 10.0 * users, "users": users}
        rows.append(_window(i * 5, rates))
    costs = fit_module("P", rows)
    assert costs is not None
    merged = {m.merged: (m.into, m.ratio) for m in costs.merges}
    assert merged["uploads"] == ("texts", pytest.approx(0.25))
    assert merged["deliveries"] == ("texts", pytest.approx(25.0))
    assert merged["users"] == ("texts", pytest.approx(2.5))
    assert "inside texts" == costs.describe("uploads")
    at = {"connects": 0.0, "texts": 200.0, "uploads": 50.0, "deliveries": 5000.0,
          "users": 500.0}
    truth = sum(TRUE[op] * at[op] for op in OPERATIONS)
    assert costs.per_user(at) == pytest.approx(truth, rel=0.01)
    assert costs.cpu["connects"] == pytest.approx(TRUE["connects"], rel=0.01)


def test_what_never_varies_or_moves_against_another_is_not_fitted() -> None:
    columns = {"connects": [0.0, 0.0, 0.0, 0.0], "texts": [1.0, 2.0, 3.0, 4.0],
               "users": [8.0, 6.0, 4.0, 2.0]}
    kept, merges, unfitted = separable(columns, ["connects", "texts", "users"])
    assert kept == ["texts"] and merges == [] and unfitted == ["connects", "users"]


def test_a_module_is_charged_only_for_its_own_work() -> None:
    rows = _varied(random.Random(3))
    costs = fit_module("B", [Window(w.start, w.end, w.rates, {"B": 0.02 + 0.002 *
                                                              w.rates["uploads"]},
                                    {"B": 30 * MIB}, {"B": 1}, None) for w in rows])
    assert costs is not None
    assert set(costs.cpu) == {"uploads"}
    assert costs.cpu["uploads"] == pytest.approx(0.002)
    assert costs.idle == pytest.approx(0.02)


def test_the_load_generator_is_costed_once_per_driver() -> None:
    rng = random.Random(4)

    def driven(driver: str, per_text: float, start: int) -> list[Window]:
        return [Window(w.start + start, w.end + start, w.rates,
                       {"P": w.cpu["P"], "Locust": per_text * w.rates["texts"]},
                       {**w.rss, "Locust": 30 * MIB}, {"P": w.replicas["P"], "Locust": 1},
                       w.others, driver) for w in _varied(rng, 30)]

    locust, native = driven("locust", 0.0009, 0), driven("native", 0.0003, 1000)
    # The system's costs from the Locust runs alone; the native driver's from its own runs.
    model = fit_windows(locust, generator_rows=native)
    assert set(model.modules) == {"P"} and len(model.windows) == len(locust)
    assert model.modules["P"].cpu["texts"] == pytest.approx(TRUE["texts"], rel=0.05)
    assert model.generators["locust"].cpu["texts"] == pytest.approx(0.0009, rel=0.01)
    assert model.generators["native"].cpu["texts"] == pytest.approx(0.0003, rel=0.01)
