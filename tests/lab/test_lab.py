"""The lab end to end (real processes, real Locust, real Prometheus) and its pure parts.

The integration runs are short and small (10-20 users, about 10 s of load): what they check is
that every stage happens for real — the topology starts and stops, Locust writes its CSVs, every
process is sampled, the report names a bottleneck the data supports — not any performance.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from chatsys.lab import prom
from chatsys.lab.bottleneck import Rule, decide
from chatsys.lab.locust_csv import LocustData, read_history
from chatsys.lab.samples import Samples, Scrape, module_for, parse_exposition
from chatsys.lab.scenarios import parse_duration, scenario
from chatsys.lab.series import histogram_quantile, histogram_windows
from tests.lab_support import (
    alive,
    child_pids,
    lab,
    prometheus,
    run_lab,
    targets_up,
    wait_for_line,
)
from tests.support import http_ok, running_reported, wait_until

pytestmark = pytest.mark.slow  # starts real processes

T0 = 1_800_000_000.0


# --- pure parts ---------------------------------------------------------------------------------


def _cpu(*pairs: tuple[float, float]) -> list[tuple[float, float]]:
    return [(T0 + t, v) for t, v in pairs]


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.4, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.38)
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1


def test_the_module_whose_process_crosses_one_core_first_is_the_bottleneck() -> None:
    modules = {"P-0": "P", "A-0": "A", "B-0": "B", "B-1": "B"}
    cpu = {"P-0": _cpu(*((t, 0.5) for t in range(20))),
           "A-0": _cpu(*((t, 0.95 if t >= 12 else 0.3) for t in range(20))),
           "B-0": _cpu(*((t, 0.1) for t in range(20))),
           "B-1": _cpu(*((t, 0.95 if t >= 6 else 0.2) for t in range(20)))}
    verdict = decide(cpu, modules, t0=T0)
    assert verdict.module == "B" and verdict.saturated
    assert [e.module for e in verdict.events] == ["B", "A"]
    assert verdict.events[0].at == pytest.approx(8)  # third sample over the threshold
    assert "B-1" in verdict.events[0].detail
    # Raise the threshold above B's peak: A no longer crosses either, nothing saturates.
    calm = decide(cpu, modules, t0=T0, rule=Rule(cpu_threshold=0.99))
    assert not calm.saturated and calm.module in ("A", "B") and "Nothing saturated" in calm.summary


def test_latency_before_cpu_wins_and_a_single_slow_sample_does_not() -> None:
    modules = {"P-0": "P", "A-0": "A", "B-0": "B"}
    cpu = {"P-0": _cpu(*((t, 2.0 if t == 3 else 0.2) for t in range(30))),  # one spike
           "A-0": _cpu(*((t, 0.9 if t >= 20 else 0.4) for t in range(30))),
           "B-0": _cpu(*((t, 0.1) for t in range(30)))}
    grpc = {"A": [(T0 + t, 0.01, 10.0) for t in range(2, 30, 2)],
            "B": [(T0 + t, 0.3 if t >= 10 else 0.01, 10.0) for t in range(2, 30, 2)]}
    verdict = decide(cpu, modules, t0=T0, grpc_p99=grpc)
    assert verdict.module == "B" and verdict.events[0].kind == "latency"
    assert verdict.events[0].at == pytest.approx(10)
    assert [e.module for e in verdict.events] == ["B", "A"]  # P's spike is no event


def test_gateway_latency_counts_only_when_the_time_is_not_spent_in_a() -> None:
    modules = {"P-0": "P", "A-0": "A"}
    cpu = {"P-0": _cpu((0, 0.1), (1, 0.1)), "A-0": _cpu((0, 0.1), (1, 0.1))}
    slow_a = {"A": [(T0 + 4, 0.2, 10.0), (T0 + 6, 0.2, 10.0)]}
    ack = [(T0 + 4, 0.25, 10.0), (T0 + 6, 0.25, 10.0)]
    assert decide(cpu, modules, t0=T0, grpc_p99=slow_a, ack_p99=ack).module == "A"
    fast_a = {"A": [(T0 + 4, 0.01, 10.0), (T0 + 6, 0.01, 10.0)]}
    verdict = decide(cpu, modules, t0=T0, grpc_p99=fast_a, ack_p99=ack)
    assert verdict.module == "P" and verdict.events[0].kind == "latency"
    assert verdict.events[0].at == pytest.approx(4)
    # One slow window alone is a blip, not saturation.
    blip = decide(cpu, modules, t0=T0, grpc_p99=fast_a, ack_p99=ack[:1])
    assert not blip.saturated


def test_a_machine_busy_with_other_work_is_not_a_modules_saturation() -> None:
    modules = {"P-0": "P", "Locust": "Locust"}
    host = _cpu(*((t, 1.95) for t in range(10)))
    quiet = {"P-0": _cpu(*((t, 0.05) for t in range(10))),
             "Locust": _cpu(*((t, 0.02) for t in range(10)))}
    verdict = decide(quiet, modules, t0=T0, host=host, cores=2)
    assert not verdict.saturated and verdict.module == "P"
    busy = {"P-0": _cpu(*((t, 0.6) for t in range(10))),
            "Locust": _cpu(*((t, 0.8) for t in range(10)))}
    verdict = decide(busy, modules, t0=T0, host=host, cores=2)
    assert verdict.saturated and verdict.module == "Locust"
    assert verdict.events[0].kind == "machine"


def test_histogram_windows_sum_replicas_and_filter_labels() -> None:
    def scrape(t: float, target: str, fast: float, slow: float) -> Scrape:
        labels = {"grpc_service": "chatsys.chat.v1.ChatService", "grpc_method": "Append",
                  "grpc_type": "unary"}
        return Scrape(T0 + t, target, "A", [
            ("grpc_server_handling_seconds_bucket", {**labels, "le": "0.01"}, fast),
            ("grpc_server_handling_seconds_bucket", {**labels, "le": "+Inf"}, fast + slow),
            ("grpc_server_handling_seconds_bucket",
             {**labels, "grpc_type": "server_stream", "le": "+Inf"}, 1000.0 * t)])

    samples = Samples([scrape(0, "A-0", 0, 0), scrape(0, "A-1", 0, 0),
                       scrape(5, "A-0", 100, 0), scrape(5, "A-1", 50, 0),
                       scrape(10, "A-0", 100, 10), scrape(10, "A-1", 50, 10)])
    windows = histogram_windows(samples, "grpc_server_handling_seconds", [T0, T0 + 5, T0 + 10],
                                0.99, module="A", keep=lambda lb: lb["grpc_type"] == "unary")
    (first, second) = windows["all"]
    assert first[2] == 150 and first[1] is not None and first[1] <= 0.01
    assert second[2] == 20 and second[1] == 0.01  # all slow: the last finite bound


def test_exposition_parsing_keeps_what_the_report_reads() -> None:
    text = ("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"
            "# TYPE python_gc_objects_collected_total counter\n"
            "python_gc_objects_collected_total{generation=\"0\"} 3\n"
            "# TYPE chatsys_message_ack_seconds histogram\n"
            "chatsys_message_ack_seconds_bucket{kind=\"text\",le=\"+Inf\"} 2\n"
            "chatsys_message_ack_seconds_count{kind=\"text\"} 2\n"
            "chatsys_message_ack_seconds_created{kind=\"text\"} 1.7e9\n")
    names = [name for name, _, _ in parse_exposition(text)]
    assert names == ["process_cpu_seconds_total", "chatsys_message_ack_seconds_bucket",
                     "chatsys_message_ack_seconds_count"]


def test_locust_csv_parsing_tolerates_na_and_a_cut_last_line(tmp_path: Path) -> None:
    header = ("Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,"
              "99%,99.9%,99.99%,100%,Total Request Count,Total Failure Count,"
              "Total Median Response Time,Total Average Response Time,Total Min Response Time,"
              "Total Max Response Time,Total Average Content Size\n")
    rows = ("1800000000,0,,Aggregated,0,0," + "N/A," * 11 + "0,0,0,0,0,0,0\n"
            "1800000001,20,WS,/ws/chat/send_text,7.5,0.5,4,4,5,5,5,6,7,9,9,9,9,28,1,5,5.5,3,9,140\n"
            "1800000001,20,,Aggregated,13,0.5,4,4,5,5,5,6,7,12,12,12,12,40,1,6,10,3,28,152\n"
            "1800000002,20,,Aggreg")
    (tmp_path / "locust_stats_history.csv").write_text(header + rows)
    (tmp_path / "locust_failures.csv").write_text(
        "Method,Name,Error,Occurrences\nWS,/ws/chat/send_text,no ack within 10s,1\n")
    history = read_history(tmp_path / "locust_stats_history.csv")
    assert [r.name for r in history] == ["Aggregated", "/ws/chat/send_text", "Aggregated"]
    assert history[0].p99 is None and history[1].p99 == 9 and history[1].label.startswith("WS ")
    data = LocustData.load(tmp_path)
    onset = data.failure_onset()
    assert onset is not None and onset.users == 20 and data.failures[0].occurrences == 1
    assert data.stats == [] and data.operations() == ["WS /ws/chat/send_text"]


def test_scenarios_come_from_the_conf_files_and_take_overrides() -> None:
    baseline = scenario("baseline")
    assert (baseline.users, baseline.spawn_rate, baseline.run_time) == (2000, 50.0, 600.0)
    quick = baseline.with_overrides(users=50, spawn_rate=25, run_time=parse_duration("20s"))
    args = quick.locust_args()
    assert args[:2] == ["--config", str(baseline.conf)]
    assert args[args.index("--users") + 1] == "50" and "20s" in args
    stress = scenario("stress").with_overrides(users=400, spawn_rate=100, run_time=40)
    assert stress.steps == (100, 200, 300, 400) and stress.hold == pytest.approx(9)
    assert (scenario("scaled").a_replicas, scenario("scaled").b_replicas) == (2, 2)
    assert scenario("hpa").gateways == 2
    assert parse_duration("1h30m") == 5400 and parse_duration("90") == 90
    with pytest.raises(ValueError):
        scenario("nope")


def test_prometheus_series_are_assigned_to_modules() -> None:
    assert module_for({"component": "users-chat", "pod": "chatsys-chat-0"}) == "A"
    assert module_for({"job": "chatsys", "pod": "chatsys-gateway-7f"}) == "P"
    assert module_for({"job": "prometheus", "instance": "localhost:9090"}) is None
    result = [{"metric": {"__name__": "process_cpu_seconds_total", "component": "files",
                          "instance": "10.0.0.2:9101"}, "values": [[T0, "1"], [T0 + 1, "1.5"]]},
              {"metric": {"__name__": "process_cpu_seconds_total", "job": "prometheus"},
               "values": [[T0, "9"]]}]
    scrapes, mapping = prom.to_scrapes(result)
    assert [(s.target, s.module, s.samples[0][2]) for s in scrapes] == [
        ("B-0", "B", 1.0), ("B-0", "B", 1.5)]
    assert mapping == {"B-0": "10.0.0.2:9101"}


@pytest.mark.parametrize("args", [["lab", "--help"], ["lab", "run", "--help"],
                                  ["lab", "report", "--help"]], ids=" ".join)
def test_lab_help(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "chatsys", *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: chatsys lab" in result.stdout
    if "run" in args:
        for flag in ("--users", "--spawn-rate", "--run-time", "--gateways", "--a-replicas",
                     "--b-replicas", "--prometheus", "--host", "--out"):
            assert flag in result.stdout


# --- end to end ---------------------------------------------------------------------------------


def _raw_cpu_peaks(run: Path) -> dict[str, float]:
    """Per module, the highest 1-sample CPU rate of any of its processes, from metrics.jsonl."""
    series: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        scrape = json.loads(line)
        for name, _, value in scrape["samples"]:
            if name == "process_cpu_seconds_total":
                series[scrape["target"]].append((scrape["t"], value, scrape["module"]))
    peaks: dict[str, float] = {}
    for points in series.values():
        points.sort()
        for (t0, v0, module), (t1, v1, _) in itertools.pairwise(points):
            peaks[module] = max(peaks.get(module, 0.0), (v1 - v0) / (t1 - t0))
    return peaks


def _check_report(run: Path, modules: set[str]) -> str:
    text = (run / "report.md").read_text()
    assert "## Bottleneck" in text and "How the module is named" in text
    section = text.split("## Bottleneck", 1)[1]
    named = re.search(r"\*\*(P|A|B|Locust) \(", section)
    assert named, section[:500]
    reported = {m: float(v) for m, v in re.findall(r"CPU (\w+): busiest process \S+ peaked at "
                                                   r"([\d.]+) cores", section)}
    assert set(reported) >= modules, reported
    raw = _raw_cpu_peaks(run)
    for module, value in reported.items():  # a 3-sample mean never exceeds the raw peak
        assert value <= raw[module] + 0.01, (module, value, raw)
    if "Nothing saturated" in section:
        assert reported[named.group(1)] == max(reported.values())
    for png in re.findall(r"!\[\w+\]\(([^)]+\.png)\)", text):
        size = (run / png).stat().st_size if (run / png).exists() else (
            run.parent / png).stat().st_size
        assert 5_000 < size < 150_000, (png, size)
    return text


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lab") / "local"
    code, progress = run_lab("run", "baseline", "--users", "20", "--spawn-rate", "20",
                             "--run-time", "10s", "--b-replicas", "2", out=out)
    assert code == 0, progress
    return out


def test_a_short_baseline_runs_end_to_end_and_names_a_bottleneck(local_run: Path) -> None:
    progress = local_run.with_suffix(".stderr").read_text()
    assert re.search(r"load: users \d+, [\d.]+ req/s", progress), progress
    meta = json.loads((local_run / "run.json").read_text())
    assert meta["locust_exit"] in (0, 1) and meta["scrapes"] >= 8
    names = {p["name"] for p in meta["processes"]}
    assert names == {"P-0", "A-0", "B-0", "B-1"}
    gateway = next(p for p in meta["processes"] if p["name"] == "P-0")["command"]
    b_addrs = [p["address"] for p in meta["processes"] if p["module"] == "B"]
    assert gateway[gateway.index("--files-addr") + 1] == ",".join(b_addrs)
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv",
                 "metrics.jsonl", "resources.png", "server_latency.png"):
        assert (local_run / name).exists(), name
    stats = LocustData.load(local_run)
    total = stats.total()
    assert total is not None and total.requests > 20
    assert stats.stat("WS /ws/chat/connect") is not None
    targets = {json.loads(line)["target"]
               for line in (local_run / "metrics.jsonl").read_text().splitlines()}
    assert targets >= {"P-0", "A-0", "B-0", "B-1", "Locust", "host"}
    text = _check_report(local_run, {"P", "A", "B", "Locust"})
    assert "gRPC A: server p99" in text and "Ack latency (gateway)" in text
    for name, pid in child_pids(local_run).items():
        assert not alive(pid), f"{name} (pid {pid}) outlived the lab"


def _prometheus_config(jobs: dict[str, tuple[str, int]]) -> str:
    lines = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s",
             "scrape_configs:", "  - job_name: chatsys", "    static_configs:"]
    for name, (component, port) in jobs.items():
        lines += [f"      - targets: ['127.0.0.1:{port}']",
                  f"        labels: {{component: {component}, pod: {name}}}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prom_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A, B and P started here; Prometheus scrapes them; the lab reads Prometheus back."""
    base = tmp_path_factory.mktemp("lab-prom")
    data = base / "data"
    # --flag=value: tests.support names log files after the non-flag arguments.
    common = ["--host=127.0.0.1", "--drain-timeout=0", "--port=0"]
    grpc = [*common, "--metrics-port=0", f"--data-dir={data}"]
    with running_reported(["users", "chat", *grpc], log_dir=base) as (_, a), \
         running_reported(["files", *grpc], log_dir=base) as (_, b), \
         running_reported(["gateway", *common, f"--users-addr=127.0.0.1:{a.port}",
                           f"--chat-addr=127.0.0.1:{a.port}", f"--files-addr=127.0.0.1:{b.port}"],
                          ready_check=lambda p: http_ok(f"http://127.0.0.1:{p.port}/readyz"),
                          log_dir=base) as (_, gw), \
         prometheus(_prometheus_config({"gw-0": ("gateway", gw.port),
                                        "chat-0": ("users-chat", a.metrics_port or 0),
                                        "files-0": ("files", b.metrics_port or 0)}),
                    base / "prometheus") as url:
        wait_until(lambda: targets_up(url, "chatsys", 3), timeout=30, what="scrape targets up")
        out = base / "run"
        code, progress = run_lab("run", "baseline", "--users", "10", "--spawn-rate", "10",
                                 "--run-time", "8s", "--host", f"http://127.0.0.1:{gw.port}",
                                 "--prometheus", url, "--label", "via-prometheus", out=out)
        assert code == 0, progress
    return out


