"""``python -m bench.joins`` end to end on a tiny storm: it starts ``chatsys all``, joins and
leaves a few users, and reports CPU per join + leave of P and A. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts real processes

ROOT = Path(__file__).resolve().parents[2]


def test_a_storm_reports_cpu_per_join_and_leave(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.joins", "--users", "40", "--rate", "100", "--rounds", "1",
         "--settle", "0.5", "--targets", "chatsys-granian", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("calibration: ")
    result = json.loads(lines[-1])
    storm = result["rounds"][0]["chatsys-granian"]
    assert storm["connected"] == 40 and storm["failures"] == 0
    assert storm["p_us"] > 0 and storm["a_us"] > 0
    assert any(line.startswith("chatsys-granian ") for line in lines)
