"""The native load driver: its pure parts (stats, percentiles, the plan, HTTP parsing), a tiny
real run against ``chatsys all``, and a lab run with ``--driver native``.

The real runs check that every request of ChatUser's session happens and is counted, and that
the files read like Locust's; they assert no latency (a shared 2-core box decides those).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatsys.lab.driver_http import parse_response
from chatsys.lab.driver_plan import Plan, UserOptions, room_for, source_addresses
from chatsys.lab.driver_run import command
from chatsys.lab.driver_stats import CsvWriter, Stats, bucket, percentile
from chatsys.lab.locust_csv import LocustData
from chatsys.lab.scenarios import scenario
from tests.gateway_support import Gateway, start_all
from tests.lab_support import ROOT, run_lab

CONNECT, TEXT, UPLOAD, SEND_FILE = ("WS /ws/chat/connect", "WS /ws/chat/send_text",
                                    "POST /api/files", "WS /ws/chat/send_file")

# --- pure parts ---------------------------------------------------------------------------------


def test_response_times_are_rounded_like_locusts() -> None:
    assert [bucket(v) for v in (3.4, 99.6, 147, 3432, 58760)] == [3, 100, 150, 3400, 59000]


def test_percentiles_of_merged_worker_deltas_are_those_of_all_samples() -> None:
    fast = [float(v) for v in range(1, 100)]  # one worker: 99 fast requests
    slow = [1000.0 + v for v in range(0, 1000, 10)]  # the other: 100 slow ones
    whole, first, second = Stats(), Stats(), Stats()
    for ms in fast:
        whole.record("WS", "/x", ms, 10, 100)
        first.record("WS", "/x", ms, 10, 100)
    for ms in slow:
        whole.record("WS", "/x", ms, 10, 101, error="boom" if ms > 1900 else None)
        second.record("WS", "/x", ms, 10, 101, error="boom" if ms > 1900 else None)
    totals = Stats()
    for worker in (first, second):
        totals.merge(json.loads(json.dumps(worker.drain())))  # through the wire format
    merged, expected = totals.entries[("WS", "/x")], whole.entries[("WS", "/x")]
    assert merged == expected
    assert merged.count == 199 and merged.failures == 9
    assert totals.errors == {("WS", "/x", "boom"): 9}
    # The median of all samples sits in the slow half; an average of the two medians would not.
    assert merged.percentile(0.5) == 1000
    assert merged.percentile(0.99) == 2000 and merged.percentile(1.0) == 2000
    assert first.entries == {} and first.errors == {}  # drained


def test_locusts_percentile_rule() -> None:
    # Locust's own calculate_response_time_percentile gives these (checked against 2.47): the
    # first bucket, from the slowest down, below which at most count * share requests remain.
    histogram = {10: 50, 20: 40, 30: 9, 40: 1}
    assert [percentile(histogram, 100, p) for p in (0.5, 0.9, 0.95, 0.99, 1.0)] == [
        20, 30, 30, 40, 40]
    assert percentile({}, 0, 0.5) == 0


def test_the_csv_files_read_like_locusts(tmp_path: Path) -> None:
    writer = CsvWriter(tmp_path / "locust")
    stats = Stats()
    for second in range(1_800_000_000, 1_800_000_015):
        for ms in (5.0, 7.0, 300.0):
            stats.record("WS", "/ws/chat/send_text", ms, 120, second)
        stats.record("POST", "/api/files", 20.0, 250, second,
                     error="HTTP 503 unavailable" if second % 5 == 0 else None)
        writer.tick(stats, users=10 + second % 3, now=second + 0.3)
    writer.close()
    data = LocustData.load(tmp_path)
    assert {s.label for s in data.stats} == {"WS /ws/chat/send_text", "POST /api/files",
                                             "Aggregated"}
    text = data.stat("WS /ws/chat/send_text")
    assert text is not None and text.requests == 45 and text.failures == 0
    assert text.median == 7 and text.p99 == 300 and text.max == 300
    total = data.total()
    assert total is not None and total.requests == 60 and total.failures == 3
    assert [(f.name, f.error, f.occurrences) for f in data.failures] == [
        ("/api/files", "HTTP 503 unavailable", 3)]
    last = data.aggregated()[-1]
    assert last.total_requests == 60 and last.users == 10 + 1_800_000_014 % 3
    assert last.rps == pytest.approx(4.0)  # 4 requests every second
    assert last.p99 == 300  # current percentiles: the last ~10 s


def test_the_plan_ramps_steps_and_shares_users_between_workers() -> None:
    plan = Plan((100, 300), spawn_rate=50, hold=10)
    assert plan.duration == pytest.approx(300 / 50 + 20)
    assert plan.start_of(0) == 0 and plan.start_of(99) == pytest.approx(99 / 50)
    assert plan.start_of(100) == pytest.approx(2 + 10)  # after the first hold
    shares = [list(plan.owned(k, 3)) for k in range(3)]
    assert sorted(u for share in shares for u, _ in share) == list(range(300))
    assert all(starts == sorted(starts) for starts in ([t for _, t in s] for s in shares))
    single = Plan.single(50, spawn_rate=25, run_time=20)
    assert single.duration == 20 and single.hold == 18
    short = Plan.single(1000, spawn_rate=10, run_time=5)  # the run time ends the ramp
    assert sum(len(list(short.owned(k, 2))) for k in range(2)) == 50
    with pytest.raises(ValueError):
        Plan((300, 100), spawn_rate=1, hold=1)


def test_rooms_and_source_addresses() -> None:
    options = UserOptions(room_size=20)
    assert room_for(0, 0, options) == room_for(19, 0, options) != room_for(20, 0, options)
    assert room_for(7, 0, UserOptions(rooms=5)) == "load-2"
    assert source_addresses(["http://127.0.0.1:8080"], 3) == [
        "127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert source_addresses(["http://localhost:8080"], 1) == ["127.0.0.2"]
    assert source_addresses(["http://10.0.0.5:8080"], 3) == []  # not ours to bind towards
    assert source_addresses(["http://127.0.0.1:8080"], 0) == []


def test_http_responses_are_parsed_whole_or_not_at_all() -> None:
    answer = b'HTTP/1.1 201 Created\r\ncontent-length: 11\r\n\r\n{"id":"42"}'
    assert parse_response(bytearray(answer)) == (201, b'{"id":"42"}', True)
    assert parse_response(bytearray(answer[:-1])) is None
    chunked = (b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n4\r\nab\r\n\r\n3\r\ncd!\r\n0\r\n\r\n")
    assert parse_response(bytearray(chunked)) == (503, b"ab\r\ncd!", False)
    assert parse_response(bytearray(chunked[:-5])) is None


def test_the_lab_passes_the_scenarios_user_options_to_the_driver(tmp_path: Path) -> None:
    stress = scenario("stress").with_overrides(users=400, spawn_rate=50, run_time=60)
    args = command(stress, ["http://127.0.0.1:1", "http://127.0.0.1:2"], tmp_path, workers=2)
    assert args[args.index("--steps") + 1] == "100,200,300,400"
    assert args[args.index("--host") + 1] == "http://127.0.0.1:1,http://127.0.0.1:2"
    assert args[args.index("--chat-room-size") + 1] == "20"  # from stress.conf
    assert args[args.index("--workers") + 1] == "2"
    baseline = command(scenario("baseline"), ["http://h:1"], tmp_path)
    assert baseline[baseline.index("--users") + 1] == "2000"
    assert baseline[baseline.index("--run-time") + 1] == "600s"


# --- real runs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chatsys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("driver-all")
    with start_all(tmp / "data", tmp) as gateway:
        yield gateway


@pytest.mark.slow
def test_a_tiny_run_plays_the_whole_session(chatsys: Gateway, tmp_path: Path) -> None:
    users = 6
    proc = subprocess.run(
        [sys.executable, "-m", "chatsys.lab.driver", "--host", chatsys.base,
         "--users", str(users), "--spawn-rate", "6", "--run-time", "6s", "--workers", "2",
         "--chat-wait-min", "0.1", "--chat-wait-max", "0.3", "--chat-deliver-sample", "1",
         "--csv", str(tmp_path / "locust")],
        cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    data = LocustData.load(tmp_path)
    counts = {s.label: s.requests for s in data.stats}
    assert counts[CONNECT] == users  # one connect per user, no reconnects
    for label in (TEXT, UPLOAD, SEND_FILE, "WS /ws/chat/deliver"):
        assert counts.get(label, 0) > 0, counts
    assert data.failures == [] and all(s.failures == 0 for s in data.stats)
    assert data.aggregated() and data.aggregated()[-1].users == users
    summary = json.loads((tmp_path / "locust_driver.json").read_text())
    assert summary["workers"] == 2 and summary["cpu_seconds"] > 0 and summary["failures"] == 0


@pytest.mark.slow
def test_a_lab_run_with_the_native_driver(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = run_lab("run", "stress", "--driver", "native", "--users", "12",
                         "--spawn-rate", "6", "--run-time", "10s", out=out)
    assert code == 0, text
    meta = json.loads((out / "run.json").read_text())
    assert meta["driver"] == "native" and meta["locust_exit"] == 0
    assert "chatsys.lab.driver" in meta["locust_command"]
    data = LocustData.load(out)
    assert {CONNECT, TEXT}.issubset({s.label for s in data.stats})
    assert max(r.users for r in data.aggregated()) == 12
    scrapes = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    generator = {s["target"] for s in scrapes if s["module"] == "Locust"}
    # The coordinator and its worker, each on its own.
    assert "Locust" in generator and len(generator) >= 2, generator
    assert "CPU Locust: busiest process" in (out / "report.md").read_text()
