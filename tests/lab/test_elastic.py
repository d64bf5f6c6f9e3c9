"""chatsys.lab.elastic end to end: ``chatsys lab run hpa`` with the local HPA, a tiny load and
every duration shortened (``--hpa-time-scale``), scales its gateways up (and, started above
what the load needs, down) during the run, records it in ``hpa.jsonl`` and plots it in the
report. What it checks is that scaling happens for real during a run (the scraper follows new
gateways, users of a removed one resume, no process is left behind), not any performance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatsys.lab.elastic import read_hpa
from chatsys.lab.locust_csv import LocustData
from tests.lab_support import alive, child_pids, run_lab

pytestmark = pytest.mark.slow  # starts real processes


def test_the_hpa_scenario_scales_its_gateways_during_the_run(tmp_path: Path) -> None:
    out = tmp_path / "hpa"
    # Two WebSockets per gateway as the target: 10 users on 2 gateways is 2.5 times it, so the
    # connections policy scales out on its first sync under load (to 5, within the policies).
    code, progress = run_lab("run", "hpa", "--users", "10", "--spawn-rate", "10",
                             "--run-time", "10s", "--hpa-metric", "connections",
                             "--hpa-target", "2", "--hpa-time-scale", "0.05", out=out)
    assert code == 0, progress
    records = read_hpa(out)
    scales = [r["replicas"] for r in records if r["event"] == "replicas"]
    assert scales[0] == 2 and max(scales) > 2, records
    change = next(r for r in records if r["event"] == "replicas" and r["replicas"] > 2)
    assert change["added"] and change["ratios"]["chatsys_ws_connections"] > 1.1
    assert any(r["event"] == "decision" for r in records)
    meta = json.loads((out / "run.json").read_text())
    assert meta["autoscale"]["metrics"][-1]["average_value"] == 2
    assert len({p["address"] for p in meta["processes"] if p["module"] == "P"}) == 1  # one port
    scraped = {json.loads(line)["target"]
               for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert set(change["added"]) <= scraped  # the scraper follows the gateways added
    text = (out / "report.md").read_text()
    assert "![replicas](replicas.png)" in text and "- Gateways: 2 → " in text
    assert "autoscaler:" in progress
    for name, pid in child_pids(out).items():
        assert not alive(pid), f"{name} (pid {pid}) outlived the lab"


def test_a_scale_down_under_load_drains_and_locust_resumes(tmp_path: Path) -> None:
    out = tmp_path / "hpa-down"
    # Four gateways, far more than 10 WebSockets need at 100 per gateway: once the (shortened)
    # scale-down window has passed, the HPA removes the newest one at a time, down to min 2.
    code, progress = run_lab("run", "hpa", "--users", "10", "--spawn-rate", "10",
                             "--run-time", "20s", "--gateways", "4", "--hpa-metric",
                             "connections", "--hpa-target", "100", "--hpa-time-scale", "0.03",
                             out=out)
    assert code == 0, progress
    records = read_hpa(out)
    changes = [r for r in records if r["event"] == "replicas" and "reason" in r]
    assert [r["replicas"] for r in changes] == [3, 2], records
    assert [r["removed"] for r in changes] == [["P-3"], ["P-2"]]  # newest first
    assert changes[0]["reason"] == "ScaleDownLimit"  # one gateway per (shortened) minute
    # The clients of the removed gateways (as their last reading counted them) reconnected
    # with since, and no reconnect failed.
    held = 0.0
    for removed in ("P-3", "P-2"):
        held += [r for r in records if r["event"] == "decision"
                 and removed in r["readings"]["chatsys_ws_connections"]][-1][
                     "readings"]["chatsys_ws_connections"][removed] or 0.0
    reconnect = LocustData.load(out).stat("WS /ws/chat/reconnect")
    if held:
        assert reconnect is not None and reconnect.requests >= 1, records
    assert reconnect is None or reconnect.failures == 0
    for name, pid in child_pids(out).items():
        assert not alive(pid), f"{name} (pid {pid}) outlived the lab"
