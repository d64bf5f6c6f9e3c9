"""Scenario A: a stepped stress test, 100 → 100,000 chat users, holding at each step.

    locust --config locustfiles/stress.conf --host http://HOST:PORT

Steps, hold and spawn rate are options (or LOCUST_STRESS_* environment variables); the user
options of ``chat.py`` apply too. The run ends after the last step's hold.
"""

from __future__ import annotations

from typing import Any

from chat import ChatUser  # the user class this shape drives
from locust import LoadTestShape, events
from steps import StepSchedule, parse_steps

__all__ = ["ChatUser", "StressShape"]


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    add = parser.add_argument
    add("--stress-steps", default="", env_var="LOCUST_STRESS_STEPS",
        help="comma list of user counts (default: the seed's 100,500,...,100000)")
    add("--stress-start", type=int, default=100, env_var="LOCUST_STRESS_START",
        help="first step when --stress-steps is empty (default 100)")
    add("--stress-stop", type=int, default=100_000, env_var="LOCUST_STRESS_STOP",
        help="last step when --stress-steps is empty (default 100000)")
    add("--stress-step", type=int, default=0, env_var="LOCUST_STRESS_STEP",
        help="linear step size from start to stop (0: the seed's steps)")
    add("--stress-hold", type=float, default=120.0, env_var="LOCUST_STRESS_HOLD",
        help="seconds to hold each step once ramped (default 120)")
    add("--stress-spawn-rate", type=float, default=50.0, env_var="LOCUST_STRESS_SPAWN_RATE",
        help="users started per second while ramping (default 50)")


class StressShape(LoadTestShape):
    """Ramps to each step at the spawn rate, holds, and stops after the last step."""

    schedule: StepSchedule | None = None

    def tick(self) -> tuple[int, float] | None:
        if self.schedule is None:
            options = self.runner.environment.parsed_options
            steps = parse_steps(options.stress_steps, start=options.stress_start,
                                stop=options.stress_stop, step=options.stress_step)
            self.schedule = StepSchedule(steps, options.stress_hold, options.stress_spawn_rate)
        return self.schedule.tick(self.get_run_time())
