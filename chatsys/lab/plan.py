"""From fitted costs to a cluster plan, and the plan's check against a stepped run on this box.

``plan`` answers "for N users at this mix, how many replicas of P, A and B": each module's load
(``Σ cost_k · rate_k``) divided by what one pod may use at the target utilisation, less the
pod's idle cost. One chatsys process uses one core at a time (the GIL): A and B pods use at most
one core whatever they are given; a gateway pod can use all of its cores (``--workers``).

``validate`` predicts where a stepped run on this machine saturates — the first process at the
rule's CPU threshold, or the machine's cores, shared by every process, the load generator and
the neighbours, at the rule's machine threshold — and compares it with where the lab's rule saw
it saturate (:mod:`chatsys.lab.bottleneck`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from chatsys.lab.analysis import RunData
from chatsys.lab.bottleneck import Rule
from chatsys.lab.costs import (
    OPERATIONS,
    WINDOW,
    CostModel,
    ModuleCosts,
    driver_of,
    fit_module,
    scaled_rates,
    windows,
)
from chatsys.lab.samples import LOAD_GENERATOR, MODULES

# The Locust ChatUser's defaults (locustfiles/chat.py: @task weights, --chat-room-size,
# --chat-wait-min/max); tests/lab/test_plan.py checks they still match the locustfile.
DEFAULT_MIX = {"text": 8.0, "upload": 2.0}
DEFAULT_ROOM_SIZE = 20
DEFAULT_THINK = (1.0 + 3.0) / 2
KUSTOMIZE_NAMES = {"P": "chatsys-gateway", "A": "chatsys-chat", "B": "chatsys-files"}
BASE_REPLICAS = {"P": 1, "A": 1, "B": 1}  # kustomize/base
BASE_MEMORY_LIMIT_MIB = {"P": 1536, "A": 1024, "B": 512}  # kustomize/base, raised when too low


class PlanError(ValueError):
    """The runs cannot answer the question asked (a module never measured, a pod too small)."""


@dataclass(frozen=True)
class Load:
    """What N users do, per second, as the ChatUser does it."""

    users: int
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    room_size: int = DEFAULT_ROOM_SIZE
    think: float = DEFAULT_THINK  # mean seconds between one user's tasks
    join_rate: float = 0.0  # joins per second on top of the steady state

    def per_user(self) -> dict[str, float]:
        """Operations per connected user per second (a delivery per member, sender included)."""
        total = sum(self.mix.values())
        texts = self.mix.get("text", 0.0) / total / self.think
        uploads = self.mix.get("upload", 0.0) / total / self.think
        return {"connects": 0.0, "texts": texts, "uploads": uploads,
                "deliveries": (texts + uploads) * self.room_size, "users": 1.0}

    def rates(self) -> dict[str, float]:
        return scaled_rates(self.per_user(), self.users, self.join_rate)


@dataclass(frozen=True)
class Cluster:
    cores_per_pod: float = 1.0
    target_utilization: float = 0.6

    def usable(self, module: str) -> float:
        """Cores one pod of ``module`` can use: one Python process is one core (the GIL)."""
        return self.cores_per_pod if module == "P" else min(1.0, self.cores_per_pod)


@dataclass(frozen=True)
class ModulePlan:
    module: str
    load_cores: float  # for the users, idle excluded
    cores: float  # total on the planned replicas, idle included
    memory: float  # bytes, all replicas
    replicas: int
    memory_per_pod: float
    saturates_at: float  # users at which the planned replicas reach 100 % of their cores
    base_saturates_at: float  # the same on kustomize/base's replicas


@dataclass(frozen=True)
class Plan:
    load: Load
    cluster: Cluster
    modules: list[ModulePlan]
    first: ModulePlan  # saturates first on the planned replicas
    base_first: ModulePlan  # ... on the base's replicas
    hpa_min: int
    hpa_max: int
    peak_factor: float
    warnings: list[str]


def users_at_limit(costs: ModuleCosts, per_user: Mapping[str, float], replicas: int,
                   cores_each: float, join_rate: float = 0.0) -> float:
    """Users at which ``replicas`` pods of ``cores_each`` cores are all busy (inf: never), while
    ``join_rate`` users a second join them."""
    per = costs.per_user({**per_user, "connects": 0.0})
    room = replicas * (cores_each - costs.idle) - costs.cpu.get("connects", 0.0) * join_rate
    if room <= 0:
        return 0.0
    return room / per if per > 0 else math.inf


def mix_warnings(model: CostModel, load: Load) -> list[str]:
    """Where the plan asks for a mix the runs' merged costs were not measured at."""
    measured = model.per_user_rates()
    wanted = load.per_user()
    out: list[str] = []
    for costs in model.modules.values():
        if costs.module not in MODULES:
            continue
        for merge in costs.merges:
            base = wanted.get(merge.into, 0.0)
            have = wanted.get(merge.merged, 0.0) / base if base else 0.0
            if merge.ratio and abs(have / merge.ratio - 1) > 0.1:
                out.append(f"{costs.module}: the runs moved {merge.merged} with {merge.into} "
                           f"({merge.ratio:.3g} per {merge.into[:-1]}); this plan has "
                           f"{have:.3g}: that part of the prediction assumes the run's ratio")
        for op in costs.unfitted:
            if wanted.get(op) and costs.module in MODULES and op != "connects":
                out.append(f"{costs.module}: {op} did not vary apart from the rest: its cost is "
                           "not in the model")
    texts = measured.get("texts", 0.0)
    if texts and abs(wanted["texts"] / texts - 1) > 0.2:
        out.append(f"the runs' users sent {texts:.3g} texts/s each, this plan "
                   f"{wanted['texts']:.3g}: outside the measured range")
    return sorted(set(out))


