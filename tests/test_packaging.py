"""The product installs without its tools: ``pip install chatsys`` (no extras) serves P, A and B,
the lab comes with the ``lab`` extra, and every import is declared in pyproject.toml, in the
group of whoever imports it."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import anyio
import pytest

from chatsys.runtime import ready
from tests.chat_client import ChatClient
from tests.support import http_ok, running_command

ROOT = Path(__file__).resolve().parents[1]
# What the lab's extras bring; none of it may be imported by the product.
TOOLS = ("matplotlib", "psutil", "locust", "websocket", "gevent", "websockets", "picows")
LAB_HINT = "pip install 'chatsys[lab]'"
# Which dependency groups may satisfy the imports of each tree (extras include their own
# chatsys[...] references).
GROUPS = {
    "chatsys": ["core"],
    "chatsys/lab": ["core", "lab"],
    "chaos": ["core", "lab"],
    "locustfiles": ["load"],
    "bench": ["core", "bench"],
    "tests": ["core", "test"],
    "tools": ["core", "test"],
}
# The project's own trees, and the locustfiles, which Locust (and the lab's locustfile) import by
# their file names.
LOCAL = {"chatsys", "tests", "bench", "chaos", "locustfiles", "tools",
         *(p.stem for p in (ROOT / "locustfiles").glob("*.py"))}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> tuple[str, list[str]]:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", spec)
    assert match, spec
    extras = [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
    return _normal(match.group(1)), extras


def _declared(groups: list[str]) -> set[str]:
    """Distributions a group brings by declaration, following chatsys[extra] references."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    table = {"core": project["dependencies"], **project["optional-dependencies"]}
    names: set[str] = set()
    todo, seen = list(groups), set()
    while todo:
        group = todo.pop()
        if group in seen:
            continue
        seen.add(group)
        for spec in table[group]:
            name, extras = _requirement_name(spec)
            if name == "chatsys":
                todo += ["core", *extras]
            else:
                names.add(name)
                names.update(f"{name}[{e}]" for e in extras)
    return names


def _python_files(tree: str) -> Iterator[Path]:
    for path in sorted((ROOT / tree).rglob("*.py")):
        relative = path.relative_to(ROOT)
        if "stubs" in relative.parts:
            continue  # generated; its imports are protobuf's and betterproto2's
        if tree == "chatsys" and relative.parts[:2] == ("chatsys", "lab"):
            continue
        yield path


def _top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("tree", list(GROUPS))
def test_every_import_is_declared_in_its_group(tree: str) -> None:
    declared = _declared(GROUPS[tree])
    providers = packages_distributions()
    undeclared = []
    for path in _python_files(tree):
        for module in _top_level_imports(path) - LOCAL - set(sys.stdlib_module_names):
            dists = {_normal(d) for d in providers.get(module, [])}
            if not dists & declared:
                undeclared.append(f"{path.relative_to(ROOT)}: {module} ({', '.join(dists)})")
    assert not undeclared, f"imports not declared for {tree}: {undeclared}"


def test_the_product_imports_none_of_the_tools() -> None:
    """Every module outside chatsys/lab is importable without the lab's extras: none of them
    imports a tool when it is imported (the lab's own modules are imported lazily by cli)."""
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in _python_files("chatsys") if p.name != "__main__.py")
    script = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
              + f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(TOOLS)!r}))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def _source_copy(dest: Path) -> Path:
    """What ``pip install <checkout>`` builds from, copied so the build leaves no build/ or
    egg-info in the checkout."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "chatsys", dest / "chatsys",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pip_install_without_extras_serves_and_refuses_the_lab(tmp_path: Path) -> None:
    """A fresh venv (no system site-packages), ``pip install`` of the checkout without extras:
    no tool is importable, ``chatsys all`` is ready and chats, ``chatsys lab`` names the extra.

    Every command runs outside the checkout and without PYTHONPATH, so it can only use what
    pip installed."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = str(env_dir / "bin" / "python")
    (tmp_path / "src").mkdir()
    source = _source_copy(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=480, check=check)

    run(python, "-m", "pip", "install", "--quiet", str(source))
    probe = ("import chatsys, importlib.util as u; print(chatsys.__file__); "
             f"print([m for m in {TOOLS!r} if u.find_spec(m)])")
    where, tools = run(python, "-c", probe).stdout.splitlines()
    assert where.startswith(str(env_dir)), where
    assert tools == "[]", tools

    ready_file = tmp_path / "all.ready.json"
    command = ["env", "-u", "PYTHONPATH", f"--chdir={tmp_path}", python, "-m", "chatsys", "all",
               "--host", "127.0.0.1", "--port", "0", "--ready-file", str(ready_file),
               "--data-dir", str(tmp_path / "data")]

    def serving(_: object) -> bool:
        ports = ready.read(ready_file)
        return ports is not None and http_ok(f"http://127.0.0.1:{ports.port}/readyz")

    with running_command(command, serving, name="installed-all", timeout=90,
                         log_dir=tmp_path) as proc:
        ports = ready.read(ready_file)
        assert ports is not None
        anyio.run(_join_round_trip, ports.port)
        proc.signal(15)
        assert proc.wait(timeout=30) == 0, proc.output()

    lab = run(str(env_dir / "bin" / "chatsys"), "lab", "report", str(tmp_path), check=False)
    assert lab.returncode == 1, lab
    assert LAB_HINT in lab.stderr and "matplotlib" in lab.stderr, lab.stderr
    assert "Traceback" not in lab.stderr


async def _join_round_trip(port: int) -> None:
    client = await ChatClient.connect(port, "ada", "packaging")
    try:
        ref = await client.send_text("installed without extras")
        assert (await client.ack_or_error(ref))["type"] == "ack"
        [message] = await client.messages(1)
        assert message["text"] == "installed without extras"
    finally:
        await client.close()
