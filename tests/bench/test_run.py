"""The benchmark runner's smoke mode end to end: it starts the bare references and ``chatsys
all``, connects a few users, sends one short message step, probes a tiny connect knee, and
prints its JSON.

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
        [sys.executable, "-m", "bench.run", "--quick", "--connect-knee", "on", "--targets",
         "websockets,chatsys-granian", "--out", str(tmp_path), "--json",
         str(tmp_path / "result.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    assert "websockets" in out.stdout and "chatsys-granian" in out.stdout  # the table
    assert lines[0].startswith("calibration: ") and "connect knee /s" in out.stdout
    result = json.loads(lines[-1])
    written = json.loads((tmp_path / "result.json").read_text())  # the printed one + rounds
    assert written["median"] == result["median"]
    assert set(result) >= {"params", "machine", "calibration", "targets", "median", "ratios",
                           "ratios_asgi_granian", "verdict"}
    assert result["targets"] == ["websockets", "chatsys-granian"]
    for target in result["targets"]:
        figures = result["median"][target]
        assert {"connect_mean_ms", "connect_p50_ms", "connect_p99_ms", "connect_failures",
                "ack_p99_ms@50", "delivery@50", "achieved@50", "load_cpu_us@50"} <= set(figures)
        assert figures["connect_failures"] == 0
        assert figures["delivery@50"] == 1.0
        # the connect knee: a probed rate (held, or the search halved below the start)
        p = result["params"]
        assert 0 <= figures["connect_knee_per_s"] <= p["connect_knee_max"]
        assert figures["connect_knee_bound_by"][0] in {"ceiling", "server", "generator"}
        probes = written["rounds"][0][target]["connect_probes"]
        assert probes and all(c["users"] >= p["connect_probe_min_users"] for c in probes)
        assert all(c["connected"] == c["users"] for c in probes if c["holds"])
        assert all(0 <= c["load_busy"] and c["server_cpu_us_per_connect"] >= 0 for c in probes)
    calibration = result["calibration"]
    assert calibration["nproc"] >= 1 and calibration["ram_gib"] > 0 and calibration["python"]
    assert "websockets" in calibration["versions"]
    assert calibration["reference_connect_knee_per_s"] == \
        result["median"]["websockets"]["connect_knee_per_s"]
    assert calibration["reference_knee_per_s"] is None  # no message knee in --quick
    assert result["params"]["client"] == "picows"
    assert result["ratios"]["websockets"]["connect_mean"] == 1.0
    assert result["ratios"]["websockets"]["connect_knee"] == 1.0
    # no asgi-granian row: the targets stated against it are undecided, not passed
    verdict = result["verdict"]["chatsys-granian"]
    assert verdict["connect_mean_le_2x_asgi_granian"] is None
    assert verdict["connect_knee_ge_0.5x_asgi_granian"] is None
    assert verdict["knee_ge_0.9x_asgi_granian"] is None
    assert result["ratios_asgi_granian"]["chatsys-granian"]["connect_knee"] is None
    # where a chatsys join goes: the gateway's own stage timings and CPU per join, in the
    # connect phase; the session call (at A) is one of the stages every join has
    chatsys = result["median"]["chatsys-granian"]
    assert chatsys["gateway_ms.connect"] > 0 and chatsys["gateway_ms.session"] > 0
    assert chatsys["gateway_ms.history"] is None  # no join resumed with since
    assert chatsys["server_cpu_us_per_join"] >= 0 and chatsys["a_cpu_us_per_join"] >= 0
    assert "a_cpu_us_per_join" in result["median"]["websockets"]  # None: no A
    assert any(line.startswith("join chatsys-granian: client ") for line in lines)


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


@pytest.mark.parametrize(("chatsys_knee", "chatsys_bound", "ref_bound", "expected"), [
    (600, 0, 0, False), (3000, 0, 0, True),
    (600, 0, 1, False),  # the reference's knee is a lower bound: a fail only gets worse
    (3000, 0, 1, None),  # ... and a pass may not be one
    (600, 1, 0, None),  # chatsys's knee is a lower bound: a fail may not be one
    (3000, 1, 0, True),  # ... and a pass only gets better
])
def test_a_connect_knee_bound_by_the_generator_decides_only_what_it_can(
        chatsys_knee: float, chatsys_bound: int, ref_bound: int, expected: bool | None) -> None:
    from bench.run import ratios, verdict

    medians = {
        "websockets": {"knee_per_s": 5000, "connect_knee_per_s": 2400,
                       "connect_mean_ms": 1.0, "connect_knee_generator_rounds": 0},
        "asgi-granian": {"knee_per_s": 3000, "connect_knee_per_s": 5600,
                         "connect_mean_ms": 1.1, "connect_knee_generator_rounds": ref_bound},
        "chatsys-granian": {"knee_per_s": 2500, "connect_knee_per_s": chatsys_knee,
                            "connect_mean_ms": 2.7, "connect_p99_ms": 11.0,
                            "connect_failures": 0,
                            "connect_knee_generator_rounds": chatsys_bound},
    }
    decided = verdict(medians, ratios(medians), ratios(medians, "asgi-granian"))
    assert decided["chatsys-granian"]["connect_knee_ge_0.5x_asgi_granian"] is expected
