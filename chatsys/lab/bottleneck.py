"""The bottleneck rule: which module saturates first, decided from the run's own samples.

A chatsys process is a Python process: its work runs on one core at a time (the GIL), so a
process near one core is saturated whatever the machine has left. Latency is the other symptom:
a module can queue work without burning CPU (fsync, locks). The rule looks for *saturation
events* and names the module of the earliest one:

1. **CPU** — a process of the module uses at least ``cpu_threshold`` cores, averaged over
   ``smooth`` consecutive samples (one slow scrape is not saturation). Locust counts as a
   module too: a saturated load generator makes every latency it reports suspect.
2. **Latency** — A or B: the module's gRPC server p99 (all replicas, its own unary methods)
   stays at ``latency_threshold`` or more for ``smooth - 1`` consecutive windows. P: the
   gateway's ack p99 does, while the gateway's own gRPC calls to A (client-side p99, so A's
   queueing counts as A's) took under half of it: the time is spent in the gateway, not in A.
3. **Machine** — every core of the machine together is busy at ``machine_threshold`` or more,
   at least half of it by this run's processes: then no process gets more CPU, and the
   bottleneck is the largest consumer at that moment. (A machine kept busy by others is a
   noisy neighbour, reported as evidence, not a module's saturation.)

Ties at the same second go to CPU, then latency, then machine. With no event at all, nothing
saturated: the report names the module with the least CPU headroom and says that it did not
saturate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chatsys.lab.samples import LOAD_GENERATOR, MODULE_NAMES, MODULES
from chatsys.lab.series import Points, first_at_or_above, peak, rolling_mean, value_at

Window = tuple[float, float | None, float]  # end time, quantile (s) or None, observations
KIND_ORDER = {"cpu": 0, "latency": 1, "machine": 2}


@dataclass(frozen=True)
class Rule:
    """The thresholds of the rule; the report prints them next to its verdict."""

    cpu_threshold: float = 0.85
    machine_threshold: float = 0.9
    latency_threshold: float = 0.1
    smooth: int = 3


@dataclass(frozen=True)
class ModuleLoad:
    """The busiest process of one module and when (if ever) it crossed the CPU threshold."""

    module: str
    busiest: str
    replicas: int
    peak: float  # cores, smoothed
    saturated_at: float | None  # seconds since the start of the run


@dataclass(frozen=True)
class Event:
    kind: str  # cpu | latency | machine
    module: str
    at: float  # seconds since the start
    detail: str


@dataclass(frozen=True)
class Verdict:
    module: str
    saturated: bool
    summary: str
    events: list[Event]
    loads: list[ModuleLoad]


def module_loads(cpu: Mapping[str, Points], modules: Mapping[str, str], t0: float,
                 rule: Rule) -> list[ModuleLoad]:
    """Per module (P, A, B, Locust): its busiest process's smoothed CPU peak and crossing."""
    loads: list[ModuleLoad] = []
    for module in (*MODULES, LOAD_GENERATOR):
        targets = [t for t in cpu if modules.get(t) == module]
        if not targets:
            continue
        best: tuple[float, float, str] | None = None  # (crossing or inf, -peak, target)
        for target in targets:
            smooth = rolling_mean(cpu[target], rule.smooth)
            crossed = first_at_or_above(smooth, rule.cpu_threshold)
            key = (crossed if crossed is not None else float("inf"), -peak(smooth), target)
            best = key if best is None or key < best else best
        assert best is not None
        crossed_at, neg_peak, target = best
        loads.append(ModuleLoad(module, target, len(targets), -neg_peak,
                                None if crossed_at == float("inf") else crossed_at - t0))
    return loads


def _sustained(windows: Sequence[Window], limit: float, count: int,
               also: Mapping[float, float | None] | None = None) -> Window | None:
    """The first of ``count`` consecutive busy windows at or over ``limit`` (None if never).

    Windows without observations neither count nor break the run. ``also`` (window end → A's
    p99) additionally requires A to be under half of the window's quantile.
    """
    run: list[Window] = []
    for window in windows:
        end, q, _ = window
        if q is None:
            continue
        a_q = also.get(end) if also is not None else None
        if q >= limit and (also is None or a_q is None or a_q < q / 2):
            run.append(window)
            if len(run) >= count:
                return run[0]
        else:
            run = []
    return None


