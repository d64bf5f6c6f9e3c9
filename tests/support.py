"""Starting single real chatsys processes for synchronous tests: readiness polled with a
deadline, and cleanup that kills the whole process group even when a test fails.

Why this exists beside :mod:`chatsys.runtime.topology`, which owns starting, killing and
restarting P, A, B and Redis (the system tests and chaos use it): the topology is async, and
many tests are plain ``def`` tests, or start one server beside an in-test client, or a
process whose output they read (``chatsys all``, ``gateway --workers``). For them a
``subprocess.Popen`` with a deadline is the whole need; nothing here supervises a set of
processes.

Servers bind port 0 and report what they got through ``--ready-file`` (the protocol of
:mod:`chatsys.runtime.ready`, read here synchronously): :func:`running_reported`. No port is
picked by the test and bound by the child later."""

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

from chatsys.runtime import ready

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


def unused_port() -> int:
    """A loopback port nothing listens on right now, for a test that needs "nothing is there"
    on purpose (never to start a server on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=1.0).status_code == 200


@dataclass
class Proc:
    """A chatsys process started by a synchronous test; its output goes to a log file shown on
    failure."""

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
def running_reported(args: Sequence[str], *, timeout: float = 30.0, log_dir: Path | None = None,
                     env: dict[str, str] | None = None,
                     ready_check: Callable[[ready.Ports], bool] | None = None,
                     ) -> Iterator[tuple[Proc, ready.Ports]]:
    """Like :func:`running` for a chatsys server started with ``--port=0`` (and
    ``--metrics-port=0``): yields the ports it reports once listening. ``ready_check`` may add
    a condition on them (a gateway's ``/readyz``).

    The process's ``args`` are then rewritten with the ports it got, so a test that kills it
    and starts ``proc.args`` again gets it back on the same ports."""
    name = "-".join(a for a in args if not a.startswith("-"))[:40] or "proc"
    log_path = _log_path(log_dir, name)
    ready_path = log_path.with_suffix(".ready.json")
    found: list[ready.Ports] = []

    def reported() -> bool:
        if not found:
            ports = ready.read(ready_path)
            if ports is None:
                return False
            found.append(ports)
        return ready_check is None or ready_check(found[0])

    proc = Proc([*args, f"--ready-file={ready_path}"], log_path, dict(env or {}))
    with _running(proc, reported, timeout):
        ports = found[0]
        proc.args = [_with_port(a, ports) for a in proc.args]
        yield proc, ports


def _with_port(arg: str, ports: ready.Ports) -> str:
    if arg == "--port=0":
        return f"--port={ports.port}"
    if arg == "--metrics-port=0" and ports.metrics_port is not None:
        return f"--metrics-port={ports.metrics_port}"
    return arg


@contextlib.contextmanager
def running_command(command: Sequence[str], ready: Callable[[Proc], bool], *, name: str,
                    timeout: float = 30.0, log_dir: Path | None = None) -> Iterator[Proc]:
    """Like :func:`running` for a program that is not chatsys (a redis-server); ``ready`` is
    given the process, to tell it from another one answering on the same port."""
    proc = Proc(list(command), _log_path(log_dir, name), chatsys=False)
    with _running(proc, lambda: ready(proc), timeout):
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
