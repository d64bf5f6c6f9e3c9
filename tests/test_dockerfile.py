"""The Dockerfile, checked offline (no Docker engine here): what it copies exists, it installs
the package without the lab, it runs as a non-root user, and its entrypoint runs a real chatsys
verb."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

from tests.kubernetes_support import ROOT, build_tree, container


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, op: str) -> str | None:
        found = [arg for o, arg in self.instructions if o == op]
        return found[-1] if found else None


def _stages() -> list[Stage]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # line continuations
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        elif op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            parent = next((s for s in stages if s.name == base), None)
            stage = Stage(name, base, list(parent.instructions) if parent else [])
            stages.append(stage)
        else:
            stages[-1].instructions.append((op, rest))
    return stages


def _exec_form(arg: str) -> list[str]:
    value = json.loads(arg)
    assert isinstance(value, list), f"use the exec form: {arg}"
    return value


def test_dockerfile_copies_only_existing_paths() -> None:
    copies = [arg for s in _stages() for op, arg in s.instructions if op in ("COPY", "ADD")]
    assert copies
    for arg in set(copies):
        parts = [p for p in shlex.split(arg) if not p.startswith("--")]
        if "--from=" in arg:
            continue
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: no such path"
    # .dockerignore must not hide what is copied.
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for src in ("pyproject.toml", "README.md", "chatsys/"):
        assert f"!{src}" in ignore, src


def test_dockerfile_installs_the_package_non_root() -> None:
    stages = {s.name: s for s in _stages()}
    final = _stages()[-1]
    for stage in (final, stages["runtime"]):
        runs = " ".join(arg for op, arg in stage.instructions if op == "RUN")
        assert re.search(r"pip install .*\bchatsys\b", runs), "the package is installed"
        assert "apt-get install" not in runs, "no build tools in the runtime image"
        user = stage.last("USER")
        assert user and user.split(":")[0] not in ("0", "root"), "runs as non-root"
        assert user.split(":")[0].isdigit(), "numeric USER, so runAsNonRoot can verify it"
    assert stages["runtime"].base.startswith("python:") and "slim" in stages["runtime"].base
    # The manifests run as that same user.
    uid = int(stages["runtime"].last("USER").split(":")[0])
    for d in build_tree("base"):
        if d["kind"] == "Deployment":
            assert d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


def test_dockerfile_entrypoint_is_a_chatsys_verb() -> None:
    final = _stages()[-1]
    entrypoint = _exec_form(final.last("ENTRYPOINT"))
    cmd = _exec_form(final.last("CMD"))
    assert entrypoint == ["chatsys"]
    # The console script `chatsys` is `python -m chatsys`; the default command must parse.
    out = subprocess.run([sys.executable, "-m", "chatsys", *cmd, "--help"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    # And so must every verb the manifests pass as args.
    for d in build_tree("base"):
        if d["kind"] == "Deployment":
            args = container(d)["args"]
            out = subprocess.run([sys.executable, "-m", "chatsys", *args, "--help"],
                                 capture_output=True, text=True, timeout=60, check=False)
            assert out.returncode == 0, (args, out.stderr)


def test_loadtest_stage_runs_locust() -> None:
    stages = {s.name: s for s in _stages()}
    loadtest = stages["loadtest"]
    assert _exec_form(loadtest.last("ENTRYPOINT")) == ["locust"]
    runs = " ".join(arg for op, arg in loadtest.instructions if op == "RUN")
    assert "chatsys[load]" in runs
    assert loadtest.last("USER").split(":")[0] != "0"


def test_the_image_is_the_product_without_the_lab() -> None:
    """The build context leaves chatsys/lab out, and the runtime installs no extra (the lab's
    tools come only with the `lab` extra, never in the image).

    .dockerignore is read with Docker's rule: the last pattern that matches a path decides,
    and a pattern that matches a directory matches everything under it."""
    stages = {s.name: s for s in _stages()}
    for stage in (stages["runtime"], _stages()[-1]):
        runs = " ".join(arg for op, arg in stage.instructions if op == "RUN")
        assert re.search(r"pip install [^&]*\bchatsys(\s|$)", runs), "no extra in the runtime"
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        verdict = False
        for pattern in patterns:
            exclude = not pattern.startswith("!")
            regex = re.escape(pattern.lstrip("!").rstrip("/"))
            regex = regex.replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
            if any(re.fullmatch(regex, prefix) for prefix in prefixes):
                verdict = exclude
        return verdict

    assert ignored("chatsys/lab/plots.py") and ignored("chatsys/lab/__init__.py")
    assert ignored("bench/run.py") and ignored("locustfiles/chat.py")
    for kept in ("pyproject.toml", "README.md", "chatsys/cli.py", "chatsys/gateway/app.py",
                 "chatsys/gateway/static/index.html"):
        assert (ROOT / kept).exists(), kept
        assert not ignored(kept), kept
