"""``DIR/study.json``: which of a study's runs are done, so that re-running the study resumes.

A run is recorded ``running`` before it starts and ``complete`` only after the lab runner
returned success with the run's ``run.json`` and ``report.md`` on disk; anything else (Ctrl-C,
a crash, a reboot, a run that failed) is redone from scratch by the next invocation. The file
is replaced atomically (write, fsync, rename), so a crash leaves the old state or the new one,
never half of one. The study's settings are stored too: resuming with other settings would mix
two studies in one report, so it is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "study.json"
LOCK_FILE = "study.lock"
RUNNING, COMPLETE, FAILED = "running", "complete", "failed"
DONE_FILES = ("run.json", "report.md")


class StudyStateError(ValueError):
    """The directory holds another study (other settings) or an unreadable state file."""


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """One study per directory at a time: a second invocation while the first still runs would
    delete the run the first is writing. The lock dies with its process (a crash frees it)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / LOCK_FILE).open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyStateError(f"another study is running in {out}") from None
        yield


def run_is_written(run_dir: Path) -> bool:
    """The run's data and report are on disk and the runner did not mark it interrupted."""
    if not all((run_dir / name).is_file() for name in DONE_FILES):
        return False
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return not meta.get("interrupted")


@dataclass
class StudyState:
    path: Path
    settings: dict[str, Any]
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None

    @classmethod
    def open(cls, out: Path, settings: dict[str, Any]) -> StudyState:
        """The state in ``out`` (new if none); refuses one written with other settings."""
        path = out / STATE_FILE
        if not path.exists():
            return cls(path, settings)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StudyStateError(
                f"{path} is not readable ({exc}): remove it to start over") from None
        if stored.get("settings") != settings:
            changed = sorted(k for k in {*settings, *stored.get("settings", {})}
                             if settings.get(k) != stored.get("settings", {}).get(k))
            raise StudyStateError(
                f"{out} holds a study with other settings ({', '.join(changed)}): give another "
                "--out, or the same flags as before to resume it")
        return cls(path, settings, stored.get("runs", {}), stored.get("calibration"))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump({"settings": self.settings, "calibration": self.calibration,
                       "runs": self.runs}, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def is_complete(self, key: str, run_dir: Path) -> bool:
        """Recorded complete, and its files are still there (a deleted run is redone)."""
        return self.runs.get(key, {}).get("status") == COMPLETE and run_is_written(run_dir)

    def started(self, key: str) -> None:
        previous = self.runs.get(key, {})
        self.runs[key] = {"status": RUNNING, "started": time.time(),
                          "attempts": int(previous.get("attempts", 0)) + 1}
        self.save()

    def finished(self, key: str, exit_code: int, run_dir: Path, **facts: Any) -> str:
        """Record how the run ended; returns its status."""
        ok = exit_code == 0 and run_is_written(run_dir)
        status = COMPLETE if ok else (RUNNING if exit_code == 130 else FAILED)
        self.runs[key] = {**self.runs.get(key, {}), "status": status, "exit": exit_code,
                          "ended": time.time(), **facts}
        self.save()
        return status

    def status(self, key: str) -> str | None:
        return self.runs.get(key, {}).get("status")