def latency_events(grpc_p99: Mapping[str, Sequence[Window]], ack_p99: Sequence[Window],
                   t0: float, rule: Rule,
                   a_from_gateway: Sequence[Window] = ()) -> list[Event]:
    """Where A's, B's or the gateway's own p99 stayed over the threshold for a while.

    "A while" is ``smooth - 1`` consecutive windows with calls (at least one): as with CPU,
    a single slow window on a shared machine is not saturation.
    """
    events: list[Event] = []
    limit, count = rule.latency_threshold, max(1, rule.smooth - 1)
    for module in ("A", "B"):
        hit = _sustained(grpc_p99.get(module, ()), limit, count)
        if hit is not None:
            end, q, calls = hit
            events.append(Event("latency", module, end - t0,
                                f"gRPC server p99 {(q or 0) * 1000:.0f} ms over {calls:.0f} "
                                "calls"))
    # A as the gateway sees it (its client-side call p99) includes A's queueing and the wire;
    # without it, A's own server p99 is the best estimate.
    a_seen = a_from_gateway or grpc_p99.get("A", ())
    a_windows = {end: q for end, q, _ in a_seen}
    hit = _sustained(ack_p99, limit, count, a_windows)
    if hit is not None:
        end, q, messages = hit
        a_q = a_windows.get(end)
        a_text = f"{a_q * 1000:.0f} ms" if a_q is not None else "no calls"
        events.append(Event("latency", "P", end - t0,
                            f"ack p99 {(q or 0) * 1000:.0f} ms over {messages:.0f} messages "
                            f"while its calls to A took {a_text} at p99"))
    return events


def machine_event(host: Points, cores: int, cpu: Mapping[str, Points],
                  modules: Mapping[str, str], t0: float, rule: Rule) -> Event | None:
    """When the whole machine was busy, and who used the most CPU at that moment."""
    if cores <= 0 or not host:
        return None
    for at, busy in rolling_mean(host, rule.smooth):
        if busy < rule.machine_threshold * cores:
            continue
        share: dict[str, float] = {}
        for target, points in cpu.items():
            module = modules.get(target)
            if module is not None:
                share[module] = share.get(module, 0.0) + (value_at(points, at) or 0.0)
        if share and sum(share.values()) >= busy / 2:
            break
    else:
        return None
    module = max(share, key=lambda m: share[m])
    parts = ", ".join(f"{m} {v:.2f}" for m, v in sorted(share.items(), key=lambda kv: -kv[1]))
    return Event("machine", module, at - t0,
                 f"all {cores} cores at least {rule.machine_threshold:.0%} busy; cores used: "
                 f"{parts}")


def decide(cpu: Mapping[str, Points], modules: Mapping[str, str], *, t0: float,
           host: Points = (), cores: int = 0,
           grpc_p99: Mapping[str, Sequence[Window]] | None = None,
           ack_p99: Sequence[Window] = (), a_from_gateway: Sequence[Window] = (),
           rule: Rule | None = None) -> Verdict:
    """Apply the rule (see the module docstring) to one run's series."""
    rule = rule or Rule()
    loads = module_loads(cpu, modules, t0, rule)
    events = [Event("cpu", load.module, load.saturated_at,
                    f"{load.busiest} reached {rule.cpu_threshold:.2f} cores "
                    f"(peak {load.peak:.2f})")
              for load in loads if load.saturated_at is not None]
    events += latency_events(grpc_p99 or {}, ack_p99, t0, rule, a_from_gateway)
    machine = machine_event(list(host), cores, cpu, modules, t0, rule)
    if machine is not None:
        events.append(machine)
    events.sort(key=lambda e: (e.at, KIND_ORDER[e.kind]))
    if events:
        first = events[0]
        what = {"cpu": "its busiest process ran out of CPU (one core)",
                "latency": "its own latency crossed "
                           f"{rule.latency_threshold * 1000:.0f} ms",
                "machine": "the machine ran out of CPU and it was the largest consumer"}
        summary = (f"**{MODULE_NAMES.get(first.module, first.module)}** saturates first: "
                   f"{what[first.kind]} {first.at:.0f} s into the run ({first.detail}).")
        return Verdict(first.module, True, summary, events, loads)
    if not loads:
        return Verdict("", False, "No CPU samples: the bottleneck cannot be named.", [], loads)
    nearest = max(loads, key=lambda load: load.peak)
    headroom = max(0.0, 1.0 - nearest.peak / rule.cpu_threshold)
    summary = (f"Nothing saturated. The nearest to saturation is "
               f"**{MODULE_NAMES.get(nearest.module, nearest.module)}**: its busiest process "
               f"({nearest.busiest}) peaked at {nearest.peak:.2f} cores, {headroom:.0%} below "
               f"the {rule.cpu_threshold:.2f}-core threshold; no latency crossed "
               f"{rule.latency_threshold * 1000:.0f} ms.")
    return Verdict(nearest.module, False, summary, [], loads)
