"""components/monitoring and autoscale-connections: promtool checks, and every metric the
dashboard, the rules and the HPA query is one a running chatsys actually exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import grpc_services
from tests.gateway_support import start_gateway
from tests.kubernetes_support import KUSTOMIZE

pytestmark = pytest.mark.slow  # starts real processes

MONITORING = KUSTOMIZE / "components" / "monitoring"
ADAPTER_RULES = KUSTOMIZE / "components" / "autoscale-connections" / "adapter-rules.yaml"
HPA_CONNECTIONS = KUSTOMIZE / "components" / "autoscale-connections" / \
    "gateway-hpa-connections.yaml"
# From Kubernetes' own exporters, not from chatsys: kube-state-metrics (HPA replicas), cAdvisor,
# and Prometheus' synthetic `up`.
FOREIGN = re.compile(r"^(kube_|container_)|^up$")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "inf", "nan"}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is needed (Debian package `prometheus`; .ci/run installs it)"
    return path


def _families(text: str) -> set[str]:
    """Every series name an exposition can carry, from its ``# TYPE`` lines."""
    names: set[str] = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        name, kind = m.groups()
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {f"{name}_sum", f"{name}_count"}
    return names


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Metric names a running P, A and B expose (the three processes, as in the cluster)."""
    tmp = tmp_path_factory.mktemp("k8s-metrics")
    data = tmp / "data"
    data.mkdir()
    with grpc_services.start(["users", "chat"], data) as a, \
            grpc_services.start(["files"], data) as b, \
            start_gateway(a.port, b.port, tmp) as gw:
        yield (_families(_get(f"{gw.base}/metrics"))
               | _families(_get(f"http://127.0.0.1:{a.metrics_port}/metrics"))
               | _families(_get(f"http://127.0.0.1:{b.metrics_port}/metrics")))


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects (good enough for our own queries)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)                      # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                     # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word, rest = m.group(), expr[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function or aggregation
        if m.start() > 0 and (expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."):
            continue  # 1e3, 0.99
        names.add(word)
    return names


def test_metric_names_parser() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, kind) (rate(x_bucket{job="a",b=~"c"}[1m])))'
        ' / on (pod) group_left y > 0.1 and count by (c) (up == 1)') == {"x_bucket", "y", "up"}


def _rules() -> dict:
    return yaml.safe_load((MONITORING / "rules.yml").read_text())


def _recorded() -> dict[str, str]:
    return {r["record"]: r["expr"] for g in _rules()["groups"] for r in g["rules"]
            if "record" in r}


def _check_names(exprs: dict[str, str], exported: set[str]) -> None:
    recorded = _recorded()
    for where, expr in exprs.items():
        names = metric_names(expr)
        assert names, (where, expr)
        for name in names:
            if name in recorded or FOREIGN.search(name):
                continue
            assert name in exported, f"{where}: {name} is not exported by chatsys ({expr})"


def _dashboard() -> dict:
    return json.loads((MONITORING / "dashboards" / "chatsys.json").read_text())


def test_dashboard_panels_valid() -> None:
    dash = _dashboard()
    assert dash["uid"] == "chatsys" and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["type"] == "timeseries" and p["title"], p
        pos = p["gridPos"]
        assert 0 < pos["w"] <= 24 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, p["title"]
        assert p["datasource"]["uid"] == "prometheus"
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
    # The datasource the panels name is the one Grafana is provisioned with.
    ds = yaml.safe_load((MONITORING / "grafana-datasources.yaml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus"
    assert ds["datasources"][0]["url"] == "http://chatsys-prometheus:9090"


def test_dashboard_covers_the_lab() -> None:
    exprs = " ".join(t["expr"] for p in _dashboard()["panels"] for t in p["targets"])
    for metric in ["chatsys_ws_connections", "chatsys_ws_connect_seconds_bucket",
                   "chatsys_messages_total", "chatsys_message_ack_seconds_bucket",
                   "chatsys_fanout_deliveries_total", "grpc_server_handled_total",
                   "grpc_server_handling_seconds_bucket", "process_cpu_seconds_total",
                   "process_resident_memory_bytes",
                   "kube_horizontalpodautoscaler_status_current_replicas"]:
        assert metric in exprs, metric
    assert "grpc_method" in exprs and "component" in exprs  # per module and method
    assert "by (pod)" in exprs                               # per pod


def test_dashboard_queries_only_exported_metrics(exported: set[str]) -> None:
    exprs = {f"panel {p['title']!r} {t['refId']}": t["expr"]
             for p in _dashboard()["panels"] for t in p["targets"]}
    _check_names(exprs, exported)


def test_rules_query_only_exported_metrics(exported: set[str]) -> None:
    exprs = {r.get("record") or r["alert"]: r["expr"]
             for g in _rules()["groups"] for r in g["rules"]}
    _check_names(exprs, exported)


def test_hpa_and_adapter_metrics_exported(exported: set[str]) -> None:
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]
    for rule in rules:
        _check_names({"adapter seriesQuery": rule["seriesQuery"]}, exported)
    hpa = yaml.safe_load(HPA_CONNECTIONS.read_text())
    served = {r["name"]["as"] for r in rules}
    for m in hpa["spec"]["metrics"]:
        if m["type"] == "Pods":
            name = m["pods"]["metric"]["name"]
            assert name in served and name in exported


def test_promtool_rules() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(MONITORING / "rules.yml")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_config(tmp_path: Path) -> None:
    config = MONITORING / "prometheus.yml"
    out = subprocess.run([promtool(), "check", "config", str(config)],
                         capture_output=True, text=True, timeout=60, check=False)
    if "field kubernetes_sd_configs not found" in out.stdout + out.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check everything else with the
        # discovery swapped for a static target (relabelling, rule files, jobs), and the
        # discovery block itself here.
        doc = yaml.safe_load(config.read_text())
        for job in doc["scrape_configs"]:
            for sd in job.pop("kubernetes_sd_configs", []):
                assert sd["role"] == "pod"
                assert sd["namespaces"] == {"own_namespace": True}
                job["static_configs"] = [{"targets": ["10.0.0.1:8080"]}]
        shutil.copy(MONITORING / "rules.yml", tmp_path / "rules.yml")
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(doc))
        out = subprocess.run([promtool(), "check", "config", str(config)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr
