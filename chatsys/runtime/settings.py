"""One typed settings object per process, built once from flags and ``CHATSYS_*`` variables.

Every option is declared once, as a field of :class:`Settings` made by :func:`option`: its
type, parser, default, help and the verbs that take it. :data:`OPTIONS` reads that table back;
it builds each verb's ``argparse`` parser and reads the environment, so a flag, its variable and
the dataclass can never drift apart. A flag given on the command line wins over
the variable; nothing reads ``os.environ`` after :func:`load`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
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


def _port_or_off(text: str) -> int:
    value = int(text)
    if not -1 <= value <= 65535:
        raise ValueError("must be a port number 0-65535, or -1 (off)")
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
class PerVerb:
    """A default that depends on the verbs the process runs (its ports)."""

    pick: Callable[[Sequence[str]], Any]


def _default_port(verbs: Sequence[str]) -> int:
    if set(verbs) & GATEWAY_VERBS:
        return 8080
    return 50051 if set(verbs) & A_VERBS else 50052


def _default_metrics_port(verbs: Sequence[str]) -> int:
    return 9100 if set(verbs) & A_VERBS else 9101


DEFAULT_VERBS = ("gateway",)


@dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[str], Any]
    default: Any  # a value, or a PerVerb
    help: str
    verbs: frozenset[str]
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "CHATSYS_" + self.name.upper()


def option(parse: Callable[[str], Any], default: Any, help: str, verbs: Iterable[str], *,
           metavar: str | None = None, secret: bool = False) -> Any:
    """A :class:`Settings` field that is also a flag and a variable: one row of the table.

    The field name is the option's name; ``default`` is the field's default too (for a
    :class:`PerVerb`, the one of :data:`DEFAULT_VERBS`), so it is written here only.
    """
    value = default.pick(DEFAULT_VERBS) if isinstance(default, PerVerb) else default
    row = (parse, default, help, frozenset(verbs), metavar)
    return field(default=value, repr=not secret, metadata={"option": row})


@dataclass(frozen=True)
class Settings:
    """Everything a process is configured with. Built by :func:`load`, passed explicitly.

    Each field below ``verbs`` is one option: ``option(parse, default, help, verbs)``.
    """

    verbs: tuple[str, ...] = DEFAULT_VERBS
    host: str = option(str, "0.0.0.0", "listen address", EVERY_VERB)
    port: int = option(
        _port, PerVerb(_default_port),
        "listen port: HTTP for gateway/all (8080), gRPC for users/chat (50051), files (50052)",
        EVERY_VERB)
    metrics_port: int = option(
        _port, PerVerb(_default_metrics_port),
        "Prometheus exposition port (9100 for A, 9101 for B; 0 picks a free one)", GRPC_VERBS)
    own_metrics_port: int = option(
        _port_or_off, -1,
        "also serve /metrics on a port of this process alone, for gateways that share --port "
        "(0 picks a free one; -1: off)", {"gateway"})
    data_dir: Path = option(Path, Path("chatsys-data"), "where the embedded store and files live",
                            GRPC_VERBS | {"all"})
    store: str = option(
        str, "",
        "A's store: sqlite:///path (default: under --data-dir), or redis://host:port/db "
        "for N stateless replicas of A", A_VERBS | {"all"})
    users_addr: str = option(str, "127.0.0.1:50051",
                             "UserService: host:port[,host:port...] or dns:///name:port",
                             {"gateway"})
    chat_addr: str = option(str, "127.0.0.1:50051",
                            "ChatService: host:port[,host:port...] or dns:///name:port",
                            {"gateway"})
    files_addr: str = option(str, "127.0.0.1:50052",
                             "FileService: host:port[,host:port...] or dns:///name:port",
                             {"gateway"})
    log_level: str = option(_choice(*LOG_LEVELS), "info", "log level", EVERY_VERB)
    log_format: str = option(_choice("text", "json"), "text", "log format", EVERY_VERB)
    server: str = option(_choice("granian", "hypercorn"), "granian",
                         "HTTP server for the gateway", GATEWAY_VERBS)
    workers: int = option(_positive_int, 1, "gateway processes sharing the port", GATEWAY_VERBS)
    max_text_chars: int = option(_positive_int, 4000, "longest text message, in characters",
                                 GATEWAY_VERBS | A_VERBS)
    max_frame_bytes: int = option(_positive_int, 64 * 1024,
                                  "largest WebSocket frame (close 1009)", GATEWAY_VERBS)
    max_file_bytes: int = option(_positive_int, 10 * 1024 * 1024, "largest upload (413)",
                                 GATEWAY_VERBS | B_VERBS)
    rate_limit: float = option(_positive_float, 20.0, "messages per second per connection",
                               GATEWAY_VERBS)
    rate_burst: int = option(_positive_int, 40,
                             "burst allowance of the per-connection rate limit", GATEWAY_VERBS)
    send_queue: int = option(
        _positive_int, 1024,
        "frames queued for one connection before it is closed as a slow consumer (1013)",
        GATEWAY_VERBS)
    max_connections: int = option(_positive_int, 20000,
                                  "WebSocket connections per gateway (503)", GATEWAY_VERBS)
    max_pending_joins: int = option(
        _positive_int, 256,
        "upgrades per gateway between validation and accept (waiting on A); beyond it 503",
        GATEWAY_VERBS)
    garbage_limit: int = option(_positive_int, 20,
                                "bad frames in a row before a connection is closed (1008)",
                                GATEWAY_VERBS)
    history_limit: int = option(_positive_int, 50, "messages in a welcome without since",
                                GATEWAY_VERBS | A_VERBS)
    keep_alive_timeout: float = option(
        _positive_float, 75.0,
        "seconds an idle HTTP/1.1 keep-alive connection stays open; keep it above the idle "
        "timeout of every client and proxy that pools connections to the gateway", GATEWAY_VERBS)
    grpc_timeout: float = option(_positive_float, 5.0, "deadline of every gRPC call, seconds",
                                 GATEWAY_VERBS)
    grpc_keepalive: float = option(
        _non_negative_float, 10.0,
        "seconds between HTTP/2 pings to each A/B endpoint; one unanswered for as long "
        "drops the connection, so a silently dead replica is left (0: off)", GATEWAY_VERBS)
    session_ttl: float = option(_positive_float, 86400.0,
                                "how long a session token stays valid, s", A_VERBS)
    auth_secret: str = option(
        str, "",
        "HMAC key (16+ chars) for signed tokens any gateway verifies alone; prefer the env var",
        A_VERBS | {"gateway"}, secret=True)
    drain_timeout: float = option(
        _non_negative_float, 2.0,
        "on shutdown, seconds between readiness turning false and sockets closing", EVERY_VERB)
    shutdown_grace: float = option(_positive_float, 10.0,
                                   "hard limit on a graceful shutdown, seconds", EVERY_VERB)
    ready_file: str = option(
        str, "", "once listening, write the bound ports there as JSON (for --port 0)", EVERY_VERB)

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{(self.data_dir / 'chatsys.db').resolve()}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


OPTIONS: tuple[Option, ...] = tuple(
    Option(f.name, *f.metadata["option"]) for f in dataclasses.fields(Settings)
    if "option" in f.metadata)


def options_for(verbs: Sequence[str]) -> list[Option]:
    return [opt for opt in OPTIONS if opt.verbs & set(verbs)]


def add_arguments(parser: argparse.ArgumentParser, verbs: Sequence[str]) -> None:
    """Declare each option as a flag whose absence is visible (default None)."""
    for opt in options_for(verbs):
        default = "per verb" if isinstance(opt.default, PerVerb) else opt.default
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
            if isinstance(opt.default, PerVerb):
                values[opt.name] = opt.default.pick(verbs)
            continue  # the field's default
        try:
            values[opt.name] = opt.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{source}={raw!r}: {exc}") from None
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
