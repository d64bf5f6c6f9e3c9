"""Locustfile for lab runs against several gateways: ``ChatUser``, users spread round-robin.

Locust has one ``--host``; a local topology with N gateways has N addresses and no load
balancer in front. This file reuses ``locustfiles/chat.py`` unchanged and pins each new user to
the next gateway of ``CHATSYS_LAB_HOSTS`` (a comma list), the way a Service spreads connections.
With ``CHATSYS_LAB_SHAPE=stress`` it also exposes the stepped shape of ``locustfiles/stress.py``.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("CHATSYS_LAB_LOCUSTFILES",
                                  str(Path(__file__).resolve().parents[2] / "locustfiles")))

import chat  # the project's locustfile, found through the path above

HOSTS = [h for h in os.environ.get("CHATSYS_LAB_HOSTS", "").split(",") if h]
_turn = itertools.count()

if os.environ.get("CHATSYS_LAB_SHAPE") == "stress":
    from stress import StressShape  # noqa: F401  (Locust finds the shape here)


class SpreadChatUser(chat.ChatUser):
    """A ``ChatUser`` whose HTTP and WebSocket host is the next gateway in turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if HOSTS:
            self.host = HOSTS[next(_turn) % len(HOSTS)]
        super().__init__(*args, **kwargs)
