"""Running the native driver (``chatsys lab run ... --driver native``) where Locust would run.

:class:`DriverProcess` is a :class:`~chatsys.lab.locust_run.LocustProcess` with another command:
the same start, wait and stop (SIGINT, then SIGKILL of its session), the same output files
(``DIR/locust_*.csv``, ``DIR/locust.log``), so the runner, the progress line and the report do
not tell them apart. Its workers are children of the coordinator's pid, so the scraper counts
their CPU and memory as the load generator's.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from chatsys.lab.locust_csv import PREFIX
from chatsys.lab.locust_run import LocustProcess
from chatsys.lab.scenarios import Scenario, read_conf

CHAT_OPTIONS = ("chat-rooms", "chat-room-size", "chat-room-prefix", "chat-text-size",
                "chat-file-size", "chat-wait-min", "chat-wait-max", "chat-deliver-sample",
                "chat-ack-timeout", "chat-connect-timeout", "chat-backoff-max")


def command(scenario: Scenario, hosts: list[str], out: Path, workers: int = 0) -> list[str]:
    """The driver's command line for ``scenario`` against ``hosts`` (users spread over them),
    with the ``--chat-*`` options of the scenario's Locust config file."""
    args = [sys.executable, "-m", "chatsys.lab.driver", "--host", ",".join(hosts),
            "--csv", str(out / PREFIX), "--spawn-rate", f"{scenario.spawn_rate:g}"]
    if scenario.shaped:
        args += ["--steps", ",".join(map(str, scenario.steps)), "--hold", f"{scenario.hold:g}",
                 "--run-time", f"{math.ceil(scenario.run_time)}s"]
    else:
        args += ["--users", str(scenario.users), "--run-time", f"{math.ceil(scenario.run_time)}s"]
    if workers:
        args += ["--workers", str(workers)]
    conf = read_conf(scenario.conf)
    for option in CHAT_OPTIONS:
        if option in conf:
            args += [f"--{option}", conf[option]]
    return args


class DriverProcess(LocustProcess):
    """The native driver as the run's load generator."""

    def __init__(self, scenario: Scenario, hosts: list[str], out: Path, workers: int = 0) -> None:
        super().__init__(scenario, hosts, out)
        self.args, self.env = command(scenario, hosts, out, workers), {}
