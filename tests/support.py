"""Starting real chatsys processes for tests: free ports, readiness polled with a deadline,
and cleanup that kills the whole process group even when a test fails."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from chatsys.runtime.children import free_port as free_port  # one definition, re-exported

PYTHON = sys.executable


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            if check():
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready within {timeout}s")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=1.0).status_code == 200


@dataclass
class Proc:
    """A chatsys process started by a test; its output goes to a log file shown on failure."""

    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    chatsys: bool = True  # False: ``args`` is a whole command line (redis-server)

    def start(self) -> Proc:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = self.log_path.open("ab")
        command = [PYTHON, "-m", "chatsys", *self.args] if self.chatsys else list(self.args)
        self.popen = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL of the whole group if it overstays.

        The group is signalled only while its leader is not yet reaped: a reaped pid may
        already belong to another test's process, whose group a late ``killpg`` would kill."""
        if self.popen is None:
            return None
        pid = self.popen.pid
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            _wait_unreaped(pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # the leader is at most a zombie: still ours
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        return self.popen.returncode


def _wait_unreaped(pid: int, timeout: float) -> None:
    """Until the child ``pid`` exits (left unreaped, so its pid stays ours) or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.02)


@contextlib.contextmanager
def running(args: Sequence[str], ready: Callable[[], bool], *, timeout: float = 30.0,
            log_dir: Path | None = None, env: dict[str, str] | None = None) -> Iterator[Proc]:
    name = "-".join(a for a in args if not a.startswith("-"))[:40] or "proc"
    with _running(Proc(list(args), _log_path(log_dir, name), dict(env or {})), ready,
                  timeout) as proc:
        yield proc


@contextlib.contextmanager
def running_command(command: Sequence[str], ready: Callable[[], bool], *, name: str,
                    timeout: float = 30.0, log_dir: Path | None = None) -> Iterator[Proc]:
    """Like :func:`running` for a program that is not chatsys (a redis-server)."""
    with _running(Proc(list(command), _log_path(log_dir, name), chatsys=False), ready,
                  timeout) as proc:
        yield proc


def _log_path(log_dir: Path | None, name: str) -> Path:
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="chatsys-log-"))
    return log_dir / f"{name}-{time.monotonic_ns()}.log"


@contextlib.contextmanager
def _running(proc: Proc, ready: Callable[[], bool], timeout: float) -> Iterator[Proc]:
    proc.start()
    try:
        try:
            wait_until(ready, timeout=timeout, what=" ".join(proc.args), proc=proc.popen)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\n--- output ---\n{proc.output()}") from None
        yield proc
    finally:
        proc.stop()
