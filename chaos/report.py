"""The human report, in the manner of Jepsen's results: the verdict first, then why."""

from __future__ import annotations

from typing import Any


def render(summary: dict[str, Any], machine: dict[str, str]) -> str:
    valid = summary["valid"]
    msg = summary["messages"]
    ready = summary["readiness"]
    lines = [
        f"# chaos run {summary['started']}",
        "",
        "```clojure",
        f"{{:valid? {str(valid).lower()}",
        f" :seconds {summary['seconds']}",
        f" :messages {{:valid? {str(msg['valid']).lower()} :acked {msg['acked']}"
        f" :deliveries-expected {msg['deliveries_expected']} :lost {msg['lost']}"
        f" :duplicated {msg['duplicated']} :reordered {msg['reordered']}"
        f" :lost-everywhere {msg['lost_everywhere']}}}",
        f" :faults {{:valid? {str(not _fault_problems(summary)).lower()}"
        f" :count {len(summary['faults'])} :bound-s {summary['options']['bound']}}}",
        f" :readiness {{:valid? {str(ready['valid']).lower()}"
        f" :observations {ready['observations']} :violations {ready['violations']}"
        f" :excused-during-faults {ready['mismatches_during_faults']}}}",
        f" :operations {{:valid? {str(summary['failures_by_fault']['valid']).lower()}"
        f" :failed-outside-faults {summary['failures_by_fault']['outside_faults']}}}",
        f" :resources {{:valid? {str(summary['resources']['valid']).lower()}}}",
        f" :unexpected-exits {len(summary['unexpected_exits'])}}}",
        "```",
        "",
        "Everything looks good! ヽ(‘ー`)ノ" if valid else "Analysis invalid! (ﾉಥ益ಥ）ﾉ ┻━┻",
        "",
    ]
    if summary["why"]:
        lines += ["## Why", ""] + [f"- {w}" for w in summary["why"]] + [""]
    if summary["findings"]:
        lines += ["## Wrong error codes", "",
                  "Failures whose error code the contract reserves for something other than an "
                  "outage:", ""] + [f"- {f}" for f in summary["findings"]] + [""]
    outside = summary["failures_by_fault"]["outside_examples"]
    if outside:
        lines += ["Operations that failed outside every fault:", ""]
        lines += [f"- {o}" for o in outside] + [""]
    if msg["examples"]:
        lines += ["Examples:", ""] + [f"- {e}" for e in msg["examples"]] + [""]
    lines += ["## Faults", "",
              "| # | kind | target | start s | heal s | recovery s |",
              "|---|---|---|---|---|---|"]
    for i, f in enumerate(summary["faults"], 1):
        rec = "NEVER" if f["recovery_seconds"] is None else f"{f['recovery_seconds']:.2f}"
        heal = "-" if f["heal"] is None else f"{f['heal']:.1f}"
        lines.append(f"| {i} | {f['kind']} | {f['target']} | {f['start']:.1f} | {heal} | {rec} |")
    lines += ["", "## Operations", "", "| kind | attempted | succeeded |", "|---|---|---|"]
    for kind, counts in summary["ops"].items():
        lines.append(f"| {kind} | {counts['attempted']} | {counts['succeeded']} |")
    members = summary["members"]
    lines += ["", f"Members {members['total']} ({members['left']} left during the run) in "
              f"{members['rooms']} rooms; {members['resumes']} resumes with `since`; "
              f"close codes seen: {summary['close_codes'] or 'none'}.", ""]
    per_fault = summary["failures_by_fault"]["per_fault"]
    if per_fault:
        lines += ["Failed operations per fault (allowed from its start to "
                  f"{summary['options']['bound']:g}s after its heal):", ""]
        for fault, counts in per_fault.items():
            lines.append(f"- {fault}: " + ", ".join(f"{n} × {w}" for w, n in counts.items()))
        lines.append("")
    lines += ["## Readiness", "",
              f"{ready['observations']} `/readyz` answers each checked with a join to a new "
              f"room: {ready['ready']} × 200, {ready['not_ready']} × 503, "
              f"{ready['no_answer']} without an answer; {ready['mismatches_during_faults']} "
              f"disagreements inside a fault's window, {ready['violations']} outside it.", ""]
    lines += [f"- {e}" for e in ready["violation_examples"]]
    lines += ["", "## Gateways", "",
              "| gateway | RSS MiB min–max | asyncio tasks min–max | tasks before → after |",
              "|---|---|---|---|"]
    for name, g in summary["resources"]["gateways"].items():
        tasks = (f"{g['tasks_min']:.0f}–{g['tasks_max']:.0f}" if g["tasks_exposed"]
                 else "not exposed")
        around = (f"{_n(g['tasks_before_clients'])} → {_n(g['tasks_after_clients_left'])}"
                  if g["tasks_exposed"] else "-")
        lines.append(f"| {name} | {_n(g['rss_mib_min'])}–{_n(g['rss_mib_max'])} | {tasks} "
                     f"| {around} |")
    lines += ["", f"Machine: {machine.get('nproc', '?')} cores, {machine.get('cpu', '?')}.", ""]
    return "\n".join(lines)


def _n(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def _fault_problems(summary: dict[str, Any]) -> bool:
    bound = summary["options"]["bound"]
    return any(f["recovery_seconds"] is None or f["recovery_seconds"] > bound
               for f in summary["faults"])
