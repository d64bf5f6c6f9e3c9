"""What each operation costs each module, fitted from a run's own time series.

The run is cut into windows (5 s by default). In every window each module's CPU (cores, summed
over its replicas: ``rate(process_cpu_seconds_total)``) and resident memory are set against the
operation rates the servers themselves counted in that window:

- ``connects``: joins per second (the gateway's ``chatsys_ws_connect_seconds_count``);
- ``texts``, ``uploads``: messages accepted per second (``chatsys_messages_total{kind}``; an
  upload is the POST plus its file message);
- ``deliveries``: frames queued to room members per second (``chatsys_fanout_deliveries_total``),
  the part of a message's cost that grows with the room's size;
- ``users``: connected users (``chatsys_ws_connections``), the idle cost of holding one.

Where the servers did not count (a run against an external system), Locust's own history stands
in. The model is linear: ``cpu = replicas · idle + Σ cost_k · rate_k``, fitted by non-negative
least squares (an exact search over the sets of non-zero coefficients: there are at most six),
memory likewise against replicas and connected users. A module is only charged for what it
does: B sees uploads only, A no per-member fan-out (it publishes once per room) and no idle user.

Every window of a run is fitted, saturated ones included: the rates are what the servers
*completed* in the window, so a window in which processes waited for cores still relates the
CPU they used to the work they did. Keeping only the windows before the first saturation left
a run like B (the machine saturated 26 s in, while users were still joining at a constant rate)
with a few ramp windows in which joins never varied: their cost fell into the others, and the
gateway's cost per text came out half as high again as its steady windows show.

The load generator is fitted apart, once per driver (``--driver locust|native``): it is not part
of the system, and the drivers differ about threefold in CPU per user, so a machine's saturation
point depends on which one drove the run.

A steady run moves texts, uploads, deliveries and users together, so one run cannot say which of
them costs what. Before fitting, an operation whose window series is (nearly) proportional to an
earlier one is *merged* into it: the earlier one's cost then includes the merged one at the ratio
the run had ("per text, incl. 19.8 deliveries"), and :class:`ModuleCosts` says so. Predictions at
the run's mix and room size stay right; at another mix or room size they need runs that vary it.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from chatsys.lab.analysis import RunData
from chatsys.lab.samples import LOAD_GENERATOR, MODULES
from chatsys.lab.series import value_at

OPERATIONS = ("connects", "texts", "uploads", "deliveries", "users")
UNITS = {"connects": "connect", "texts": "text", "uploads": "upload", "deliveries": "delivery",
         "users": "connected user·s"}
NOUNS = {**{op: op for op in OPERATIONS}, "users": "connected user·s"}
# What each module's CPU can depend on (see the module docstring). Locust does everything a user
# does, including reading every delivered frame.
CHARGED = {"P": OPERATIONS, "A": ("connects", "texts", "uploads"), "B": ("uploads",),
           LOAD_GENERATOR: OPERATIONS}
FITTED = (*MODULES, LOAD_GENERATOR)
DEFAULT_DRIVER = "locust"  # runs recorded before the lab had a driver option used Locust
COLLINEAR = 0.95  # |correlation| of two window series above which their costs are not separable
WINDOW = 5.0


@dataclass(frozen=True)
class Window:
    """One window of one run: operation rates and what each module used."""

    start: float
    end: float
    rates: dict[str, float]  # operation -> per second (users: connected, mean)
    cpu: dict[str, float]  # module -> cores, summed over its replicas
    rss: dict[str, float]  # module -> bytes, summed over its replicas
    replicas: dict[str, int]
    others: float | None  # cores the machine spent on processes outside the run
    driver: str = DEFAULT_DRIVER  # the load generator that drove the run


def _delta(points: Sequence[tuple[float, float]], t0: float, t1: float) -> float | None:
    a, b = value_at(points, t0), value_at(points, t1)
    if a is None or b is None or b < a:  # not sampled yet, or restarted in the window
        return None
    return b - a


def _counter_rate(data: RunData, name: str, module: str, t0: float, t1: float,
                  **match: str) -> float | None:
    total, seen = 0.0, False
    for target in data.samples.targets(module):
        for _, points in data.samples.find(name, target, **match):
            delta = _delta(points, t0, t1)
            if delta is None:
                return None
            total, seen = total + delta, True
    return total / (t1 - t0) if seen else None


def _mean_gauge(data: RunData, name: str, modules: Iterable[str], t0: float,
                t1: float) -> float | None:
    total, seen = 0.0, False
    for module in modules:
        for target in data.samples.targets(module):
            for _, points in data.samples.find(name, target):
                inside = [v for t, v in points if t0 < t <= t1]
                if inside:
                    total, seen = total + statistics.fmean(inside), True
    return total if seen else None


def _locust_rate(data: RunData, labels: Sequence[str], t0: float, t1: float) -> float:
    total = 0.0
    for label in labels:
        rows = [(r.t, float(r.total_requests)) for r in data.locust.history if r.label == label]
        total += _delta(rows, t0, t1) or 0.0
    return total / (t1 - t0)


def _rates(data: RunData, t0: float, t1: float) -> dict[str, float]:
    """Operation rates in one window: the gateway's counters, or Locust's where it has none."""
    connects = _counter_rate(data, "chatsys_ws_connect_seconds_count", "P", t0, t1)
    texts = _counter_rate(data, "chatsys_messages_total", "P", t0, t1, kind="text")
    uploads = _counter_rate(data, "chatsys_messages_total", "P", t0, t1, kind="file")
    deliveries = _counter_rate(data, "chatsys_fanout_deliveries_total", "P", t0, t1)
    users = _mean_gauge(data, "chatsys_ws_connections", ["P"], t0, t1)
    if connects is None:
        connects = _locust_rate(data, ["WS /ws/chat/connect", "WS /ws/chat/reconnect"], t0, t1)
    if texts is None:
        texts = _locust_rate(data, ["WS /ws/chat/send_text"], t0, t1)
    if uploads is None:
        uploads = _locust_rate(data, ["WS /ws/chat/send_file"], t0, t1)
    if users is None:
        rows = [(r.t, float(r.users)) for r in data.locust.aggregated()]
        users = value_at(rows, t1) or 0.0
    return {"connects": connects, "texts": texts, "uploads": uploads,
            "deliveries": deliveries or 0.0, "users": users}


def windows(data: RunData, width: float = WINDOW) -> list[Window]:
    """The run's load span cut into ``width``-second windows (a short remainder dropped)."""
    out: list[Window] = []
    count = int((data.t1 - data.t0) // width)
    for i in range(count):
        t0, t1 = data.t0 + i * width, data.t0 + (i + 1) * width
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        replicas: dict[str, int] = {}
        for module in FITTED:
            # A module not sampled over the whole window (Locust starts after the first
            # second) sits this window out; the others still count.
            used = _counter_rate(data, "process_cpu_seconds_total", module, t0, t1)
            if used is None:
                continue
            cpu[module] = used
            replicas[module] = len(data.samples.targets(module))
            rss[module] = _mean_gauge(data, "process_resident_memory_bytes", [module], t0,
                                      t1) or 0.0
        if not cpu:
            continue
        busy = next((p for _, p in data.samples.find("host_cpu_busy_seconds_total")), [])
        host = _delta(busy, t0, t1)
        others = None if host is None else max(0.0, host / width - sum(cpu.values()))
        out.append(Window(t0, t1, _rates(data, t0, t1), cpu, rss, replicas, others,
                          driver_of(data)))
    return out


def driver_of(data: RunData) -> str:
    return str(data.meta.get("driver") or DEFAULT_DRIVER)


@dataclass(frozen=True)
class Merge:
    """``merged`` moved with ``into`` in every window: its cost is inside ``into``'s."""

    merged: str
    into: str
    ratio: float  # merged per unit of ``into`` in the run(s)
    correlation: float


@dataclass
class ModuleCosts:
    """One module's fitted costs (CPU seconds per operation, bytes per connected user)."""

    module: str
    idle: float  # cores per replica with no load
    cpu: dict[str, float]  # operation -> CPU seconds per unit (per user-second for users)
    merges: list[Merge]
    unfitted: list[str]  # did not vary, or moved against another: no cost could be fitted
    r2: float | None
    rmse: float  # cores
    windows: int
    memory_base: float  # bytes per replica
    memory_per_user: float  # bytes per connected user
    memory_r2: float | None

    def per_user(self, rates: Mapping[str, float]) -> float:
        """Cores one module needs for ``rates`` (per second; users = connected), idle excluded."""
        return sum(self.cpu.get(op, 0.0) * rates.get(op, 0.0) for op in OPERATIONS)

    def describe(self, op: str) -> str:
        """How ``op``'s cost is to be read: what merged into it, or why it is missing."""
        parts = [f"incl. {m.ratio:.3g} {NOUNS[m.merged]} per {UNITS[op]}" for m in self.merges
                 if m.into == op]
        into = next((m.into for m in self.merges if m.merged == op), None)
        if into is not None:
            return f"inside {into}"
        if op in self.unfitted:
            return "not separable in these runs: not fitted"
        return "; ".join(parts)


@dataclass
class CostModel:
    modules: dict[str, ModuleCosts]
    windows: list[Window]
    width: float
    others: float  # median cores used by processes outside the run(s)
    # The load generator's costs per driver (``locust``, ``native``): not the system's, but it
    # shares the machine in every run here.
    generators: dict[str, ModuleCosts] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def per_user_rates(self) -> dict[str, float]:
        """Each operation per connected user per second, as the runs had them (steady windows:
        no joins in the window and at least half the peak users)."""
        peak_users = max((w.rates["users"] for w in self.windows), default=0.0)
        steady = [w for w in self.windows
                  if w.rates["users"] >= peak_users / 2 and w.rates["connects"] == 0]
        steady = steady or [w for w in self.windows if w.rates["users"] > 0]
        users = sum(w.rates["users"] for w in steady)
        if not users:
            return dict.fromkeys(OPERATIONS, 0.0)
        out = {op: sum(w.rates[op] for w in steady) / users for op in OPERATIONS}
        out["users"], out["connects"] = 1.0, 0.0
        return out


def nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """min ‖x·b − y‖ subject to b ≥ 0, exactly, by trying every set of non-zero coefficients.

    With at most six columns that is 63 least-squares solves, and the answer is the true
    optimum (no iteration limit, no tolerance to tune).
    """
    columns = x.shape[1]
    best, best_error = np.zeros(columns), float(np.sum(y * y))
    for size in range(1, columns + 1):
        for chosen in itertools.combinations(range(columns), size):
            sub = x[:, chosen]
            coef, *_ = np.linalg.lstsq(sub, y, rcond=None)
            if np.any(coef < 0):
                continue
            error = float(np.sum((sub @ coef - y) ** 2))
            if error < best_error - 1e-15:
                full = np.zeros(columns)
                full[list(chosen)] = coef
                best, best_error = full, error
    return best


def _correlation(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) < 3 or statistics.pstdev(a) == 0 or statistics.pstdev(b) == 0:
        return 0.0
    return statistics.correlation(a, b)


def separable(columns: Mapping[str, Sequence[float]], order: Sequence[str],
              limit: float = COLLINEAR) -> tuple[list[str], list[Merge], list[str]]:
    """Which operations can be fitted apart: (kept, merges, not fitted).

    An operation that never changed cannot be told from the idle cost. One whose series
    correlates with an earlier kept one at ``limit`` or more is merged into it, at the ratio of
    their totals; one that moves exactly against an earlier one has no ratio to merge at and is
    not fitted either (its cost lands in the others and the idle cost).
    """
    kept: list[str] = []
    merges: list[Merge] = []
    unfitted: list[str] = []
    for op in order:
        values = columns[op]
        if len(values) < 2 or max(values) - min(values) <= 1e-9 * max(1.0, max(values)):
            unfitted.append(op)
            continue
        partner = next(((k, r) for k in kept
                        if abs(r := _correlation(columns[k], values)) >= limit), None)
        if partner is None:
            kept.append(op)
            continue
        into, r = partner
        if r < 0:  # one rises as the other falls (joins during a ramp, none after): no ratio
            unfitted.append(op)
            continue
        ratio = sum(values) / sum(columns[into]) if sum(columns[into]) else 0.0
        merges.append(Merge(op, into, ratio, r))
    return kept, merges, unfitted


def _r2(x: np.ndarray, y: np.ndarray, coef: np.ndarray) -> tuple[float | None, float]:
    residual = y - x @ coef
    rmse = float(np.sqrt(np.mean(residual ** 2))) if len(y) else 0.0
    spread = float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    return (1.0 - float(np.sum(residual ** 2)) / spread if spread > 0 else None), rmse


def fit_module(module: str, rows: Sequence[Window],
               charged: Sequence[str] | None = None) -> ModuleCosts | None:
    """The module's costs from ``rows`` (windows of one or several runs); None if absent."""
    rows = [w for w in rows if module in w.cpu]
    if not rows:
        return None
    charged = list(charged if charged is not None else CHARGED.get(module, OPERATIONS))
    columns = {op: [w.rates[op] for w in rows] for op in charged}
    kept, merges, unfitted = separable(columns, charged)
    replicas = np.array([float(w.replicas[module]) for w in rows])
    x = np.column_stack([replicas, *[np.array(columns[op]) for op in kept]])
    y = np.array([w.cpu[module] for w in rows])
    coef = nnls(x, y)
    r2, rmse = _r2(x, y, coef)
    cpu = {op: float(c) for op, c in zip(kept, coef[1:], strict=True)}
    users = np.array([w.rates["users"] for w in rows])
    xm = np.column_stack([replicas, users])
    ym = np.array([w.rss[module] for w in rows])
    mem = nnls(xm, ym)
    mem_r2, _ = _r2(xm, ym, mem)
    return ModuleCosts(module, float(coef[0]), cpu, merges, unfitted, r2, rmse, len(rows),
                       float(mem[0]), float(mem[1]), mem_r2)


def fit(runs: Sequence[RunData], width: float = WINDOW,
        generator_runs: Sequence[RunData] = ()) -> CostModel:
    """P, A and B's costs from every window of ``runs``; the load generator's, per driver, from
    those and ``generator_runs`` (runs that only say what a driver costs: a prediction from B,
    driven by Locust, of a run driven by the native driver takes that driver's cost from its
    other runs)."""
    return fit_windows([w for data in runs for w in windows(data, width)], width,
                       [w for data in generator_runs for w in windows(data, width)])


def fit_windows(rows: Sequence[Window], width: float = WINDOW,
                generator_rows: Sequence[Window] = ()) -> CostModel:
    """:func:`fit` over windows already cut."""
    modules = {m: c for m in MODULES if (c := fit_module(m, rows)) is not None}
    driven = [*rows, *generator_rows]
    generators = {d: c for d in sorted({w.driver for w in driven})
                  if (c := fit_module(LOAD_GENERATOR, [w for w in driven if w.driver == d]))
                  is not None}
    others = [w.others for w in rows if w.others is not None]
    notes = []
    if len(rows) < 8:
        notes.append(f"only {len(rows)} windows of {width:g} s: costs are rough")
    return CostModel(modules, list(rows), width, statistics.median(others) if others else 0.0,
                     generators, notes)


def cores_at(costs: ModuleCosts, rates: Mapping[str, float], replicas: int = 1) -> float:
    """Cores the module uses at ``rates`` on ``replicas`` replicas (idle included)."""
    return replicas * costs.idle + costs.per_user(rates)


def scaled_rates(per_user: Mapping[str, float], users: float,
                 connects: float = 0.0) -> dict[str, float]:
    out = {op: per_user.get(op, 0.0) * users for op in OPERATIONS}
    out["users"], out["connects"] = users, connects
    return out


def hosts_in(runs: Sequence[RunData]) -> int:
    """The machine's core count in the runs (0 when not sampled)."""
    return max((d.cores for d in runs), default=0)
