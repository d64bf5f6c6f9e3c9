"""``chatsys lab run``: topology up, Locust on, metrics recorded, everything down, report out.

The whole run is one task group: the scraper, the progress line and Locust run side by side
until Locust finishes or Ctrl-C sets ``stop``. Cleanup is shielded and always runs, in order:
Locust (it writes its final CSVs), the Prometheus read-back, the topology, then ``run.json``
and the report — so an interrupted run still leaves its data and a report of what it saw.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from chatsys.lab import prom, report
from chatsys.lab.autoscaler import Autoscaler, HpaSpec
from chatsys.lab.bottleneck import Rule
from chatsys.lab.elastic import HPA_FILE, ElasticGateways
from chatsys.lab.locust_run import LocustProcess, Progress
from chatsys.lab.samples import write_jsonl
from chatsys.lab.scenarios import Scenario
from chatsys.lab.scrape import Scraper, ScrapeTarget, open_metrics
from chatsys.runtime import lifecycle
from chatsys.runtime.children import wait_any
from chatsys.runtime.members import Member
from chatsys.runtime.supervision import Policy, supervise
from chatsys.runtime.topology import Topology, TopologyError

log = logging.getLogger("chatsys.lab")
EXIT_OK, EXIT_FAILED, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 130
INGEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class RunOptions:
    scenario: Scenario
    out: Path
    host: str | None = None
    prometheus: str | None = None
    prom_step: float = 1.0
    scrape_interval: float = 1.0
    progress_every: float = 3.0
    label: str | None = None
    locust_processes: int = 1
    driver: str = "locust"  # or "native": chatsys.lab.driver instead of Locust
    driver_workers: int = 0  # the native driver's processes (0: its own default)
    rule: Rule = field(default_factory=Rule)
    # The local HPA (the gateways on one port, scaled while the load runs); None: fixed.
    autoscale: HpaSpec | None = None


def load_generator(options: RunOptions, hosts: list[str], out: Path) -> LocustProcess:
    """Locust (the default), or the native driver, which writes the same files."""
    if options.driver == "native":
        from chatsys.lab.driver_run import DriverProcess

        return DriverProcess(options.scenario, hosts, out, options.driver_workers)
    return LocustProcess(options.scenario, hosts, out, options.locust_processes)


def say(text: str) -> None:
    """One progress line on stderr (stdout stays free for whoever pipes the lab)."""
    print(f"lab: {text}", file=sys.stderr, flush=True)


class LabRun:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.out = options.out
        sc = options.scenario
        self.topology: Topology | None = None
        if options.host is None:
            self.topology = Topology(self.out, sc.gateways, sc.a_replicas, sc.b_replicas,
                                     shared_port=options.autoscale is not None)
        self.locust: LocustProcess | None = None
        self.stage = "setup"
        self.started = time.monotonic()
        self.meta: dict[str, Any] = {
            "label": options.label or self.out.name, "scenario": sc.name, "seed": sc.seed,
            "conf": str(sc.conf), "users": sc.users, "spawn_rate": sc.spawn_rate,
            "run_time": sc.run_time, "steps": list(sc.steps),
            "metrics_source": "prometheus" if options.prometheus else "scrape",
            "prometheus": options.prometheus, "host": options.host,
            "topology": None if self.topology is None else {
                "gateways": sc.gateways, "a_replicas": sc.a_replicas,
                "b_replicas": sc.b_replicas, "redis": sc.a_replicas > 1},
            "interrupted": False,
        }
        if options.autoscale is not None and self.topology is not None:
            self.meta["autoscale"] = dataclasses.asdict(options.autoscale)

    async def main(self, stop: anyio.Event) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        code = EXIT_FAILED
        try:
            code = await self._run(stop)
        except TopologyError as exc:
            self.meta["error"] = str(exc).splitlines()[0]
            say(f"error: {exc}")
            code = EXIT_SETUP
        finally:
            # Shielded: a second Ctrl-C cancels the run, never the cleanup or the report.
            with anyio.CancelScope(shield=True):
                await self._cleanup()
                if stop.is_set():
                    self.meta["interrupted"] = True
                    code = EXIT_INTERRUPTED
                self._write_meta()
                self._report()
        return code

    async def _run(self, stop: anyio.Event) -> int:
        hosts = [self.options.host] if self.options.host else []
        if self.topology is not None:
            self._stage("starting the topology")
            failed: list[TopologyError] = []
            async with anyio.create_task_group() as tg:
                async def start() -> None:
                    assert self.topology is not None
                    try:
                        await self.topology.start()
                    except TopologyError as exc:  # raised below, not as an exception group
                        failed.append(exc)
                    tg.cancel_scope.cancel()

                async def interrupted() -> None:
                    await stop.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(start)
                tg.start_soon(interrupted)
            if failed:
                raise failed[0]
            if stop.is_set():
                return EXIT_INTERRUPTED
            hosts = self.topology.gateway_urls
            self.meta["processes"] = self.topology.describe()
            say("ready: " + ", ".join(f"{m.name} {m.address}" for m in self.topology.members))
        targets = [] if self.options.prometheus or self.topology is None else [
            ScrapeTarget(m.name, m.module, m.metrics_url) for m in self.topology.targets()]
        self.locust = locust = load_generator(self.options, hosts, self.out)
        self.meta["driver"] = self.options.driver
        self.meta["locust_command"] = locust.args
        with open_metrics(self.out) as metrics:
            scraper = Scraper(metrics, targets, locust_pid=lambda: locust.pid,
                              interval=self.options.scrape_interval)
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(supervise, "metrics scraper", scraper.run,
                                      policy=Policy.RESTART))
                self._start_autoscaler(tg, scraper)
                self.meta["load_started"] = time.time()
                await locust.start()
                self._stage("load")
                tg.start_soon(partial(supervise, "progress", partial(self._progress, scraper),
                                      policy=Policy.RESTART))
                done = anyio.Event()

                async def wait_locust() -> None:
                    self.meta["locust_exit"] = await locust.wait()
                    done.set()

                tg.start_soon(wait_locust)
                await wait_any(done, stop)
                self.meta["load_ended"] = time.time()
                if stop.is_set():
                    self._stage("interrupted: stopping Locust")
                    self.meta["locust_exit"] = await locust.stop()
                await scraper.tick_once()
                tg.cancel_scope.cancel()
        self.meta["scrapes"], self.meta["scrape_errors"] = scraper.ticks, scraper.errors
        return EXIT_OK if self.meta.get("locust_exit") in (0, 1) else EXIT_FAILED

    def _start_autoscaler(self, tg: anyio.abc.TaskGroup, scraper: Scraper) -> None:
        """The local HPA beside the load (``hpa.jsonl``); the scraper follows its gateways."""
        spec = self.options.autoscale
        if spec is None or self.topology is None:
            return

        def follow(gateways: list[Member]) -> None:
            others = [t for t in scraper.targets if t.module != "P"]
            scraper.targets = others + [ScrapeTarget(m.name, m.module, m.metrics_url)
                                        for m in gateways]
            say(f"[{time.monotonic() - self.started:5.0f} s] autoscaler: {len(gateways)} "
                f"gateways ({', '.join(m.name for m in gateways)})")

        elastic = ElasticGateways(self.topology, Autoscaler(spec), self.out / HPA_FILE,
                                  on_change=follow)
        tg.start_soon(partial(supervise, "autoscaler", elastic.run, policy=Policy.RESTART))

    async def _progress(self, scraper: Scraper) -> None:
        while True:
            await anyio.sleep(self.options.progress_every)
            p = Progress.read(self.out)
            say(f"[{time.monotonic() - self.started:5.0f} s] {self.stage}: users {p.users}, "
                f"{p.rps:.1f} req/s, {p.requests} requests, failures {p.failures} "
                f"({p.fps:.1f}/s), scrapes {scraper.ticks}")

    def _stage(self, stage: str) -> None:
        self.stage = stage
        say(f"[{time.monotonic() - self.started:5.0f} s] {stage}")

    async def _cleanup(self) -> None:
        if self.locust is not None and self.locust.proc is not None:
            code = await self.locust.stop()
            self.meta.setdefault("locust_exit", code)
            if code not in (0, 1):
                tail = (self.out / "locust.log").read_text(errors="replace").splitlines()[-5:]
                self.meta["error"] = f"Locust exited with {code}: " + " / ".join(tail)
        if self.options.prometheus and "load_started" in self.meta:
            self._stage("reading metrics back from Prometheus")
            await anyio.to_thread.run_sync(self._fetch_prometheus)
        if self.topology is not None:
            died = self.topology.exited()
            if died and "load_started" in self.meta:
                self.meta["died"] = died
                say("error: exited during the run: "
                    + ", ".join(f"{name} ({code})" for name, code in died.items()))
            self._stage("stopping the topology")
            self.meta["exit_codes"] = await self.topology.stop()

    def _fetch_prometheus(self) -> None:
        url = self.options.prometheus
        assert url is not None
        start = float(self.meta["load_started"]) - 2
        end = float(self.meta.get("load_ended") or time.time())
        try:
            prom.wait_ingested(url, end, INGEST_TIMEOUT)
            scrapes, mapping = prom.fetch(url, start, end + 1, self.options.prom_step)
        except prom.PrometheusError as exc:
            self.meta["error"] = f"Prometheus: {exc}"
            say(f"error: Prometheus: {exc}")
            return
        with open_metrics(self.out) as f:
            count = write_jsonl(scrapes, f)
        self.meta["prometheus_targets"] = mapping
        say(f"read {count} target-seconds for {len(mapping)} targets from Prometheus")

    def _write_meta(self) -> None:
        (self.out / "run.json").write_text(json.dumps(self.meta, indent=2, default=str))

    def _report(self) -> None:
        self._stage("writing the report")
        try:
            path = report.write([self.out], self.out, self.options.rule)
        except Exception as exc:  # the data is on disk; a report bug must not hide it
            log.exception("report failed")
            say(f"error: the report could not be written ({exc}); the raw data is in {self.out}")
            return
        say(f"report: {path}")


def run(options: RunOptions) -> int:
    """Run the lab until done or Ctrl-C; returns the process exit code."""
    lab = LabRun(options)
    result: list[int] = []

    async def main(stop: anyio.Event) -> None:
        result.append(await lab.main(stop))

    lifecycle.run(partial(main), grace=120.0)
    return result[0] if result else EXIT_INTERRUPTED
