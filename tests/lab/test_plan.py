"""``chatsys lab plan``: replicas from costs, the box's saturation, the kustomize settings, and
one real run planned end to end."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatsys.lab.costs import CostModel, ModuleCosts
from chatsys.lab.plan import (
    DEFAULT_MIX,
    DEFAULT_ROOM_SIZE,
    DEFAULT_THINK,
    Cluster,
    Load,
    box_saturation,
    kustomize_snippet,
    plan,
)
from tests.kubernetes_support import build
from tests.lab_support import ROOT, run_lab


def _costs(module: str, idle: float, **cpu: float) -> ModuleCosts:
    return ModuleCosts(module, idle, cpu, [], [], 0.99, 0.01, 20, 50 * 2**20, 100_000.0, 0.9)


def _model() -> CostModel:
    return CostModel({"P": _costs("P", 0.1, texts=0.001, deliveries=0.00002, connects=0.002),
                      "A": _costs("A", 0.05, texts=0.0005),
                      "B": _costs("B", 0.02, uploads=0.002)}, [], 5.0, 0.0,
                     {"locust": _costs("Locust", 0.0, texts=0.0005),
                      "native": _costs("Locust", 0.0, texts=0.0001)})


def test_the_defaults_are_the_chat_users() -> None:
    source = (ROOT / "locustfiles" / "chat.py").read_text()
    weights = [float(w) for w in re.findall(r"@task\((\d+)\)\s+def (?:send_text|send_file)",
                                            source)]
    assert weights == [DEFAULT_MIX["text"], DEFAULT_MIX["upload"]]
    size = re.search(r'"--chat-room-size", type=int, default=(\d+)', source)
    low = re.search(r'"--chat-wait-min", type=float, default=([\d.]+)', source)
    high = re.search(r'"--chat-wait-max", type=float, default=([\d.]+)', source)
    assert size and low and high
    assert int(size[1]) == DEFAULT_ROOM_SIZE
    assert (float(low[1]) + float(high[1])) / 2 == DEFAULT_THINK


def test_replicas_cover_the_load_at_the_target_utilisation() -> None:
    load = Load(10_000)  # 4,000 texts/s, 1,000 uploads/s, 100,000 deliveries/s
    result = plan(_model(), load, Cluster(cores_per_pod=1.0, target_utilization=0.5))
    by = {p.module: p for p in result.modules}
    # P: 4 + 2 = 6 cores of load; a pod has 0.5 - 0.1 = 0.4 for it: 15 pods.
    assert by["P"].load_cores == pytest.approx(6.0)
    assert by["P"].replicas == 15
    assert by["A"].replicas == math.ceil(2.0 / 0.45)
    assert by["B"].replicas == math.ceil(2.0 / 0.48)
    assert by["P"].cores == pytest.approx(15 * 0.1 + 6.0)
    # Planned replicas at 100 %: P has 15 × 0.9 cores for 0.0006 cores per user.
    assert by["P"].saturates_at == pytest.approx(15 * 0.9 / 0.0006)
    assert by["P"].base_saturates_at == pytest.approx(0.9 / 0.0006)
    assert result.base_first.module == "P"
    assert result.hpa_min == 15 and result.hpa_max == 30  # the plan for twice the users


def test_a_bigger_gateway_pod_uses_its_cores_but_a_and_b_use_one() -> None:
    result = plan(_model(), Load(10_000), Cluster(cores_per_pod=4.0, target_utilization=0.5))
    by = {p.module: p for p in result.modules}
    assert by["P"].replicas == math.ceil(6.0 / (2.0 - 0.1))
    assert by["A"].replicas == math.ceil(2.0 / 0.45)


def test_the_box_saturates_at_the_process_or_the_machine_limit() -> None:
    model = _model()
    per_user = Load(1).per_user()
    # One core each: P's process reaches 0.85 cores first.
    p_limit = (0.85 - 0.1) / 0.0006
    assert box_saturation(model, per_user, cores=64).users == pytest.approx(p_limit)
    # Two cores, a neighbour using 0.5: the machine's 1.8 cores run out first.
    locust = model.generators["locust"]
    tight = box_saturation(model, per_user, cores=2, others=0.5, generator=locust)
    slope = 0.0006 + 0.0002 + 0.0002 + 0.0002  # P, A, B, Locust per user
    assert tight.kind == "machine" and tight.module == "P"
    assert tight.users == pytest.approx((1.8 - 0.5 - 0.17) / slope)


def test_the_load_generator_moves_the_machine_limit_and_joins_take_their_share() -> None:
    model = _model()
    per_user = Load(1).per_user()
    machine = {driver: box_saturation(model, per_user, cores=2, others=0.5, generator=g)
               for driver, g in model.generators.items()}
    # The native driver's fifth of Locust's cost per text leaves the system more of the cores.
    assert machine["native"].users == pytest.approx((1.8 - 0.5 - 0.17) / 0.00104)
    assert machine["native"].users > machine["locust"].users
    # 50 joins a second cost P 0.1 cores: its own limit comes that much earlier.
    joining = box_saturation(model, per_user, cores=64, join_rate=50)
    assert joining.users == pytest.approx((0.85 - 0.1 - 0.1) / 0.0006)


def test_the_kustomize_settings_build(tmp_path: Path) -> None:
    where = ROOT / "kustomize" / f".plan-test-{tmp_path.name}"
    where.mkdir()
    try:
        text = kustomize_snippet(plan(_model(), Load(10_000)))
        (where / "kustomization.yaml").write_text(text.replace("../kustomize/", "../"))
        docs = build(where)
    finally:
        for f in where.iterdir():
            f.unlink()
        where.rmdir()
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    hpa = kinds[("HorizontalPodAutoscaler", "chatsys-gateway")]["spec"]
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] >= hpa["minReplicas"]
    chat = kinds[("Deployment", "chatsys-chat")]["spec"]
    assert chat["replicas"] > 1
    requests = chat["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests["cpu"] == "1000m"


@pytest.mark.slow
def test_a_real_run_is_planned_with_positive_costs(tmp_path: Path) -> None:
    out = tmp_path / "b"
    code, progress = run_lab("run", "baseline", "--users", "20", "--spawn-rate", "10",
                             "--run-time", "15s", out=out)
    assert code == 0, progress
    # A stepped run driven otherwise than the baseline (Locust): the check costs its driver
    # from its own windows, and says so.
    stepped = tmp_path / "a"
    code, progress = run_lab("run", "stress", "--driver", "native", "--users", "12",
                             "--spawn-rate", "6", "--run-time", "12s", out=stepped)
    assert code == 0, progress
    result = subprocess.run(
        [sys.executable, "-m", "chatsys", "lab", "plan", str(out), "--users", "1000",
         "--window", "3", "--validate", str(stepped), "--out", str(tmp_path / "plan")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "plan" / "plan.md").read_text()
    assert text == result.stdout
    rows = {m: re.search(rf"^\| {m} \| ([\d.]+) \|(.*)$", text, re.M) for m in "PAB"}
    for module, row in rows.items():
        assert row is not None, (module, text)
        costs = [float(c) for c in re.findall(r"\| ([\d.]+)(?= \|)", row[2])]
        assert any(c > 0 for c in costs[:5]), (module, row[0])
    plan_rows = re.findall(r"^\| [PAB] \(\w.*?\) \| ([\d.]+) \| ([\d,]+) \| (\d+) \|", text, re.M)
    assert len(plan_rows) == 3
    assert all(float(cores) > 0 and int(replicas) >= 1 for cores, _, replicas in plan_rows)
    assert "```yaml" in text and "minReplicas" in text
    validation = text[text.index("## Validation on this machine"):]
    assert "users joining at 6/s" in validation, validation
    assert "the load generator (native) costed from the stepped run itself" in validation
    assert "| load generator (locust) |" in text


def test_plan_help_names_its_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "chatsys", "lab", "plan", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("--users", "--mix", "--room-size", "--think", "--cores-per-pod",
                 "--target-utilization", "--validate", "--out"):
        assert flag in result.stdout
