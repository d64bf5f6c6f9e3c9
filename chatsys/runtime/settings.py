"""One typed settings object per process, built once from flags and ``CHATSYS_*`` variables.

Every option is declared once in :data:`OPTIONS`: its flag, type, default, help and the verbs
that take it. The same table builds each verb's ``argparse`` parser and reads the environment,
so a flag and its variable can never drift apart. A flag given on the command line wins over
the variable; nothing reads ``os.environ`` after :func:`load`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

A_VERBS = frozenset({"users", "chat"})
B_VERBS = frozenset({"files"})
GRPC_VERBS = A_VERBS | B_VERBS
GATEWAY_VERBS = frozenset({"gateway", "all"})
EVERY_VERB = GRPC_VERBS | GATEWAY_VERBS
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A setting has a value the process cannot run with."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0-65535")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text

    parse.__name__ = "choice"
    return parse


@dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    verbs: frozenset[str]
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "CHATSYS_" + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "0.0.0.0", "listen address", EVERY_VERB),
    Option("port", _port, None,
           "listen port: HTTP for gateway/all (8080), gRPC for users/chat (50051), files (50052)",
           EVERY_VERB),
    Option("metrics_port", _port, None,
           "Prometheus exposition port (9100 for A, 9101 for B; 0 picks a free one)", GRPC_VERBS),
    Option("data_dir", Path, Path("chatsys-data"), "where the embedded store and files live",
           GRPC_VERBS | {"all"}),
    Option("store", str, "",
           "A's store: sqlite:///path (default: under --data-dir), or redis://host:port/db "
           "for N stateless replicas of A", A_VERBS | {"all"}),
    Option("users_addr", str, "127.0.0.1:50051",
           "UserService: host:port[,host:port...] or dns:///name:port", {"gateway"}),
    Option("chat_addr", str, "127.0.0.1:50051",
           "ChatService: host:port[,host:port...] or dns:///name:port", {"gateway"}),
    Option("files_addr", str, "127.0.0.1:50052",
           "FileService: host:port[,host:port...] or dns:///name:port", {"gateway"}),
    Option("log_level", _choice(*LOG_LEVELS), "info", "log level", EVERY_VERB),
    Option("log_format", _choice("text", "json"), "text", "log format", EVERY_VERB),
    Option("server", _choice("granian", "hypercorn"), "granian", "HTTP server for the gateway",
           GATEWAY_VERBS),
    Option("workers", _positive_int, 1, "gateway processes sharing the port", GATEWAY_VERBS),
    Option("max_text_chars", _positive_int, 4000, "longest text message, in characters",
           GATEWAY_VERBS | A_VERBS),
    Option("max_frame_bytes", _positive_int, 64 * 1024, "largest WebSocket frame (close 1009)",
           GATEWAY_VERBS),
    Option("max_file_bytes", _positive_int, 10 * 1024 * 1024, "largest upload (413)",
           GATEWAY_VERBS | B_VERBS),
    Option("rate_limit", _positive_float, 20.0, "messages per second per connection",
           GATEWAY_VERBS),
    Option("rate_burst", _positive_int, 40, "burst allowance of the per-connection rate limit",
           GATEWAY_VERBS),
    Option("send_queue", _positive_int, 1024,
           "frames queued for one connection before it is closed as a slow consumer (1013)",
           GATEWAY_VERBS),
    Option("max_connections", _positive_int, 20000, "WebSocket connections per gateway (503)",
           GATEWAY_VERBS),
    Option("garbage_limit", _positive_int, 20,
           "bad frames in a row before a connection is closed (1008)", GATEWAY_VERBS),
    Option("history_limit", _positive_int, 50, "messages in a welcome without since",
           GATEWAY_VERBS | A_VERBS),
    Option("grpc_timeout", _positive_float, 5.0, "deadline of every gRPC call, seconds",
           GATEWAY_VERBS),
    Option("grpc_keepalive", _non_negative_float, 10.0,
           "seconds between HTTP/2 pings to each A/B endpoint; one unanswered for as long "
           "drops the connection, so a silently dead replica is left (0: off)", GATEWAY_VERBS),
    Option("session_ttl", _positive_float, 86400.0, "how long a session token stays valid, s",
           A_VERBS),
    Option("auth_secret", str, "",
           "HMAC key (16+ chars) for signed tokens any gateway verifies alone; prefer the env var",
           A_VERBS | {"gateway"}),
    Option("drain_timeout", _non_negative_float, 2.0,
           "on shutdown, seconds between readiness turning false and sockets closing", EVERY_VERB),
    Option("shutdown_grace", _positive_float, 10.0,
           "hard limit on a graceful shutdown, seconds", EVERY_VERB),
    Option("ready_file", str, "",
           "once listening, write the bound ports there as JSON (for --port 0)", EVERY_VERB),
)


@dataclass(frozen=True)
class Settings:
    """Everything a process is configured with. Built by :func:`load`, passed explicitly."""

    verbs: tuple[str, ...] = ("gateway",)
    host: str = "0.0.0.0"
    port: int = 8080
    metrics_port: int = 9100
    data_dir: Path = Path("chatsys-data")
    store: str = ""
    users_addr: str = "127.0.0.1:50051"
    chat_addr: str = "127.0.0.1:50051"
    files_addr: str = "127.0.0.1:50052"
    log_level: str = "info"
    log_format: str = "text"
    server: str = "granian"
    workers: int = 1
    max_text_chars: int = 4000
    max_frame_bytes: int = 64 * 1024
    max_file_bytes: int = 10 * 1024 * 1024
    rate_limit: float = 20.0
    rate_burst: int = 40
    send_queue: int = 1024
    max_connections: int = 20000
    garbage_limit: int = 20
    history_limit: int = 50
    grpc_timeout: float = 5.0
    grpc_keepalive: float = 10.0
    session_ttl: float = 86400.0
    auth_secret: str = field(default="", repr=False)
    drain_timeout: float = 2.0
    shutdown_grace: float = 10.0
    ready_file: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{(self.data_dir / 'chatsys.db').resolve()}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _default_port(verbs: Sequence[str]) -> int:
    if set(verbs) & GATEWAY_VERBS:
        return 8080
    return 50051 if set(verbs) & A_VERBS else 50052


def _default_metrics_port(verbs: Sequence[str]) -> int:
    return 9100 if set(verbs) & A_VERBS else 9101


def options_for(verbs: Sequence[str]) -> list[Option]:
    return [opt for opt in OPTIONS if opt.verbs & set(verbs)]


def add_arguments(parser: argparse.ArgumentParser, verbs: Sequence[str]) -> None:
    """Declare each option as a flag whose absence is visible (default None)."""
    for opt in options_for(verbs):
        default = opt.default if opt.default is not None else "per verb"
        parser.add_argument(
            opt.flag, dest=opt.name, default=None, metavar=opt.metavar or opt.name.upper(),
            help=f"{opt.help} [env {opt.env}; default {default}]",
        )


def load(verbs: Sequence[str], flags: Mapping[str, str | None],
         environ: Mapping[str, str] | None = None) -> Settings:
    """Merge flags over ``CHATSYS_*`` variables over defaults, validating every value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {"verbs": tuple(verbs)}
    for opt in options_for(verbs):
        raw = flags.get(opt.name)
        source = opt.flag
        if raw is None:
            raw, source = environ.get(opt.env), opt.env
        if raw is None:
            if opt.default is not None:
                values[opt.name] = opt.default
            continue
        try:
            values[opt.name] = opt.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{source}={raw!r}: {exc}") from None
    values.setdefault("port", _default_port(verbs))
    values.setdefault("metrics_port", _default_metrics_port(verbs))
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    if settings.store and not settings.store.startswith(("sqlite:///", "redis://")):
        raise SettingsError(f"--store={settings.store!r}: expected sqlite:///path or redis://")
    if settings.auth_secret and len(settings.auth_secret) < 16:
        raise SettingsError("CHATSYS_AUTH_SECRET must be at least 16 characters")
    if settings.rate_burst < 1:
        raise SettingsError("--rate-burst must be at least 1")
