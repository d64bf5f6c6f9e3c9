"""The benchmark runner's smoke mode end to end: it starts the bare references and ``chatsys
all``, connects a few users, sends one short message step, and prints its JSON.

Timing is not asserted: the machine running the tests may be busy. What is checked is that the
pipeline works and reports the figures the performance docs are made of.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts real processes

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_prints_figures_as_json(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--targets",
         "websockets,chatsys-granian", "--out", str(tmp_path), "--json",
         str(tmp_path / "result.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    assert "websockets" in out.stdout and "chatsys-granian" in out.stdout  # the table
    result = json.loads(lines[-1])
    assert json.loads((tmp_path / "result.json").read_text())["median"] == result["median"]
    assert set(result) >= {"params", "machine", "targets", "median", "ratios", "verdict"}
    assert result["targets"] == ["websockets", "chatsys-granian"]
    for target in result["targets"]:
        figures = result["median"][target]
        assert {"connect_mean_ms", "connect_p50_ms", "connect_p99_ms", "connect_failures",
                "ack_p99_ms@50", "delivery@50", "achieved@50", "load_cpu_us@50"} <= set(figures)
        assert figures["connect_failures"] == 0
        assert figures["delivery@50"] == 1.0
    assert result["params"]["client"] == "picows"
    assert result["ratios"]["websockets"]["connect_mean"] == 1.0
    assert "connect_mean_le_10ms" in result["verdict"]["chatsys-granian"]


def test_every_bare_reference_chats_with_full_delivery(tmp_path: Path) -> None:
    """The references the ratios are made of: each one serves the protocol subset the bench
    uses (welcome, text -> ack + fan-out) to every member."""
    refs = ["asgi-granian", "asgi-hypercorn", "quart-granian", "quart-hypercorn"]
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--targets", ",".join(refs),
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for target in refs:
        figures = result["median"][target]
        assert figures["connect_failures"] == 0, target
        assert figures["achieved@50"] > 0 and figures["delivery@50"] == 1.0, target


def test_the_websockets_client_measures_the_same_protocol(tmp_path: Path) -> None:
    """``--client websockets`` (the generator's earlier client, kept to compare runs with the
    figures taken with it) connects, sends and counts deliveries like the default."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--targets", "websockets",
         "--client", "websockets", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["params"]["client"] == "websockets"
    figures = result["median"]["websockets"]
    assert figures["connect_failures"] == 0
    assert figures["achieved@50"] > 0 and figures["delivery@50"] == 1.0


def test_codec_benchmark_compares_the_same_bytes_and_prints_json() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.codec", "--quick"], cwd=ROOT,
                         capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr[-4000:]  # it asserts both codecs agree byte for byte
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["ops"]) == 3
    for row in result["ops"].values():
        assert row["betterproto2_us"] > 0 and row["upb_us"] > 0 and row["ratio"] > 0
