"""What the native driver plays, shared by its coordinator and workers: the user options of
``locustfiles/chat.py`` and the ramp of users over time.

The ramp is scenario A's step shape (``locustfiles/steps.py``): from each step to the next at
``spawn_rate`` users/s, then a hold; a plain ``--users N --spawn-rate R`` run is one step held
until ``run_time``. User ``i`` (numbered from 0 over the whole run) starts at
:meth:`Plan.start_of`; worker ``k`` of ``K`` owns users ``k, k+K, k+2K ...``, so the workers
together keep the global rate without talking to each other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Plan:
    """Increasing user counts, each reached at ``spawn_rate`` and held for ``hold`` seconds;
    the run ends after the last hold or at ``run_time``, whichever comes first."""

    steps: Sequence[int]
    spawn_rate: float
    hold: float
    run_time: float | None = None

    def __post_init__(self) -> None:
        steps = list(self.steps)
        if not steps or any(n <= 0 for n in steps) or steps != sorted(set(steps)):
            raise ValueError(f"steps must be increasing positive user counts, got {steps}")
        if self.spawn_rate <= 0 or self.hold < 0:
            raise ValueError("a plan needs a positive spawn rate and a hold of 0 or more")

    @classmethod
    def single(cls, users: int, spawn_rate: float, run_time: float) -> Plan:
        """Locust's ``-u users -r rate -t run_time``: ramp once, hold until the run time."""
        return cls((users,), spawn_rate, max(0.0, run_time - users / spawn_rate), run_time)

    @property
    def peak(self) -> int:
        return self.steps[-1]

    @property
    def duration(self) -> float:
        ramps = self.steps[-1] / self.spawn_rate
        total = ramps + self.hold * len(self.steps)
        return min(total, self.run_time) if self.run_time is not None else total

    def start_of(self, user: int) -> float:
        """Seconds after the run's start at which ``user`` (0-based) is spawned."""
        elapsed, previous = 0.0, 0
        for step in self.steps:
            if user < step:
                return elapsed + (user - previous) / self.spawn_rate
            elapsed += (step - previous) / self.spawn_rate + self.hold
            previous = step
        raise ValueError(f"user {user} is beyond the last step ({self.peak})")

    def owned(self, worker: int, workers: int) -> Iterator[tuple[int, float]]:
        """(user, start second) of every user of ``worker``, in start order, within the run."""
        for user in range(worker, self.peak, workers):
            start = self.start_of(user)
            if start >= self.duration:
                return
            yield user, start


@dataclass(frozen=True)
class UserOptions:
    """The ``--chat-*`` options of ``locustfiles/chat.py``, same names, same defaults."""

    rooms: int = 0
    room_size: int = 20
    room_prefix: str = "load"
    text_size: int = 100
    file_size: int = 10240
    wait_min: float = 1.0
    wait_max: float = 3.0
    deliver_sample: float = 0.01
    ack_timeout: float = 10.0
    connect_timeout: float = 10.0
    backoff_max: float = 30.0


def room_for(index: int, worker: int, options: UserOptions) -> str:
    """chat.py's rooms: round-robin over ``rooms``, or fill rooms of ``room_size`` in order."""
    if options.rooms > 0:
        return f"{options.room_prefix}-{(index + worker) % options.rooms}"
    return f"{options.room_prefix}-w{worker}-{index // max(1, options.room_size)}"


def source_addresses(hosts: Sequence[str], count: int) -> list[str]:
    """Loopback source addresses ``127.0.0.2 ...`` to bind before connecting, so that each gets
    its own ~28k ephemeral ports; none (the kernel chooses) when a host is not on loopback."""
    if count <= 0:
        return []
    for host in hosts:
        name = urlsplit(host).hostname or ""
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            if name != "localhost":
                return []
            continue
        if address.version != 4 or not address.is_loopback:
            return []
    if count > 250:
        raise ValueError("at most 250 loopback source addresses (127.0.0.2 to 127.0.0.251)")
    return [f"127.0.0.{2 + i}" for i in range(count)]


@dataclass(frozen=True)
class WorkerConfig:
    """Everything one worker process needs, passed as one JSON argument."""

    index: int
    workers: int
    hosts: list[str]
    plan: dict[str, Any]
    user: dict[str, Any]
    sources: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def parsed(self) -> tuple[Plan, UserOptions]:
        return Plan(**self.plan), UserOptions(**self.user)