def plan(model: CostModel, load: Load, cluster: Cluster = Cluster(),
         peak_factor: float = 2.0) -> Plan:
    """Replicas of P, A and B for ``load``, and where that cluster saturates."""
    missing = [m for m in MODULES if m not in model.modules]
    if missing:
        raise PlanError(f"the runs have no CPU samples of {', '.join(missing)}")
    rates, per_user = load.rates(), load.per_user()
    modules: list[ModulePlan] = []
    replicas_at_peak = 1
    for module in MODULES:
        costs = model.modules[module]
        usable = cluster.usable(module)
        capacity = cluster.target_utilization * usable - costs.idle
        if capacity <= 0:
            raise PlanError(f"{module} idles at {costs.idle:.2f} cores, more than "
                            f"{cluster.target_utilization:.0%} of a {usable:g}-core pod")
        load_cores = costs.per_user(rates)
        replicas = max(1, math.ceil(load_cores / capacity))
        if module == "P":
            peak = costs.per_user(scaled_rates(per_user, load.users * peak_factor))
            replicas_at_peak = max(1, math.ceil(peak / capacity))
        memory = replicas * costs.memory_base + costs.memory_per_user * load.users
        modules.append(ModulePlan(
            module, load_cores, replicas * costs.idle + load_cores, memory, replicas,
            memory / replicas, users_at_limit(costs, per_user, replicas, usable),
            users_at_limit(costs, per_user, BASE_REPLICAS[module], usable)))
    first = min(modules, key=lambda p: p.saturates_at)
    base_first = min(modules, key=lambda p: p.base_saturates_at)
    p_replicas = modules[0].replicas
    hpa_min = max(2, p_replicas)  # two, so that one pod's restart never drops every user
    return Plan(load, cluster, modules, first, base_first, hpa_min,
                max(hpa_min, replicas_at_peak), peak_factor, mix_warnings(model, load))


def kustomize_snippet(result: Plan) -> str:
    """A kustomization over ``kustomize/overlays/hpa`` with the plan's replicas and requests."""
    by = {p.module: p for p in result.modules}
    mib = {m: max(64, 64 * math.ceil(p.memory_per_pod * 1.25 / 2**20 / 64)) for m, p in by.items()}
    base = "../kustomize/overlays/scaled" if by["A"].replicas > 1 or by["B"].replicas > 1 \
        else "../kustomize/overlays/hpa"
    cpu = f"{result.cluster.cores_per_pod * 1000:.0f}m"
    lines = [
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "namespace: chatsys",
        "resources:",
        f"  - {base}",
        "replicas:  # P is the HPA's: no count here",
        f"  - name: {KUSTOMIZE_NAMES['A']}",
        f"    count: {by['A'].replicas}",
        f"  - name: {KUSTOMIZE_NAMES['B']}",
        f"    count: {by['B'].replicas}",
        "patches:",
        "  - target: {kind: HorizontalPodAutoscaler, name: chatsys-gateway}",
        "    patch: |-",
        "      - {op: replace, path: /spec/minReplicas, value: " + str(result.hpa_min) + "}",
        "      - {op: replace, path: /spec/maxReplicas, value: " + str(result.hpa_max) + "}",
        "      - op: replace",
        "        path: /spec/metrics/0/resource/target/averageUtilization",
        f"        value: {result.cluster.target_utilization * 100:.0f}",
    ]
    for module in MODULES:
        lines += [
            f"  - target: {{kind: Deployment, name: {KUSTOMIZE_NAMES[module]}}}",
            "    patch: |-",
            "      - op: replace",
            "        path: /spec/template/spec/containers/0/resources/requests",
            f"        value: {{cpu: {cpu}, memory: {mib[module]}Mi}}",
        ]
        if 2 * mib[module] > BASE_MEMORY_LIMIT_MIB[module]:
            lines += ["      - op: replace",
                      "        path: /spec/template/spec/containers/0/resources/limits/memory",
                      f"        value: {2 * mib[module]}Mi"]
    return "\n".join(lines)


# --- validation on this machine ----------------------------------------------------------------

@dataclass(frozen=True)
class Saturation:
    users: float
    module: str
    kind: str  # "cpu": one process at the rule's threshold; "machine": every core


