"""The seed's scenarios by name, read from the Locust config files that ship with the project.

``stress`` (A), ``baseline`` (B), ``hpa`` and ``scaled`` (C) map to ``locustfiles/*.conf``: the
lab passes the file to Locust with ``--config`` and overrides only what the user asked for, so
the scenario a lab run plays is the one ``docs/load-testing.md`` documents. ``hpa`` starts two
gateways (the HPA's minReplicas) on one port with one A and one B, and a local HPA
(:mod:`chatsys.lab.elastic`) scales them while the load runs; ``scaled`` runs two A and two B
replicas behind one gateway.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

LOCUSTFILES = Path(__file__).resolve().parents[2] / "locustfiles"


class ScenarioError(ValueError):
    """An unknown scenario or an override it cannot take."""


@dataclass(frozen=True)
class Scenario:
    """What a run plays: the Locust config and the local topology it defaults to."""

    name: str
    seed: str
    conf: Path
    users: int
    spawn_rate: float
    run_time: float
    gateways: int = 1
    a_replicas: int = 1
    b_replicas: int = 1
    shaped: bool = False  # the load shape of stress.py sets users over time
    steps: tuple[int, ...] = field(default=())
    elastic: bool = False  # the local HPA scales the gateways (unless --hpa-metric off)

    def with_overrides(self, *, users: int | None = None, spawn_rate: float | None = None,
                       run_time: float | None = None) -> Scenario:
        """The scenario with the user's ``--users/--spawn-rate/--run-time``.

        For the stepped stress test, ``--users`` is the last step (four equal steps up to it)
        and ``--run-time`` is shared out as ramps plus equal holds.
        """
        changed = replace(self, users=users or self.users,
                          spawn_rate=spawn_rate or self.spawn_rate,
                          run_time=run_time or self.run_time)
        if self.shaped and users:
            changed = replace(changed, steps=tuple(sorted({max(1, users * i // 4)
                                                           for i in range(1, 5)})))
        return changed

    @property
    def hold(self) -> float:
        """Seconds each stress step holds so that ramps plus holds fill ``run_time``."""
        ramp = sum(abs(b - a) for a, b in zip((0, *self.steps), self.steps, strict=False))
        spare = self.run_time - ramp / self.spawn_rate
        return max(1.0, spare / max(1, len(self.steps)))

    def locust_args(self) -> list[str]:
        """Locust flags for this scenario (``--config`` first, so every later flag wins)."""
        args = ["--config", str(self.conf), "--headless", "--stop-timeout", "5"]
        if self.shaped:
            args += ["--stress-steps", ",".join(map(str, self.steps)),
                     "--stress-spawn-rate", f"{self.spawn_rate:g}",
                     "--stress-hold", f"{self.hold:g}",
                     "--run-time", f"{math.ceil(self.run_time) + 5}s"]
        else:
            args += ["--users", str(self.users), "--spawn-rate", f"{self.spawn_rate:g}",
                     "--run-time", f"{math.ceil(self.run_time)}s"]
        return args


def read_conf(path: Path) -> dict[str, str]:
    """``key = value`` lines of a Locust config file (comments and blanks skipped)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def parse_duration(text: str) -> float:
    """Locust's ``1h30m``, ``10m``, ``20s`` or plain seconds, in seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?", text)
    if not parts or not any(parts.groups()):
        raise ScenarioError(f"not a duration: {text!r} (e.g. 20s, 10m, 1h30m)")
    hours, minutes, seconds = (int(g or 0) for g in parts.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def _from_conf(name: str, seed: str, conf_name: str, **topology: Any) -> Scenario:
    conf = LOCUSTFILES / conf_name
    values = read_conf(conf)
    if "stress" in values.get("locustfile", ""):
        from_steps = values.get("stress-steps", "")
        steps = tuple(int(s) for s in from_steps.split(",") if s) or (
            100, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
        rate = float(values.get("stress-spawn-rate", "50"))
        hold = float(values.get("stress-hold", "120"))
        run_time = steps[-1] / rate + hold * len(steps)
        return Scenario(name, seed, conf, steps[-1], rate, run_time, shaped=True, steps=steps,
                        **topology)
    return Scenario(name, seed, conf, int(values.get("users", "100")),
                    float(values.get("spawn-rate", "10")),
                    parse_duration(values.get("run-time", "60s")), **topology)


def scenario(name: str) -> Scenario:
    builders = {
        "stress": lambda: _from_conf("stress", "A: stepped stress to find the saturation point",
                                     "stress.conf"),
        "baseline": lambda: _from_conf("baseline", "B: baseline, one replica each",
                                       "baseline.conf"),
        "hpa": lambda: _from_conf("hpa", "C: the baseline with the gateway scaled out (HPA)",
                                  "scaled.conf", gateways=2, elastic=True),
        "scaled": lambda: _from_conf("scaled", "C: the baseline with more replicas of A and B",
                                     "scaled.conf", a_replicas=2, b_replicas=2),
    }
    if name not in builders:
        raise ScenarioError(f"unknown scenario {name!r}: choose {', '.join(builders)}")
    return builders[name]()


NAMES = ("stress", "baseline", "hpa", "scaled")
