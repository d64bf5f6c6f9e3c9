"""The chaos soak harness (``python -m chaos``) over real processes: Redis, two A replicas,
two B replicas, two gateways (one through a partitionable proxy), a mixed workload, and every
fault kind at least once — A, B, Redis and a gateway SIGKILLed and restarted, an A replica
frozen (SIGSTOP/SIGCONT), a partition cut and healed.

The run's own checks are the assertions: no acknowledged message lost, duplicated or
reordered; every fault recovered within the bound; /readyz never contradicted by a join
outside a fault; no operation failing outside a fault; gateway RSS and tasks bounded; no
process dying on its own. Every wait in the harness is a condition with a deadline, and the
bound (10 s) is a generous ceiling on a loaded 2-core machine, not a race.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.faults import TARGETS
from chaos.runner import Options, run

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.mark.timeout(420)
async def test_soak_with_every_fault_is_valid(tmp_path: Path) -> None:
    options = Options(duration=60, out=tmp_path / "chaos", warmup=4)
    summary = await run(options)
    (tmp_path / "summary.json").write_text(json.dumps(summary, indent=2))
    why = "\n".join(summary["why"]) + f"\nlogs: {options.out / 'logs'}"

    messages = summary["messages"]
    assert messages["acked"] > 100, summary["ops"]  # the workload really ran through the faults
    assert (messages["lost"], messages["duplicated"], messages["reordered"]) == (0, 0, 0), why
    for fault in summary["faults"]:
        assert fault["recovery_seconds"] is not None, (fault, why)
        assert fault["recovery_seconds"] <= options.bound, (fault, why)
    assert summary["readiness"]["valid"], why
    assert summary["failures_by_fault"]["valid"], why
    assert not summary["findings"], why  # a fault surfaces as unavailable, never internal
    assert summary["resources"]["valid"], why
    assert not summary["unexpected_exits"], why
    assert summary["valid"], why
    kinds = {f["kind"] for f in summary["faults"]}
    assert kinds == set(TARGETS), kinds
    targets = {f["target"] for f in summary["faults"]}
    assert {"A-0", "A-1", "B-0", "B-1", "redis", "P-1"} <= targets, targets
    for kind in ("join", "text", "upload", "file"):
        assert summary["ops"][kind]["succeeded"] > 0, summary["ops"]
