"""The stepped stress schedule of scenario A, as pure functions (no Locust import, unit-tested).

A schedule is a list of user counts. Each step ramps from the previous count at ``spawn_rate``
users/s, then holds for ``hold`` seconds; after the last hold the test ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SEED_STEPS = (100, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)


def parse_steps(text: str = "", *, start: int = 100, stop: int = 100_000,
                step: int = 0) -> tuple[int, ...]:
    """``"100,500,1000"`` as given; else ``start, start+step, ... stop`` when ``step`` > 0;
    else the seed's steps between ``start`` and ``stop``."""
    if text.strip():
        steps = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    elif step > 0:
        steps = (*range(start, stop, step), stop)
    else:
        steps = tuple(n for n in SEED_STEPS if start <= n <= stop) or (start, stop)
    if not steps or any(n <= 0 for n in steps) or list(steps) != sorted(set(steps)):
        raise ValueError(f"steps must be increasing positive user counts, got {steps}")
    return steps


@dataclass(frozen=True)
class StepSchedule:
    steps: Sequence[int]
    hold: float = 120.0
    spawn_rate: float = 50.0

    def __post_init__(self) -> None:
        if self.hold <= 0 or self.spawn_rate <= 0 or not self.steps:
            raise ValueError("a schedule needs steps, a positive hold and a positive spawn rate")

    def boundaries(self) -> list[tuple[float, int]]:
        """(end time in seconds, users) of every step: its ramp plus its hold."""
        out: list[tuple[float, int]] = []
        end, previous = 0.0, 0
        for users in self.steps:
            end += abs(users - previous) / self.spawn_rate + self.hold
            out.append((end, users))
            previous = users
        return out

    @property
    def duration(self) -> float:
        return self.boundaries()[-1][0]

    def tick(self, run_time: float) -> tuple[int, float] | None:
        """Users and spawn rate Locust should aim at ``run_time`` seconds in; None to stop."""
        for end, users in self.boundaries():
            if run_time < end:
                return users, self.spawn_rate
        return None
