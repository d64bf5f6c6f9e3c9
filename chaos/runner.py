"""One chaos run: start the topology, run the workload and the observers, inject the faults,
drain, check, and stop every process whatever happens."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from chaos import checker
from chaos.faults import Injector, schedule
from chaos.members import Pace
from chaos.observers import ReadinessObserver, ResourceSampler
from chaos.topology import System
from chaos.workload import Shape, Workload

log = logging.getLogger("chaos")


@dataclass
class Options:
    duration: float = 90.0  # a minimum: the first round of every fault always completes
    out: Path = Path("runs/chaos")
    bound: float = 10.0  # seconds from a heal within which everything must work again
    warmup: float = 5.0
    hold: float = 3.0  # a killed process stays down this long before its restart
    freeze: float = 4.0  # SIGSTOP to SIGCONT
    partition: float = 4.0  # cut to heal
    gap: float = 3.0  # quiet time after a recovery, before the next fault
    rooms: int = 4
    per_room: int = 3
    churn_every: float = 2.0
    wait_min: float = 0.5
    wait_max: float = 1.5
    op_timeout: float = 10.0
    give_up: float = 30.0  # after a heal, stop probing (the fault "never" recovered)
    readiness_lag: float = 3.0  # /readyz may trail a recovery this long (A's 2 s check TTL)
    grpc_keepalive: float = 0.5
    grpc_timeout: float = 2.0
    drain_timeout: float = 30.0
    max_rss_mib: float = 512.0
    max_tasks: float = 5000.0
    task_slack: float = 50.0  # tasks above the pre-workload count still allowed at the end
    faults: str = ""  # a comma list of fault kinds to inject; empty: every kind


async def run(options: Options) -> dict[str, Any]:
    options.out.mkdir(parents=True, exist_ok=True)
    system = System(options.out, gateway_flags=[
        f"--grpc-keepalive={options.grpc_keepalive}", f"--grpc-timeout={options.grpc_timeout}",
        "--rate-limit=1000", "--rate-burst=1000"])
    began_wall = time.time()
    try:
        return await _run(options, system, began_wall)
    finally:
        await system.stop()


async def _run(options: Options, system: System, began_wall: float) -> dict[str, Any]:
    async with anyio.create_task_group() as infra:
        await system.start(infra)
        for member in system.members:
            infra.start_soon(system.keep_running, member)
        t0 = time.monotonic()
        gateways = system.gateways
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=10)
        async with httpx.AsyncClient(timeout=options.op_timeout, limits=limits) as http:
            sampler = ResourceSampler(gateways, t0)
            start_tasks = {n.name: getattr(await sampler.sample(n, http), "tasks", None)
                           for n in gateways}
            observer = ReadinessObserver(gateways, t0, join_timeout=min(5.0, options.op_timeout))
            injector = Injector(system, t0, hold=options.hold, freeze=options.freeze,
                                partition=options.partition, bound=options.bound,
                                op_timeout=options.op_timeout, give_up=options.give_up)
            workload = Workload([n.port for n in gateways],
                                Shape(options.rooms, options.per_room, options.churn_every),
                                Pace(options.wait_min, options.wait_max,
                                     op_timeout=options.op_timeout), http)
            async with anyio.create_task_group() as watching:
                watching.start_soon(sampler.run, http)
                watching.start_soon(observer.run, http)
                async with anyio.create_task_group() as load:
                    await load.start(workload.run)
                    await anyio.sleep(options.warmup)
                    await _inject_faults(injector, options, http)
                    workload.stop_ops()
                    laggards = await workload.drain(options.drain_timeout)
                    load.cancel_scope.cancel()
                watching.cancel_scope.cancel()
            end_tasks = await _tasks_settle(sampler, start_tasks, options.task_slack, http)
        ran = time.monotonic() - t0
        infra.cancel_scope.cancel()
    return _summary(options, began_wall, t0, ran, workload, injector, observer, sampler,
                    start_tasks, end_tasks, system.unexpected_exits,
                    [f"{m.name} in {m.room}" for m in laggards])


async def _inject_faults(injector: Injector, options: Options, http: httpx.AsyncClient) -> None:
    """Rounds of every fault, one at a time, until the duration is used (the first round
    always completes), then the workload alone until the duration ends. A fault the system
    did not recover from ends the schedule: every later result would be about that one."""
    first_round = True
    while first_round or injector.now() < options.duration:
        for kind, target in schedule(options.faults):
            if not first_round and injector.now() >= options.duration:
                break
            record = await injector.inject(kind, target, http)
            if record.recovered is None:
                log.error("no recovery from %s on %s: no more faults", kind, target)
                return
            await anyio.sleep(options.gap)
        first_round = False
    await anyio.sleep(max(0.0, options.duration - injector.now()))


async def _tasks_settle(sampler: ResourceSampler, start: dict[str, float | None], slack: float,
                        http: httpx.AsyncClient) -> dict[str, float | None]:
    """Once the clients have gone, each gateway's task count, waiting up to 20 s for it to come
    back within ``slack`` of where it started."""
    end: dict[str, float | None] = {}
    for node in sampler.gateways:
        with anyio.move_on_after(20):
            while True:
                sample = await sampler.sample(node, http)
                end[node.name] = sample.tasks if sample else None
                base = start.get(node.name)
                if end[node.name] is None or base is None or end[node.name] <= base + slack:
                    break
                await anyio.sleep(0.5)
    return end


def _summary(options: Options, began_wall: float, t0: float, ran: float, workload: Workload,
             injector: Injector, observer: ReadinessObserver, sampler: ResourceSampler,
             start_tasks: dict[str, float | None], end_tasks: dict[str, float | None],
             exits: list[str], laggards: list[str]) -> dict[str, Any]:
    messages = checker.check_messages(workload.members, workload.ledger, t0)
    fault_problems = checker.check_faults(injector.records, options.bound)
    readiness = checker.check_readiness(observer.observations, injector.records, options.bound,
                                        options.readiness_lag)
    resources = checker.check_resources(sampler.samples, start_tasks, end_tasks,
                                        max_rss_mib=options.max_rss_mib,
                                        max_tasks=options.max_tasks,
                                        task_slack=options.task_slack)
    failures = checker.check_failures(workload.stats.failed_at, injector.records,
                                      options.bound, t0)
    why: list[str] = []
    if not messages.valid:
        why.append(f"messages: {messages.lost} lost, {messages.duplicated} duplicated, "
                   f"{messages.reordered} reordered")
    why += fault_problems
    if not failures["valid"]:
        why.append(f"operations: {failures['outside_faults']} failed outside any fault "
                   f"(or more than {options.bound:g}s after its heal)")
    if not readiness["valid"]:
        why.append(f"readiness: {readiness['violations']} answers contradicted by a join")
    why += resources["problems"]
    why += exits
    stats = workload.stats
    findings = checker.error_code_findings(stats.failures)
    if findings:
        why.append(f"error codes: {', '.join(findings)} (a fault must surface as unavailable)")
    kinds = sorted(set(stats.attempted) | {"join", "reconnect", "text", "upload", "file"})
    return {
        "valid": not why,
        "why": why,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(began_wall)),
        "seconds": round(ran, 1),
        "options": {k: (str(v) if isinstance(v, Path) else v)
                    for k, v in asdict(options).items()},
        "ops": {k: {"attempted": stats.attempted[k], "succeeded": stats.succeeded[k]}
                for k in kinds},
        "failures": dict(stats.failures.most_common(25)),
        "failures_by_fault": failures,
        "findings": findings,
        "close_codes": dict(stats.close_codes),
        "members": {"total": len(workload.members),
                    "left": sum(m.leaving for m in workload.members),
                    "resumes": sum(m.reconnects for m in workload.members),
                    "rooms": len({m.room for m in workload.members}),
                    "not_caught_up": laggards},
        "messages": asdict(messages) | {"valid": messages.valid},
        "faults": [f.as_dict() for f in injector.records],
        "readiness": readiness,
        "resources": resources,
        "unexpected_exits": exits,
    }
