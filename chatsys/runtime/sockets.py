"""Listening sockets shared by sibling processes: the gateway's ``--workers`` and the lab's
elastic gateways (one port, the kernel balancing their listeners)."""

from __future__ import annotations

import socket


def shared_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: a free one) that sibling workers can bind too
    (SO_REUSEPORT: the kernel balances their listeners); not listening yet."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock
