"""The invariants, computed after the run from raw records (nothing here trusts the clients).

Messages, per member, against the ledger of acknowledged ids of its room:
- expected: every acked id after the member's start (the newest id of its first welcome) —
  all of them for a member that stayed in the room to the end; up to the newest id it saw for
  one that left (ids sort in room order, so an acked id below that it never got is a hole),
  and none for one that left having seen nothing;
- lost: expected and never received; duplicated: received more than once; reordered: received
  after an id that sorts above it.
Faults: every one healed and recovered within ``bound`` seconds.
Readiness: every ``/readyz`` answer agreed with a real join, except inside a fault's window.
Resources: gateway RSS and asyncio tasks stayed under their caps, and the task count came back
near its starting level once the clients had gone.
Processes: none exited except when the harness killed it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chaos.faults import FaultRecord
from chaos.members import Ledger, Member
from chaos.observers import Readiness, Sample


@dataclass
class MessageCheck:
    acked: int = 0
    members_checked: int = 0
    deliveries_expected: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    lost_everywhere: int = 0  # acked ids no member ever received
    examples: list[str] = field(default_factory=list)
    suspects: list[dict[str, Any]] = field(default_factory=list)  # the evidence, in full

    @property
    def valid(self) -> bool:
        return self.lost == self.duplicated == self.reordered == 0


def check_messages(members: list[Member], ledger: Ledger, t0: float) -> MessageCheck:
    result = MessageCheck(acked=ledger.count)
    seen_anywhere: set[tuple[str, str]] = set()
    for member in members:
        if not member.joined:
            continue
        result.members_checked += 1
        received = member.received
        seen_anywhere.update((member.room, i) for i in received)
        counts = Counter(received)
        duplicated = sum(n - 1 for n in counts.values() if n > 1)
        reordered = sum(1 for a, b in itertools.pairwise(received) if b < a)
        acked = ledger.acked.get(member.room, {})
        expected = {i for i in acked
                    if (member.start is None or i > member.start)
                    and _owed_to_leaver(member, i)}
        missing = sorted(expected - counts.keys())
        result.deliveries_expected += len(expected)
        result.lost += len(missing)
        result.duplicated += duplicated
        result.reordered += reordered
        if (missing or duplicated or reordered) and len(result.examples) < 10:
            result.examples.append(
                f"{member.name} in {member.room} ({'left' if member.leaving else 'stayed'}, "
                f"{member.reconnects} resumes): missing {missing[:5]}, "
                f"{duplicated} duplicates, {reordered} out of order")
        if (missing or duplicated or reordered) and len(result.suspects) < 5:
            result.suspects.append(_evidence(member, acked, missing, t0))
    result.lost_everywhere = sum(1 for room, ids in ledger.acked.items() for i in ids
                                 if (room, i) not in seen_anywhere)
    return result


def _owed_to_leaver(member: Member, message_id: str) -> bool:
    """A member still in its room is owed every id; one that left, only ids up to the newest it
    saw (ids sort in room order, so one below that it never got is a hole). One that left
    having seen nothing is owed nothing: it may have gone before anything was sent."""
    if not member.leaving:
        return True
    cursor = member.cursor
    return cursor is not None and message_id <= cursor


def check_faults(records: list[FaultRecord], bound: float) -> list[str]:
    problems = []
    for f in records:
        if f.heal is None:
            problems.append(f"{f.kind} on {f.target}: never healed")
        elif f.recovery_seconds is None:
            problems.append(f"{f.kind} on {f.target}: did not recover "
                            f"(last probe failures: {f.probe_failures[-3:]})")
        elif f.recovery_seconds > bound:
            problems.append(f"{f.kind} on {f.target}: recovered in "
                            f"{f.recovery_seconds:.1f}s > {bound:g}s")
    return problems


def check_readiness(observations: list[Readiness], faults: list[FaultRecord],
                    bound: float, lag: float) -> dict[str, Any]:
    """``lag``: how long readiness may trail a recovery (A caches its storage check for 2 s,
    so /readyz can say 503 for a moment after everything works again)."""
    windows = [(start, end + lag) for start, end in (f.window(bound) for f in faults)]

    def during_fault(o: Readiness) -> bool:
        return any(start <= o.end and o.start <= end for start, end in windows)

    lies = [o for o in observations if not o.truthful and not during_fault(o)]
    excused = [o for o in observations if not o.truthful and during_fault(o)]
    return {
        "observations": len(observations),
        "ready": sum(o.status == 200 for o in observations),
        "not_ready": sum(o.status == 503 for o in observations),
        "no_answer": sum(o.status == 0 for o in observations),
        "mismatches_during_faults": len(excused),
        "violations": len(lies),
        "violation_examples": [
            f"{o.start:.1f}s {o.gateway}: /readyz {o.status or 'no answer'} but join "
            f"{'worked' if o.join_ok else 'failed: ' + o.join_error}" for o in lies[:10]],
        "valid": not lies,
    }


def check_resources(samples: list[Sample], start_tasks: dict[str, float | None],
                    end_tasks: dict[str, float | None], *,
                    max_rss_mib: float, max_tasks: float, task_slack: float) -> dict[str, Any]:
    per_gateway: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name in sorted({s.gateway for s in samples}):
        mine = [s for s in samples if s.gateway == name]
        rss = [s.rss_bytes / 2**20 for s in mine if s.rss_bytes is not None]
        tasks = [s.tasks for s in mine if s.tasks is not None]
        first_tasks = start_tasks.get(name)
        entry: dict[str, Any] = {
            "samples": len(mine),
            "rss_mib_min": round(min(rss), 1) if rss else None,
            "rss_mib_max": round(max(rss), 1) if rss else None,
            "tasks_exposed": bool(tasks),
            "tasks_min": min(tasks) if tasks else None,
            "tasks_max": max(tasks) if tasks else None,
            "tasks_before_clients": first_tasks,
            "tasks_after_clients_left": end_tasks.get(name),
        }
        per_gateway[name] = entry
        if rss and max(rss) > max_rss_mib:
            problems.append(f"{name}: RSS reached {max(rss):.0f} MiB > {max_rss_mib:g} MiB")
        if tasks and max(tasks) > max_tasks:
            problems.append(f"{name}: {max(tasks):.0f} asyncio tasks > {max_tasks:g}")
        end = end_tasks.get(name)
        if end is not None and first_tasks is not None and end > first_tasks + task_slack:
            problems.append(f"{name}: {end:.0f} asyncio tasks once the clients had gone, "
                            f"{first_tasks:.0f} at the start (leak?)")
    return {"gateways": per_gateway, "problems": problems, "valid": not problems}


def check_failures(failed_at: list[tuple[float, float, str]], faults: list[FaultRecord],
                   bound: float, t0: float) -> dict[str, Any]:
    """Operations may fail while a fault is on and for ``bound`` seconds after it heals;
    a failure anywhere else is a violation. Failures are also grouped by the fault that
    excuses them, so the report says what each fault cost."""
    windows = [(f, f.start, (f.heal if f.heal is not None else float("inf")) + bound)
               for f in faults]
    outside: list[str] = []
    by_fault: dict[int, Counter[str]] = {}
    for began, ended, what in failed_at:
        b, e = began - t0, ended - t0
        match = next((i for i, (_, start, end) in reversed(list(enumerate(windows)))
                      if start <= e and b <= end), None)  # the latest fault that overlaps
        if match is None:
            outside.append(f"{b:.1f}s–{e:.1f}s {what}")
        else:
            by_fault.setdefault(match, Counter())[what] += 1
    return {
        "outside_faults": len(outside),
        "outside_examples": outside[:10],
        "per_fault": {f"{i + 1} {windows[i][0].kind} {windows[i][0].target}":
                      dict(counts.most_common(6)) for i, counts in sorted(by_fault.items())},
        "valid": not outside,
    }


def error_code_findings(failures: Counter[str]) -> list[str]:
    """Error codes the contract reserves for other situations than an outage: a fault should
    surface as ``unavailable`` (or a lost socket), never as ``internal``."""
    return [f"{n} × {what}" for what, n in failures.items() if what.endswith(": internal")]


def _evidence(member: Member, acked: dict[str, tuple[float, str]], missing: list[str],
              t0: float) -> dict[str, Any]:
    """What one member saw around its problem, with times relative to the run's start."""
    def rel(t: float) -> float:
        return round(t - t0, 3)

    first = missing[0] if missing else (member.received[0] if member.received else "")
    around = [(i, rel(t)) for i, t in zip(member.received, member.received_at, strict=False)
              if i >= first][:12]
    return {
        "member": member.name, "room": member.room, "left": member.leaving,
        "start": member.start, "cursor": member.cursor,
        "connections": [{"t": rel(t), "port": port, "since": since, "history": n,
                         "history_first": a, "history_last": b}
                        for t, port, since, n, a, b in member.connections],
        "left_at": rel(member.left_at) if member.left_at else None,
        "missing": [{"id": i, "acked_at": rel(acked[i][0]), "by": acked[i][1]}
                    for i in missing[:12]],
        "received_from_first_missing": around,
    }
