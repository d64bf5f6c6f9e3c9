"""Running real Locust, headless, as a child process, and reading its progress as it goes.

Locust runs in its own session (it monkey-patches with gevent, and a terminal's Ctrl-C must reach
only the lab). It writes ``DIR/locust_*.csv`` with full per-second history; the lab reads the
last ``Aggregated`` history row for the progress line. To stop early it gets SIGINT — Locust
then stops its users, writes its final CSVs and HTML — and SIGKILL if it overstays.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from chatsys.lab.locust_csv import PREFIX, HistoryRow, read_history
from chatsys.lab.scenarios import LOCUSTFILES, Scenario
from chatsys.runtime.children import spawn

SPREAD = Path(__file__).resolve().parent / "locust_spread.py"
STOP_GRACE = 20.0


def command(scenario: Scenario, hosts: list[str], out: Path,
            processes: int = 1) -> tuple[list[str], dict[str, str]]:
    """The Locust command line and extra environment for ``scenario`` against ``hosts``."""
    env: dict[str, str] = {}
    if len(hosts) > 1:
        locustfile = SPREAD
        env = {"CHATSYS_LAB_HOSTS": ",".join(hosts), "CHATSYS_LAB_LOCUSTFILES": str(LOCUSTFILES)}
        if scenario.shaped:
            env["CHATSYS_LAB_SHAPE"] = "stress"
    else:
        locustfile = LOCUSTFILES / ("stress.py" if scenario.shaped else "chat.py")
    args = [sys.executable, "-m", "locust", *scenario.locust_args(), "-f", str(locustfile),
            "--host", hosts[0], "--csv", str(out / PREFIX), "--csv-full-history",
            "--html", str(out / "locust.html"), "--only-summary", "--loglevel", "WARNING"]
    if processes > 1:
        args += ["--processes", str(processes)]
    return args, env


@dataclass
class Progress:
    """What the progress line shows: the latest second Locust wrote."""

    users: int = 0
    rps: float = 0.0
    fps: float = 0.0
    requests: int = 0
    failures: int = 0

    @classmethod
    def read(cls, out: Path) -> Progress:
        rows: list[HistoryRow] = [r for r in read_history(out / f"{PREFIX}_stats_history.csv")
                                  if r.name == "Aggregated"]
        if not rows:
            return cls()
        last = rows[-1]
        return cls(last.users, last.rps, last.fps, last.total_requests, last.total_failures)


class LocustProcess:
    """One headless Locust run; :meth:`stop` is safe to call at any time, more than once."""

    def __init__(self, scenario: Scenario, hosts: list[str], out: Path,
                 processes: int = 1) -> None:
        self.out = out
        self.args, self.env = command(scenario, hosts, out, processes)
        self.proc: anyio.abc.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.proc = await spawn(self.args, log_path=self.out / "locust.log",
                                cwd=LOCUSTFILES.parent, env={**os.environ, **self.env})

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self) -> int | None:
        """SIGINT (Locust writes its results), SIGKILL of its session after a grace period."""
        if self.proc is None:
            return None
        with anyio.CancelScope(shield=True):
            if self.proc.returncode is None:
                with suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGINT)
                with anyio.move_on_after(STOP_GRACE):
                    await self.proc.wait()
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            if self.proc.returncode is None:
                await self.proc.wait()
        return self.proc.returncode
