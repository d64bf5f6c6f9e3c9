"""``plan.md``: the fitted costs, the plan for N users, the kustomize settings, the validation."""

from __future__ import annotations

import math
from collections.abc import Sequence

from chatsys.lab.analysis import RunData
from chatsys.lab.costs import OPERATIONS, UNITS, CostModel
from chatsys.lab.plan import Plan, Validation, kustomize_snippet
from chatsys.lab.samples import MODULE_NAMES

MS = 1000.0


def _users(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:,.0f}"


def _r2(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def costs_table(model: CostModel) -> list[str]:
    head = " | ".join(f"ms CPU per {UNITS[op]}" for op in OPERATIONS)
    lines = [f"| module | idle cores per replica | {head} | R² (windows) | RMSE cores | "
             "MiB per replica | KiB per connected user | memory R² |",
             "|---|---:|" + "---:|" * len(OPERATIONS) + "---:|---:|---:|---:|---:|"]
    notes: list[str] = []
    rows = [*((m, c) for m, c in model.modules.items()),
            *((f"load generator ({driver})", c) for driver, c in model.generators.items())]
    for module, c in rows:
        cells = []
        for op in OPERATIONS:
            how = c.describe(op)
            if op in c.cpu:
                cells.append(f"{c.cpu[op] * MS:.3f}")
            elif how:
                cells.append("·")
            else:
                cells.append("–")
            if how:
                notes.append(f"- {module}, {op}: {how}")
        lines.append(f"| {module} | {c.idle:.3f} | " + " | ".join(cells)
                     + f" | {_r2(c.r2)} ({c.windows}) | {c.rmse:.3f} | "
                     f"{c.memory_base / 2**20:.0f} | {c.memory_per_user / 1024:.1f} | "
                     f"{_r2(c.memory_r2)} |")
    lines += ["", "– : not charged to the module (it does not do that work); · : see below.", ""]
    if notes:
        lines += ["What a cost includes, or why it is missing (operations a run moved together "
                  "cannot be told apart; the first one carries both at the run's ratio):", "",
                  *notes, ""]
    return lines


def plan_table(result: Plan) -> list[str]:
    lines = ["| module | CPU cores | memory MiB | replicas | MiB per pod | saturates at (users, "
             "planned replicas) | saturates at (users, base: 1 each) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for p in result.modules:
        lines.append(f"| {MODULE_NAMES[p.module]} | {p.cores:.2f} | {p.memory / 2**20:,.0f} | "
                     f"{p.replicas} | {p.memory_per_pod / 2**20:,.0f} | "
                     f"{_users(p.saturates_at)} | {_users(p.base_saturates_at)} |")
    return lines


def validation_lines(v: Validation) -> list[str]:
    p = v.predicted
    lines = [f"- Predicted from the cost model: **{MODULE_NAMES.get(p.module, p.module)}**, "
             f"{p.kind} saturation at **{_users(p.users)} users** (step {v.predicted_step}), "
             f"users joining at {v.join_rate:g}/s as the stepped run climbed; neighbours' CPU as "
             f"measured in the fitted runs: {v.others_predictor:.2f} cores; the load generator "
             f"({v.driver}) costed from {v.generator_from}."]
    if v.actual_users is None:
        lines.append("- The stepped run had no CPU or machine saturation event: nothing to "
                     "compare with.")
    else:
        lines.append(f"- Measured by the lab's rule: **{MODULE_NAMES.get(v.actual_module or '')}"
                     f"**, {v.actual_kind} saturation at **{v.actual_users:,.0f} users** "
                     f"(step {v.actual_step}).")
    if v.error is not None:
        lines.append(f"- **Error: {v.error:+.0%}** of the measured users "
                     f"({'same' if v.predicted_step == v.actual_step else 'other'} step; module "
                     f"{'right' if p.module == v.actual_module else 'wrong'}).")
    if v.with_actual_others is not None and v.others_actual is not None:
        lines.append(f"- With the neighbours' CPU the stepped run itself measured "
                     f"({v.others_actual:.2f} cores) the prediction would have been "
                     f"{_users(v.with_actual_others.users)} users.")
    lines.append(f"- The stepped run's own verdict: {v.verdict}")
    return lines


def render(model: CostModel, runs: Sequence[RunData], result: Plan,
           validation: Validation | None = None) -> str:
    load, cluster = result.load, result.cluster
    mix = ", ".join(f"{k}={v:g}" for k, v in load.mix.items())
    per_user = model.per_user_rates()
    lines = [
        f"# chatsys lab plan: {load.users:,} users", "",
        f"From {', '.join(d.name for d in runs)}: {len(model.windows)} windows of "
        f"{model.width:g} s. Load: mix {mix}, rooms of {load.room_size}, a task every "
        f"{load.think:g} s per user, {load.join_rate:g} joins/s; pods of "
        f"{cluster.cores_per_pod:g} core(s) at {cluster.target_utilization:.0%} target "
        "utilisation (A and B use one core per pod at most: one Python process).", "",
        "## Costs per operation", "",
        "CPU by non-negative least squares of each module's cores (all replicas) on the "
        "operation rates of each window; memory on replicas and connected users.", "",
        *costs_table(model),
        "The runs' users did, per connected user per second: "
        + ", ".join(f"{per_user[op]:.3g} {op}" for op in OPERATIONS if op != "users") + ".", "",
        "## Plan", "",
        *plan_table(result), "",
        f"First to saturate on the planned replicas: **{MODULE_NAMES[result.first.module]}** at "
        f"{_users(result.first.saturates_at)} users; on the base's one replica each: "
        f"**{MODULE_NAMES[result.base_first.module]}** at "
        f"{_users(result.base_first.base_saturates_at)} users.", "",
    ]
    if result.warnings or model.notes:
        lines += ["Caveats:", "", *[f"- {w}" for w in (*model.notes, *result.warnings)], ""]
    lines += [
        "## Kustomize", "",
        f"The gateway's HPA keeps at least {result.hpa_min} pods (the plan's, two at least) and "
        f"at most {result.hpa_max} (the plan for {result.peak_factor:g}× the users). CPU "
        "requests equal the pod's cores, so the HPA's utilisation target is the plan's; memory "
        "requests are the predicted resident memory plus a quarter (a limit is raised to twice "
        "that when the base's is lower; no CPU limit, as in the base). More than one A needs A on "
        "Redis, more than one B a ReadWriteMany volume: the `scaled` overlay.", "",
        "```yaml", kustomize_snippet(result), "```", "",
    ]
    if validation is not None:
        lines += ["## Validation on this machine", "", *validation_lines(validation), ""]
    return "\n".join(lines).rstrip() + "\n"
