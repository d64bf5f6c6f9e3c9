"""chatsys.runtime.ready: the ports a child reports, written whole or not at all."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from chatsys.runtime import ready

pytestmark = pytest.mark.anyio


def test_written_ports_are_read_back_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / "ready.json"
    assert ready.read(path) is None
    ready.write(path, ready.Ports(4321, 4322))
    assert ready.read(path) == ready.Ports(4321, 4322)
    assert [p.name for p in tmp_path.iterdir()] == ["ready.json"]


def test_an_empty_path_writes_nothing(tmp_path: Path) -> None:
    ready.write("", ready.Ports(1))
    assert list(tmp_path.iterdir()) == []


async def test_a_child_that_exits_without_reporting_is_not_ready(tmp_path: Path) -> None:
    proc = await anyio.open_process([sys.executable, "-c", "raise SystemExit(3)"])
    async with proc:
        with anyio.fail_after(10), pytest.raises(ready.NotReady, match="exited with 3"):
            await ready.wait(tmp_path / "never.json", proc, lambda: "its log")
