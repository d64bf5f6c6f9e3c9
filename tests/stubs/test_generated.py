"""The committed stubs must be exactly what ``tools/genproto.py`` generates from ``proto/``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "chatsys" / "stubs"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_stubs_are_fresh(tmp_path: Path) -> None:
    out = tmp_path / "stubs"
    subprocess.run([sys.executable, str(ROOT / "tools" / "genproto.py"), "--out", str(out)],
                   check=True, cwd=ROOT, timeout=120)
    fresh, committed = _files(out), _files(STUBS)
    assert sorted(fresh) == sorted(committed), "stub file set differs: run tools/genproto.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale stubs {stale}: run python tools/genproto.py"
