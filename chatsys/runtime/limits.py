"""The open-files limit of a chatsys process.

Every WebSocket, gRPC connection, upload and log file is an open file, and the soft limit many
shells and service managers hand out (1,024) is far below what a gateway is built to hold
(``--max-connections``, 20,000 by default): past it, accepting a socket fails with EMFILE instead
of the gateway's clear 503. Each process raises its soft limit to the hard one when it starts, as
Go's runtime and nginx's ``worker_rlimit_nofile`` do. The hard limit stays the operator's
(``ulimit -Hn``, systemd's ``LimitNOFILE``, the container runtime's ``nofile``).
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("chatsys.runtime.limits")
# Files a process holds besides its clients' sockets: listeners, gRPC channels, logs, uploads.
RESERVED_FILES = 256


def raise_open_files() -> int:
    """Raise the soft open-files limit to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or hard == resource.RLIM_INFINITY:  # infinity: the kernel refuses it
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard



def sockets_allowed(open_files: int | None = None) -> int | None:
    """Client sockets a process may hold within ``open_files`` (default: its soft limit now),
    keeping :data:`RESERVED_FILES` for its own; None when there is no limit."""
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if open_files == resource.RLIM_INFINITY:
        return None
    return max(0, open_files - RESERVED_FILES)
