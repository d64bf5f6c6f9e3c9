"""Real Locust, headless, against the real stack: the stats it writes are what we assert on.

Each run is short and small; Locust runs as a subprocess in its own session (it monkey-patches
with gevent) and is killed with its whole group if it overstays.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.gateway_support import Gateway, start_all, start_gateway, start_system
from tests.support import wait_until

pytestmark = pytest.mark.slow  # starts real processes

ROOT = Path(__file__).resolve().parents[2]
CHAT = "locustfiles/chat.py"
CONNECT, RECONNECT = "/ws/chat/connect", "/ws/chat/reconnect"
SEND_TEXT, SEND_FILE, UPLOAD = "/ws/chat/send_text", "/ws/chat/send_file", "/api/files"


@dataclass
class Run:
    returncode: int
    output: str
    stats: dict[str, dict[str, str]]  # by name, "Aggregated" included
    failures: list[dict[str, str]]
    exceptions: list[dict[str, str]]

    def count(self, name: str) -> int:
        return int(self.stats[name]["Request Count"]) if name in self.stats else 0

    def failed(self, name: str) -> int:
        return int(self.stats[name]["Failure Count"]) if name in self.stats else 0

    def errors(self) -> set[str]:
        return {f"{row['Name']}: {row['Error']}" for row in self.failures}


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _command(gateway_port: int, prefix: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", CHAT, "--headless", "--only-summary",
            "--host", f"http://127.0.0.1:{gateway_port}", "--csv", str(prefix), *args]


def _result(proc: subprocess.Popen[str], prefix: Path, timeout: float) -> Run:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        output = "(locust hung)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    stats = {row["Name"]: row for row in _rows(Path(f"{prefix}_stats.csv"))}
    run = Run(proc.returncode, output, stats, _rows(Path(f"{prefix}_failures.csv")),
              _rows(Path(f"{prefix}_exceptions.csv")))
    assert "(locust hung)" not in output, f"locust overstayed {timeout}s"
    assert "Traceback" not in output, output
    assert run.exceptions == [], run.exceptions
    return run


class Locust:
    """Locust started in the background; ``wait()`` lets it finish and reads its stats."""

    def __init__(self, port: int, prefix: Path, *args: str, timeout: float = 60) -> None:
        self.prefix, self.timeout = prefix, timeout
        self.proc = subprocess.Popen(_command(port, prefix, *args), cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait(self) -> Run:
        return _result(self.proc, self.prefix, self.timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


@contextlib.contextmanager
def locust(port: int, prefix: Path, *args: str, timeout: float = 60) -> Iterator[Locust]:
    runner = Locust(port, prefix, *args, timeout=timeout)
    try:
        yield runner
    finally:
        runner.kill()


def run_locust(port: int, prefix: Path, *args: str, timeout: float = 60) -> Run:
    with locust(port, prefix, *args, timeout=timeout) as runner:
        return runner.wait()


@pytest.fixture(scope="module")
def chatsys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("locust-all")
    with start_all(tmp / "data", tmp) as gateway:
        yield gateway


def test_chat_session_round_trips(chatsys: Gateway, tmp_path: Path) -> None:
    """The done-when run, shortened: 60 users, zero failures, 8:2 text to upload."""
    users = 60
    run = run_locust(chatsys.port, tmp_path / "run", "-u", str(users), "-r", "30", "-t", "12s",
                     "--chat-deliver-sample", "0.05")
    assert run.returncode == 0, run.output
    assert run.failed("Aggregated") == 0, run.errors()
    assert run.count(CONNECT) == users
    assert run.count(RECONNECT) == 0
    texts, uploads, announces = run.count(SEND_TEXT), run.count(UPLOAD), run.count(SEND_FILE)
    # Every announce follows its upload; at -t Locust kills each user wherever it is (no
    # --stop-timeout), so a user killed between its upload and the announce's ack leaves one
    # upload unannounced in the stats: at most one per user, never an announce without upload.
    assert 0 < announces <= uploads <= announces + users, (uploads, announces)
    assert 2.5 <= texts / uploads <= 8, (texts, uploads)  # weights 8:2, i.e. 4 ± noise
    text = run.stats[SEND_TEXT]
    # A round trip through the gateway and A, not a socket write (the seed's 0.01 ms).
    assert float(text["Median Response Time"]) > 0
    assert float(text["Average Response Time"]) >= 0.5
    assert float(run.stats[CONNECT]["Average Response Time"]) > 0
    assert run.count("/ws/chat/deliver") > 0


def test_two_processes_split_the_users(chatsys: Gateway, tmp_path: Path) -> None:
    run = run_locust(chatsys.port, tmp_path / "procs", "-u", "40", "-r", "40", "-t", "8s",
                     "--processes", "2", "--chat-rooms", "4")
    assert run.returncode == 0, run.output
    assert run.failed("Aggregated") == 0, run.errors()
    assert run.count(CONNECT) == 40
    assert run.count(SEND_TEXT) > 0 and run.count(SEND_FILE) > 0


def test_gateway_refusing_the_upgrade_is_a_named_failure(chatsys: Gateway,
                                                         tmp_path: Path) -> None:
    run = run_locust(chatsys.port, tmp_path / "bad", "-u", "4", "-r", "4", "-t", "4s",
                     "--chat-room-prefix", "no spaces allowed")
    assert run.returncode == 1  # --exit-code-on-error defaults to 1
    assert run.errors() == {f"{CONNECT}: upgrade refused: HTTP 400 bad_request"}
    assert run.failed(CONNECT) == run.count(CONNECT) >= 4
    assert run.count(SEND_TEXT) == 0


def test_gateway_down_is_a_connect_failure_not_a_hang(tmp_path: Path) -> None:
    from tests.support import unused_port

    run = run_locust(unused_port(), tmp_path / "down", "-u", "4", "-r", "4", "-t", "4s",
                     timeout=30)
    assert run.returncode == 1
    assert run.failed(CONNECT) == run.count(CONNECT) >= 4
    assert all("ConnectionRefusedError" in e for e in run.errors()), run.errors()
    # Retries back off (0.5 s, 1 s, 2 s ...): a handful of attempts per user, not a busy loop.
    assert run.count(CONNECT) <= 4 * 6


def test_error_frames_are_failures_with_their_code(tmp_path: Path) -> None:
    with start_all(tmp_path / "data", tmp_path, "granian", None, "--max-text-chars=50") as gw:
        run = run_locust(gw.port, tmp_path / "errors", "-u", "6", "-r", "6", "-t", "5s",
                         "--chat-text-size", "100", "--chat-wait-min", "0.1",
                         "--chat-wait-max", "0.3")
    assert run.returncode == 1
    assert run.errors() == {f"{SEND_TEXT}: error frame: too_large"}
    assert run.failed(SEND_TEXT) == run.count(SEND_TEXT) > 0
    assert run.failed(SEND_FILE) == 0 and run.count(SEND_FILE) > 0
    assert run.count(CONNECT) == 6


def _ws_connections(port: int) -> int:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    for line in text.splitlines():
        if line.startswith("chatsys_ws_connections "):
            return int(float(line.split()[1]))
    return 0


def test_close_1001_reconnects_with_since(tmp_path: Path) -> None:
    """A gateway restart drains with 1001: users count a reconnect each, nobody crashes."""
    users = 8
    with start_system(tmp_path) as system, \
            locust(system.port, tmp_path / "restart", "-u", str(users), "-r", str(users),
                   "-t", "12s", "--chat-wait-min", "0.2", "--chat-wait-max", "0.5") as runner:
        wait_until(lambda: _ws_connections(system.port) == users, timeout=15,
                   what="locust users connected")
        system.gateway.proc.stop()
        with start_gateway(system.a.port, system.b.port, tmp_path, port=system.port):
            wait_until(lambda: _ws_connections(system.port) == users, timeout=15,
                       what="locust users reconnected")
            run = runner.wait()  # Locust ends its run against the new gateway
    assert run.count(CONNECT) == users and run.failed(CONNECT) == 0
    assert run.count(RECONNECT) - run.failed(RECONNECT) == users
    allowed = {RECONNECT, SEND_TEXT, SEND_FILE, UPLOAD}
    assert {row["Name"] for row in run.failures} <= allowed, run.errors()
    assert run.count(SEND_TEXT) - run.failed(SEND_TEXT) > 0
