"""Running ``chatsys lab`` and a real Prometheus from tests, with cleanup that survives failures.

The lab starts its children in their own sessions (so a terminal's Ctrl-C reaches only the lab)
and lists their pids in ``DIR/pids.json``; :func:`lab` kills the lab's group and every listed
group when the test ends, however it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support import wait_until

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = "/usr/bin/prometheus"
LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _now_ticks() -> int:
    """Clock ticks since boot, the unit of a process's start time in /proc/PID/stat."""
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def _started_before(pid: int, ticks: int) -> bool:
    """``pid`` is a process that started before ``ticks``: not a later one that reused the
    number of a process the lab started and reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19]) <= ticks
    except (OSError, ValueError, IndexError):
        return False


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def child_pids(out: Path) -> dict[str, int]:
    path = out / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


@contextlib.contextmanager
def lab(*args: str, out: Path,
        env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """``python -m chatsys lab ARGS --out OUT`` in the background, stderr to ``OUT.stderr``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stderr = out.with_suffix(".stderr")
    with stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "chatsys", "lab", *args, "--out", str(out)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True, env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        # Whatever the lab left behind, and only that: a group is killed while its leader is
        # unreaped, or if its process started before the lab ended (a reaped child's number
        # may already belong to an unrelated process).
        if proc.returncode is None:
            _kill_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        ended = _now_ticks()
        for pid in child_pids(out).values():
            if _started_before(pid, ended):
                _kill_group(pid)


def run_lab(*args: str, out: Path, timeout: float = 90.0,
            env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the lab to the end; returns its exit code and its progress output (stderr)."""
    with lab(*args, out=out, env=env) as proc:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        code = proc.poll()
        text = out.with_suffix(".stderr").read_text()
        assert code is not None, f"lab overstayed {timeout}s:\n{text}"
    return code, text


@contextlib.contextmanager
def prometheus(config: str, workdir: Path) -> Iterator[str]:
    """A real Prometheus with ``config`` on a loopback port it binds itself (port 0: the port
    it got is read from its "Listening on" log line); yields its URL once ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(config)
    log_path = workdir / "prometheus.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'tsdb'}", "--web.listen-address=127.0.0.1:0"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    found: list[str] = []

    def ready() -> bool:
        if not found:
            match = LISTENING.search(log_path.read_text())
            if match is None:
                return False
            found.append(f"http://127.0.0.1:{match[1]}")
        return httpx.get(f"{found[0]}/-/ready", timeout=1).status_code == 200

    try:
        try:
            wait_until(ready, timeout=30, what="prometheus", proc=proc)  # type: ignore[arg-type]
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\n{log_path.read_text()}") from None
        yield found[0]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait(5)


def targets_up(url: str, job: str, count: int) -> bool:
    result = httpx.get(f"{url}/api/v1/query", params={"query": f'sum(up{{job="{job}"}})'},
                       timeout=2).json()["data"]["result"]
    return bool(result) and float(result[0]["value"][1]) >= count


def wait_for_line(path: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{needle!r} not in {path} within {timeout}s")
