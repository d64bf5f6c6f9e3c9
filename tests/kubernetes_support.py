"""Building the kustomize trees offline for the Kubernetes tests (kubectl kustomize, no cluster)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZE = ROOT / "kustomize"
LOCUSTFILE = ROOT / "locustfiles" / "chat.py"
COMPONENTS = ["redis", "monitoring", "loadtest", "autoscale-connections"]
# kubernetes-validate schema version the manifests must satisfy (strict: no unknown fields).
K8S_VERSION = "1.30.0"

Doc = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    assert path, "kubectl (with its built-in kustomize) is needed to build kustomize/"
    return path


def build(directory: Path) -> list[Doc]:
    """``kubectl kustomize`` exactly as docs/kubernetes.md tells users to run it."""
    out = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(directory)],
        capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, f"kustomize build {directory} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@functools.cache
def build_tree(rel: str) -> tuple[Doc, ...]:
    """A directory under kustomize/, built once per test session."""
    return tuple(build(KUSTOMIZE / rel))


@functools.cache
def build_with_components(resource: str, *components: str) -> tuple[Doc, ...]:
    """A throwaway overlay: ``resource`` (under kustomize/) plus ``components``."""
    with tempfile.TemporaryDirectory() as tmp:
        def rel(p: str) -> str:
            return os.path.relpath(KUSTOMIZE / p, tmp)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": "chatsys",
            "resources": [rel(resource)],
            "components": [rel(f"components/{c}") for c in components],
        }
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return tuple(build(Path(tmp)))


def find(docs: tuple[Doc, ...] | list[Doc], kind: str, name: str) -> Doc:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"no {kind}/{name} in the build")


def has(docs: tuple[Doc, ...] | list[Doc], kind: str, name: str) -> bool:
    return any(d["kind"] == kind and d["metadata"]["name"] == name for d in docs)


def container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env(deployment: Doc) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(deployment).get("env", [])}
