"""The study's calibration line: the machine, and the bare ``websockets`` reference's knees.

The study states its machine the way ``python -m bench.run`` does, with bench's own code: a
short bench run of the ``websockets`` reference alone (a smaller probe than bench's default, so
it takes about half a minute), whose first table line is bench's calibration line. ``bench/``
is a repository tool, not part of the installed package; the lab itself needs the checkout
(``locustfiles/`` sits beside ``bench/``), so wherever the study runs, bench's code is there.
When bench cannot run (its extra is not installed, or it failed), the line still states the
machine and says "not calibrated" with the reason: the study's figures are never silently
presented as comparable to another machine's.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120.0
# A short bench: the websockets reference only, one-second steps, one bisection, probes of up
# to 1,000 joins; bench's own defaults (2,000 users, three-second steps) take minutes.
SHORT = ["--targets", "websockets", "--users", "200", "--connect-rate", "200",
         "--room-size", "20", "--rates", "500", "--step-seconds", "1", "--knee-start", "500",
         "--knee-max", "16000", "--knee-bisect", "1", "--retries", "0",
         "--connect-knee-start", "200", "--connect-knee-max", "6400",
         "--connect-probe-seconds", "1", "--connect-probe-max-users", "1000", "--procs", "2"]
# bench's smoke (seconds, no knee searches): only for tests of the study itself.
QUICK = ["--quick", "--targets", "websockets"]
MODES = {"short": SHORT, "quick": QUICK}


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")


def _machine_only(reason: str) -> dict[str, Any]:
    """bench's line without the reference's knees."""
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    line = (f"calibration: {os.cpu_count()} CPUs ({_cpu_model() or 'unknown model'}), "
            f"{mem / 2**30:.1f} GiB RAM, Python {platform.python_version()}; "
            f"not calibrated ({reason})")
    return {"line": line, "calibrated": False, "reason": reason}


def calibrate(mode: str, work: Path) -> dict[str, Any]:
    """Run bench's ``websockets`` reference (``mode``: short, quick, or off)."""
    if mode == "off":
        return _machine_only("--calibration off")
    if not (ROOT / "bench" / "run.py").is_file():
        return _machine_only(f"no bench/ beside chatsys/ in {ROOT}")
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        result = Path(tmp) / "bench.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        # bench's default client is picows (the bench extra); without it, websockets' client
        # probes the reference, and the line says so.
        client = [] if find_spec("picows") else ["--client", "websockets"]
        command = [sys.executable, "-m", "bench.run", *MODES[mode], *client, "--out", tmp,
                   "--json", str(result)]
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return _machine_only(f"bench took over {TIMEOUT:g} s")
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("calibration:")),
                    None)
        if done.returncode != 0 or line is None or not result.exists():
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return _machine_only(f"bench exited with {done.returncode}: {tail}")
        data = json.loads(result.read_text())
    if client:
        line += " (probed with the websockets client: picows is not installed)"
    return {"line": line, "calibrated": True, "mode": mode, "command": " ".join(
        ["python", "-m", "bench.run", *MODES[mode], *client]),
        "calibration": data.get("calibration")}