def box_saturation(model: CostModel, per_user: Mapping[str, float], cores: int,
                   rule: Rule | None = None, others: float | None = None, *,
                   generator: ModuleCosts | None = None, join_rate: float = 0.0) -> Saturation:
    """Where one process of each module and the load generator (``generator``: none when the
    machine's load comes from elsewhere) share ``cores`` with neighbours using ``others``
    cores, while ``join_rate`` users a second join: the users at which the lab's rule would
    first fire."""
    rule = rule or Rule()
    others = model.others if others is None else others
    fitted = [*(model.modules[m] for m in MODULES if m in model.modules),
              *([generator] if generator is not None else [])]
    best = Saturation(math.inf, "", "cpu")
    for costs in fitted:
        users = users_at_limit(costs, per_user, 1, rule.cpu_threshold, join_rate)
        if users < best.users:
            best = Saturation(users, costs.module, "cpu")
    if cores > 0:
        fixed = sum(c.idle + c.cpu.get("connects", 0.0) * join_rate for c in fitted)
        slope = sum(c.per_user({**per_user, "connects": 0.0}) for c in fitted)
        # The rule counts the machine as saturated only while this run's processes use at
        # least half of the busy cores, i.e. at least as much as the neighbours.
        ours = max(rule.machine_threshold * cores - others, others)
        users = (ours - fixed) / slope if slope > 0 else math.inf
        if users < best.users:
            at = scaled_rates(per_user, max(users, 0.0), join_rate)
            largest = max(fitted, key=lambda c: c.idle + c.per_user(at))
            best = Saturation(max(users, 0.0), largest.module, "machine")
    return best


@dataclass(frozen=True)
class Validation:
    predicted: Saturation
    predicted_step: int | None
    actual_users: float | None
    actual_module: str | None
    actual_kind: str | None
    actual_step: int | None
    error: float | None  # (predicted - actual) / actual
    driver: str  # the stepped run's load generator
    generator_from: str  # where its cost came from
    join_rate: float  # users a second joining while the stepped run climbed
    others_predictor: float
    others_actual: float | None  # neighbours' cores in the stepped run before it saturated
    with_actual_others: Saturation | None  # the prediction had the neighbours been known
    verdict: str  # the stepped run's own bottleneck summary


def _step_of(steps: Sequence[int], users: float) -> int | None:
    return next((s for s in sorted(steps) if s >= users - 1e-9), None)


def validate(model: CostModel, stepped: RunData, rule: Rule | None = None,
             width: float = WINDOW, steps: Sequence[int] | None = None) -> Validation:
    """The prediction of ``model`` (from other runs) against where ``stepped`` saturated.

    The stepped run climbs while users join at its spawn rate, so the prediction charges those
    joins. Its load generator is taken from the model's runs of the same driver; failing any,
    from the stepped run itself (it is not the system under test, only a neighbour whose size
    depends on the driver). The neighbours the stepped run measured before saturating give a
    second prediction, to show how much of the error they explain.
    """
    rule = rule or Rule()
    per_user = model.per_user_rates()
    cores = stepped.cores or 0
    driver = driver_of(stepped)
    own = windows(stepped, width)
    generator = model.generators.get(driver)
    generator_from = f"the fitted runs driven by {driver}"
    if generator is None:
        generator = fit_module(LOAD_GENERATOR, own)
        generator_from = (f"the stepped run itself (no fitted run was driven by {driver})"
                          if generator is not None else "nowhere: left out")
    join_rate = float(stepped.meta.get("spawn_rate") or 0.0)
    predicted = box_saturation(model, per_user, cores, rule, generator=generator,
                               join_rate=join_rate)
    if steps is None:  # a study's step runs each hold one step: it passes the climb's steps
        steps = [int(s) for s in stepped.meta.get("steps") or []]
    # The model predicts CPU, so it is judged against the rule's first CPU or machine event
    # (a latency event can come first: the report names it, :attr:`Validation.verdict` too).
    event = next((e for e in stepped.verdict.events if e.kind in ("cpu", "machine")), None)
    actual = module = kind = None
    if event is not None:
        actual = float(stepped.users_at(stepped.t0 + event.at))
        module, kind = event.module, event.kind
    until = stepped.t0 + (event.at if event is not None else math.inf)
    before = sorted(w.others for w in own if w.others is not None and w.end <= until)
    others_actual = before[len(before) // 2] if before else None
    again = (box_saturation(model, per_user, cores, rule, others_actual, generator=generator,
                            join_rate=join_rate)
             if others_actual is not None else None)
    error = ((predicted.users - actual) / actual if actual and math.isfinite(predicted.users)
             else None)
    return Validation(predicted, _step_of(steps, predicted.users), actual, module, kind,
                      None if actual is None else _step_of(steps, actual), error, driver,
                      generator_from, join_rate, model.others, others_actual, again,
                      stepped.verdict.summary)




__all__ = ["OPERATIONS", "Cluster", "Load", "Plan", "PlanError", "Validation", "box_saturation",
           "kustomize_snippet", "plan", "validate"]
