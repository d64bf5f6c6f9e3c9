"""``chatsys VERB [VERB...] [flags]``: parse the command, build settings, start the component."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.util import find_spec

from chatsys.runtime import logs
from chatsys.runtime.limits import raise_open_files
from chatsys.runtime.settings import GRPC_VERBS, Settings, SettingsError, add_arguments, load

VERBS = {
    "gateway": "P: the WebSocket/HTTP gateway (Quart on Granian or Hypercorn)",
    "users": "A: UserService (sessions and tokens); combine with 'chat'",
    "chat": "A: ChatService (room history and fan-out); combine with 'users'",
    "files": "B: FileService (durable uploads)",
    "all": "P, A and B as separate processes on this machine",
    "lab": "the performance lab, an extra: 'lab run SCENARIO --out DIR', 'lab report DIR...', "
           "'lab study --out DIR', 'lab plan RUN... --users N'",
}
LAB_HINT = "pip install 'chatsys[lab]'"
USAGE = "chatsys {gateway | users [chat] | chat | files [...] | all | lab} [flags]"


def _top_help() -> str:
    lines = [f"usage: {USAGE}", "", "A real-time chat backend built from gRPC microservices.", "",
             "verbs:"]
    lines += [f"  {verb:<9} {text}" for verb, text in VERBS.items()]
    lines += ["", "'chatsys VERB --help' lists every flag; each flag has a CHATSYS_<NAME> "
              "environment variable (the flag wins)."]
    return "\n".join(lines)


def split_verbs(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Leading verbs and the flags after them; several of users/chat/files may be combined."""
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        raise SystemExit(0 if argv else 2)
    first = argv[0]
    if first not in VERBS:
        print(f"chatsys: unknown verb {first!r}\n\n{_top_help()}", file=sys.stderr)
        raise SystemExit(2)
    verbs = [first]
    rest = list(argv[1:])
    if first in GRPC_VERBS:
        while rest and rest[0] in GRPC_VERBS:
            if rest[0] not in verbs:
                verbs.append(rest[0])
            rest.pop(0)
    return verbs, rest


def parse(argv: Sequence[str]) -> Settings:
    verbs, rest = split_verbs(argv)
    parser = argparse.ArgumentParser(
        prog=f"chatsys {' '.join(verbs)}",
        description="; ".join(VERBS[v] for v in verbs),
    )
    add_arguments(parser, verbs)
    flags = vars(parser.parse_args(rest))
    try:
        return load(verbs, flags)
    except SettingsError as exc:
        parser.error(str(exc))


def run_lab(argv: Sequence[str]) -> int:
    """The lab has subcommands and flags of its own, not a process's Settings. It is an extra:
    imported only here, and refused with the install line when its dependencies are missing."""
    if find_spec("chatsys.lab") is None:  # an install that leaves its code out: the image
        missing = ["chatsys.lab"]
    else:
        from chatsys.lab import missing_requirements

        missing = missing_requirements()
    if missing:
        print(f"chatsys lab: the lab is an extra and this installation lacks {', '.join(missing)}:"
              f" {LAB_HINT} (from a source checkout: pip install '.[lab]')", file=sys.stderr)
        return 1
    from chatsys.lab.cli import main as lab_main

    return lab_main(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "lab":
        raise SystemExit(run_lab(args[1:]))
    settings = parse(args)
    component = "+".join(settings.verbs)
    logs.configure(settings.log_level, settings.log_format, component)
    raise_open_files()
    verb = settings.verbs[0]
    if verb == "gateway":
        from chatsys.gateway.main import run
    elif verb == "all":
        from chatsys.allinone import run
    else:
        from chatsys.services import run
    run(settings)
