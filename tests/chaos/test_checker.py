"""The chaos harness's message invariant, on hand-made records (pure logic, no processes)."""

from __future__ import annotations

import anyio
import httpx
import pytest

from chaos.checker import check_messages
from chaos.members import Ledger, Member, OpStats, Pace

pytestmark = pytest.mark.anyio


def _member(name: str, ledger: Ledger, received: list[str], *, left: bool,
            start: str | None = None) -> Member:
    member = Member(name, "room", [1], 0, stats=OpStats(), ledger=ledger,
                    http=httpx.AsyncClient(), pace=Pace(), ops_stopped=anyio.Event())
    member.joined, member.leaving, member.start = True, left, start
    member.received = list(received)
    return member


async def test_what_each_member_is_owed() -> None:
    ledger = Ledger()
    for i in ("01", "02", "03", "04"):
        ledger.add("room", i, "sender")
    members = [
        _member("stayed", ledger, ["01", "02", "03", "04"], left=False),
        _member("left-early", ledger, [], left=True),  # gone before anything was sent
        _member("left-late", ledger, ["01", "02"], left=True),  # owed up to 02
        _member("joined-late", ledger, ["03", "04"], left=False, start="02"),
    ]
    assert check_messages(members, ledger, 0.0).valid
    hole = _member("hole", ledger, ["01", "03"], left=True)  # 02 is below what it saw
    result = check_messages([hole], ledger, 0.0)
    assert (result.lost, result.valid) == (1, False)
    missing_end = _member("stayed-short", ledger, ["01", "02", "03"], left=False)
    assert check_messages([missing_end], ledger, 0.0).lost == 1