def test_metrics_come_back_from_a_real_prometheus(prom_run: Path) -> None:
    meta = json.loads((prom_run / "run.json").read_text())
    assert meta["metrics_source"] == "prometheus" and meta["topology"] is None
    assert "error" not in meta, meta.get("error")
    assert set(meta["prometheus_targets"]) == {"P-0", "A-0", "B-0"}
    seen: dict[str, set[str]] = defaultdict(set)
    for line in (prom_run / "metrics.jsonl").read_text().splitlines():
        scrape = json.loads(line)
        seen[scrape["target"]].update(name for name, _, _ in scrape["samples"])
    assert "grpc_server_handling_seconds_bucket" in seen["A-0"]
    assert "chatsys_message_ack_seconds_bucket" in seen["P-0"]
    assert "process_cpu_seconds_total" in seen["B-0"]
    _check_report(prom_run, {"P", "A", "B"})


def test_two_runs_give_a_comparison_table(local_run: Path, prom_run: Path,
                                          tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "chatsys", "lab", "report", str(local_run),
                             str(prom_run), "--out", str(tmp_path / "cmp")],
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Comparison" in text and "Δ via-prometheus vs local" in text
    row = next(line for line in text.splitlines() if line.startswith("| aggregated RPS |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    first, second = (LocustData.load(d).total() for d in (local_run, prom_run))
    assert first is not None and second is not None
    assert cells[1:3] == [f"{first.rps:,.2f}", f"{second.rps:,.2f}"]
    assert cells[3].startswith(f"{second.rps - first.rps:+,.2f}")
    assert text.count("### Bottleneck") == 2
    assert len(list((tmp_path / "cmp").glob("*.png"))) >= 6


def test_ctrl_c_stops_everything_and_still_reports(tmp_path: Path) -> None:
    """Two gateways, A on Redis, two B; one B killed mid-run; then Ctrl-C."""
    out = tmp_path / "interrupted"
    with lab("run", "scaled", "--gateways", "2", "--users", "10", "--spawn-rate", "10",
             "--run-time", "60s", out=out) as proc:
        wait_for_line(out.with_suffix(".stderr"), "load: users 10", timeout=60)
        pids = child_pids(out)
        assert {"redis", "A-0", "A-1", "B-0", "B-1", "P-0", "P-1"} <= set(pids)
        os.kill(pids["B-1"], signal.SIGKILL)  # a replica dying mid-run is reported, not hidden
        wait_until(lambda: not alive(pids["B-1"]), timeout=10, what="B-1 gone")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    meta = json.loads((out / "run.json").read_text())
    assert meta["interrupted"] and meta["load_ended"] - meta["load_started"] < 50
    assert meta["died"] == {"B-1": -signal.SIGKILL}
    text = (out / "report.md").read_text()
    assert (out / "locust_stats.csv").exists() and "Interrupted" in text
    assert "Exited during the run:** B-1 (exit -9" in text
    # Users were spread over both gateways (locust_spread.py), each holding some of them.
    connections: dict[str, float] = defaultdict(float)
    for line in (out / "metrics.jsonl").read_text().splitlines():
        scrape = json.loads(line)
        for name, _, value in scrape["samples"]:
            if name == "chatsys_ws_connections":
                connections[scrape["target"]] = max(connections[scrape["target"]], value)
    assert set(connections) == {"P-0", "P-1"} and min(connections.values()) >= 3, connections
    for name, pid in pids.items():
        assert not alive(pid), f"{name} (pid {pid}) outlived the lab"


def test_a_process_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    """Every chatsys process refuses a too-short HMAC key: A fails first, and the lab says so."""
    out = tmp_path / "broken"
    code, progress = run_lab("run", "baseline", "--users", "5", "--run-time", "5s", out=out,
                             env={"CHATSYS_AUTH_SECRET": "short"})
    assert code == 2, progress
    assert "A-0 exited with 2 while starting" in progress and "CHATSYS_AUTH_SECRET" in progress
    meta = json.loads((out / "run.json").read_text())
    assert "A-0 exited" in meta["error"] and (out / "report.md").exists()
    assert not (out / "locust_stats.csv").exists()
    for name, pid in child_pids(out).items():
        assert not alive(pid), f"{name} (pid {pid}) outlived the lab"
