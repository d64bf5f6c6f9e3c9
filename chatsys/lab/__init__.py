"""The performance lab: run a load scenario end to end and write a report that names the bottleneck.

``chatsys lab run SCENARIO --out DIR`` starts a local topology (or targets a cluster), drives it
with real Locust, records every process's metrics once a second (or reads them back from a
Prometheus server), and writes the raw data plus ``report.md`` with its plots into ``DIR``.
``chatsys lab report DIR [DIR...]`` rebuilds the report, and compares several runs side by side.

The lab is an extra (``pip install 'chatsys[lab]'``): the product installs without the modules
below, so this package imports none of them until a lab command runs.
"""

from __future__ import annotations

from importlib.util import find_spec

# Import name -> distribution, for every module of the lab extra the lab itself needs.
REQUIRES = {"matplotlib": "matplotlib", "numpy": "numpy", "psutil": "psutil", "locust": "locust",
            "websocket": "websocket-client", "yaml": "pyyaml"}


def missing_requirements() -> list[str]:
    """Distributions of the lab extra that are not installed (looked up, not imported)."""
    return [dist for module, dist in REQUIRES.items() if find_spec(module) is None]
