"""Regenerate the gRPC stubs in ``chatsys/stubs`` from ``proto/``.

The one documented command (run from the repository root, with the ``test`` extra installed)::

    python tools/genproto.py

``--out DIR`` writes somewhere else instead; the stale-stub test uses it to compare a fresh
generation with what is committed.

Besides betterproto2's package, the protos on the chat message and join paths (``UPB_PROTOS``)
also get Google's ``_pb2`` modules, beside their betterproto2 package: every chat message (and
every join's session) is encoded and decoded between the gateway and A, and betterproto2 does
that in pure Python, far slower than the upb runtime (``python -m bench.codec``; the figures
are in docs/performance.md, "Figures behind design choices"). Both read the same wire format,
so either side of a call may use either. The ``protobuf`` runtime must be at least the
version the pinned ``grpcio-tools`` writes into the ``_pb2`` header.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
STUBS_DIR = ROOT / "chatsys" / "stubs"
MARKER = "README.md"
MARKER_TEXT = """# GENERATED CODE — DO NOT EDIT

Everything in this package is generated from the `.proto` files under `proto/`: by betterproto2
(the packages), and by protoc's Python generator (the `_pb2` modules of the chat message path).
Regenerate with `python tools/genproto.py`; a test fails when these files are stale.
"""
OPTIONS = "client_generation=async,server_generation=async,google_protobuf_descriptors"
UPB_PROTOS = ["chatsys/chat/v1/chat.proto", "chatsys/users/v1/users.proto"]


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))


def generate(out: Path) -> None:
    """Run protoc with the betterproto2 plugin (it lives beside this interpreter), then with
    the Python generator for ``UPB_PROTOS``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable, "-m", "grpc_tools.protoc", "-I", str(PROTO_DIR),
                f"--python_betterproto2_out={tmp}", f"--python_betterproto2_opt={OPTIONS}",
                *proto_files(),
            ],
            check=True, cwd=PROTO_DIR, env=env, stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "-I", str(PROTO_DIR),
             f"--python_out={tmp}", f"--pyi_out={tmp}", *UPB_PROTOS],
            check=True, cwd=PROTO_DIR, stdout=subprocess.DEVNULL,
        )
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp, out)
    (out / MARKER).write_text(MARKER_TEXT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=STUBS_DIR, help="output package directory")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
