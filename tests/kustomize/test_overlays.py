"""kustomize/: every tree builds, every object validates offline, and the properties hold."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest

from tests.kubernetes_support import (
    COMPONENTS,
    K8S_VERSION,
    KUSTOMIZE,
    LOCUSTFILE,
    Doc,
    build_tree,
    build_with_components,
    container,
    env,
    find,
    has,
)

TREES = ["base", "overlays/hpa", "overlays/scaled"]
SERVICES = ["chatsys-gateway", "chatsys-chat", "chatsys-files"]


@pytest.fixture
def locustfile() -> None:
    """The loadtest component packs locustfiles/chat.py; it is written under its own issue."""
    if not LOCUSTFILE.exists():
        pytest.skip(f"{LOCUSTFILE.relative_to(LOCUSTFILE.parent.parent)} does not exist yet")


def component_build(name: str) -> tuple[Doc, ...]:
    # monitoring's Prometheus is what autoscale-connections' adapter reads from.
    extra = ("monitoring",) if name == "autoscale-connections" else ()
    base = "overlays/hpa" if name == "autoscale-connections" else "base"
    return build_with_components(base, *extra, name)


def all_builds() -> list[tuple[str, tuple[Doc, ...]]]:
    """Every tree and component (loadtest only once locustfiles/chat.py exists: its own test
    skips with the reason until then)."""
    builds = [(t, build_tree(t)) for t in TREES]
    for c in COMPONENTS:
        if c != "loadtest" or LOCUSTFILE.exists():
            builds.append((f"components/{c}", component_build(c)))
    return builds


def _validate(doc: Doc) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        first = str(exc).split("\n\n")[0]
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {first} at "
                    f"{'.'.join(map(str, exc.path))}")


@pytest.mark.parametrize("tree", TREES)
def test_tree_builds_and_validates(tree: str) -> None:
    docs = build_tree(tree)
    assert docs
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize("name", [c for c in COMPONENTS if c != "loadtest"])
def test_component_builds_and_validates(name: str) -> None:
    for doc in component_build(name):
        _validate(doc)


def test_loadtest_component_builds_and_validates(locustfile: None) -> None:
    docs = component_build("loadtest")
    for doc in docs:
        _validate(doc)
    cm = next(d for d in docs if d["kind"] == "ConfigMap"
              and d["metadata"]["name"].startswith("chatsys-locustfile-"))
    assert cm["data"]["chat.py"] == LOCUSTFILE.read_text()
    master = find(docs, "Deployment", "chatsys-locust-master")
    worker = find(docs, "Deployment", "chatsys-locust-worker")
    assert "--master" in container(master)["args"]
    assert "--host=http://chatsys-gateway" in container(master)["args"]
    assert "--master-host=chatsys-locust-master" in container(worker)["args"]
    for d in (master, worker):
        assert "--locustfile=/locust/chat.py" in container(d)["args"]
        vols = d["spec"]["template"]["spec"]["volumes"]
        assert {"name": "locustfile", "configMap": {"name": cm["metadata"]["name"]}} in vols
        assert container(d)["image"].startswith("chatsys-loadtest:")


def test_everything_namespaced_and_labelled() -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "APIService"}
    for where, docs in all_builds():
        for d in docs:
            meta = d["metadata"]
            if d["kind"] not in cluster_scoped:
                assert meta.get("namespace") == "chatsys", (where, d["kind"], meta["name"])
            if d["kind"] != "Namespace":
                assert meta.get("labels", {}).get("app.kubernetes.io/name"), (where, meta["name"])


def _workloads(docs: tuple[Doc, ...]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def test_every_workload_hardened() -> None:
    for where, docs in all_builds():
        for w in _workloads(docs):
            name = f"{where}: {w['metadata']['name']}"
            pod = w["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["securityContext"]["runAsUser"] != 0, name
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, name
                assert sc["allowPrivilegeEscalation"] is False, name
                assert sc["capabilities"]["drop"] == ["ALL"], name
                assert c["resources"]["requests"]["cpu"], name
                assert c["resources"]["requests"]["memory"], name
                assert c["resources"]["limits"]["memory"], name
                if c.get("ports"):  # whatever serves is probed (Locust workers serve nothing)
                    assert "readinessProbe" in c, name
            labels = w["spec"]["template"]["metadata"]["labels"]
            sel = w["spec"]["selector"]["matchLabels"]
            assert sel.items() <= labels.items(), name


def test_one_image_name_set_in_one_place() -> None:
    docs = build_tree("base")
    images = {container(d)["image"] for d in docs if d["kind"] == "Deployment"}
    assert images == {"chatsys:0.1.0"}
    raw = [p.read_text() for p in (KUSTOMIZE / "base").glob("*.yaml")
           if p.name != "kustomization.yaml"]
    assert all(re.findall(r"image: (\S+)", text) in ([], ["chatsys"]) for text in raw)


def test_base_services_and_probes() -> None:
    docs = build_tree("base")
    gw = find(docs, "Deployment", "chatsys-gateway")
    c = container(gw)
    assert c["args"] == ["gateway"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    e = env(gw)
    assert e["CHATSYS_USERS_ADDR"] == e["CHATSYS_CHAT_ADDR"] == "dns:///chatsys-chat:50051"
    assert e["CHATSYS_FILES_ADDR"] == "dns:///chatsys-files:50052"
    ann = gw["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    assert find(docs, "Service", "chatsys-gateway")["spec"].get("clusterIP") != "None"

    for name, args, port, metrics in [("chatsys-chat", ["users", "chat"], 50051, 9100),
                                      ("chatsys-files", ["files"], 50052, 9101)]:
        d = find(docs, "Deployment", name)
        c = container(d)
        assert c["args"] == args
        assert d["spec"]["replicas"] == 1
        assert d["spec"]["strategy"]["type"] == "Recreate"  # one writer on a RWO claim
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, (name, probe)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": port, "metrics": metrics}
        assert env(d)["CHATSYS_PORT"] == str(port)
        assert env(d)["CHATSYS_METRICS_PORT"] == str(metrics)
        ann = d["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/port"] == str(metrics)
        svc = find(docs, "Service", name)
        assert svc["spec"]["clusterIP"] == "None", "gateway balances over a headless Service"
        assert {p["port"] for p in svc["spec"]["ports"]} == {port, metrics}
        claim = find(docs, "PersistentVolumeClaim", f"{name}-data")
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        assert vols["data"]["persistentVolumeClaim"]["claimName"] == f"{name}-data"
        assert env(d)["CHATSYS_DATA_DIR"] == "/data"


def _seconds(value: str) -> float:
    return float(value)


def test_gateway_drains_within_termination_grace() -> None:
    for tree in TREES:
        gw = find(build_tree(tree), "Deployment", "chatsys-gateway")
        pod = gw["spec"]["template"]["spec"]
        c = container(gw)
        pre = c["lifecycle"]["preStop"]["exec"]["command"]
        assert pre[0] == "sleep"
        e = env(gw)
        needed = float(pre[1]) + _seconds(e["CHATSYS_DRAIN_TIMEOUT"]) \
            + _seconds(e["CHATSYS_SHUTDOWN_GRACE"])
        assert pod["terminationGracePeriodSeconds"] >= needed
        assert gw["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    for name in ("chatsys-chat", "chatsys-files"):
        d = find(build_tree("base"), "Deployment", name)
        e = env(d)
        assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= \
            _seconds(e["CHATSYS_DRAIN_TIMEOUT"]) + _seconds(e["CHATSYS_SHUTDOWN_GRACE"])


GRPC_PORTS = {"chatsys-chat": 50051, "chatsys-files": 50052}
PROBE_HANDLERS = {"httpGet", "grpc", "exec", "tcpSocket"}


def test_liveness_checks_the_process_readiness_the_dependencies() -> None:
    """A Redis or disk outage must take pods out of Services, never restart them all: in every
    tree and component, liveness asks only about the process (A and B: the gRPC health service
    ``liveness``; P: ``/healthz``), readiness the overall check (A/B: no service; P:
    ``/readyz``)."""
    for where, docs in all_builds():
        for name in SERVICES:
            c = container(find(docs, "Deployment", name))
            live, ready = c["livenessProbe"], c["readinessProbe"]
            if name == "chatsys-gateway":
                assert set(live) & PROBE_HANDLERS == {"httpGet"}, (where, name)
                assert live["httpGet"]["path"] == "/healthz", (where, name)
                assert ready["httpGet"]["path"] == "/readyz", (where, name)
                continue
            port = GRPC_PORTS[name]
            assert set(live) & PROBE_HANDLERS == {"grpc"}, (where, name)
            assert live["grpc"] == {"port": port, "service": "liveness"}, (where, name)
            # No service (or ""): the server's overall health, storage included.
            assert ready["grpc"]["port"] == port and not ready["grpc"].get("service"), \
                (where, name, ready)
        # Nothing else in the build probes a chatsys gRPC server's overall health for liveness.
        for w in _workloads(docs):
            for c in w["spec"]["template"]["spec"]["containers"]:
                grpc = c.get("livenessProbe", {}).get("grpc")
                if grpc is not None:
                    assert grpc.get("service") == "liveness", (where, w["metadata"]["name"])


@pytest.mark.parametrize("tree", TREES)
def test_pdb_per_service(tree: str) -> None:
    docs = build_tree(tree)
    for name in SERVICES:
        pdb = find(docs, "PodDisruptionBudget", name)
        # maxUnavailable, not minAvailable: a one-replica service must not block node drains.
        assert pdb["spec"]["maxUnavailable"] == 1
        labels = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_hpa_overlay() -> None:
    docs = build_tree("overlays/hpa")
    hpa = find(docs, "HorizontalPodAutoscaler", "chatsys-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "chatsys-gateway"}
    assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
    assert spec["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]
    up, down = spec["behavior"]["scaleUp"], spec["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 0
    assert down["stabilizationWindowSeconds"] >= 300
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    # The HPA owns the count: no replicas field for an apply to reset.
    assert "replicas" not in find(docs, "Deployment", "chatsys-gateway")["spec"]
    assert container(find(docs, "Deployment", "chatsys-gateway"))["resources"]["requests"]["cpu"]


def test_scaled_overlay() -> None:
    docs = build_tree("overlays/scaled")
    assert has(docs, "HorizontalPodAutoscaler", "chatsys-gateway")
    chat = find(docs, "Deployment", "chatsys-chat")
    files = find(docs, "Deployment", "chatsys-files")
    assert chat["spec"]["replicas"] >= 3 and files["spec"]["replicas"] >= 3
    for d in (chat, files):
        assert d["spec"]["strategy"]["type"] == "RollingUpdate"
    # A on Redis: no SQLite claim left.
    assert env(chat)["CHATSYS_STORE"] == "redis://chatsys-redis:6379/0"
    assert not has(docs, "PersistentVolumeClaim", "chatsys-chat-data")
    chat_vols = {v["name"]: v for v in chat["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in chat_vols["data"] and "persistentVolumeClaim" not in chat_vols["data"]
    # B on one shared ReadWriteMany claim.
    assert not has(docs, "PersistentVolumeClaim", "chatsys-files-data")
    shared = find(docs, "PersistentVolumeClaim", "chatsys-files-shared")
    assert shared["spec"]["accessModes"] == ["ReadWriteMany"]
    files_vols = {v["name"]: v for v in files["spec"]["template"]["spec"]["volumes"]}
    assert files_vols["data"] == {"name": "data",
                                  "persistentVolumeClaim": {"claimName": "chatsys-files-shared"}}


def test_redis_component() -> None:
    docs = component_build("redis")
    sts = find(docs, "StatefulSet", "chatsys-redis")
    svc = find(docs, "Service", "chatsys-redis")
    assert sts["spec"]["serviceName"] == "chatsys-redis" and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"][0]["port"] == 6379
    conf = find(docs, "ConfigMap", "chatsys-redis")["data"]["redis.conf"]
    settings = dict(line.split(" ", 1) for line in conf.splitlines() if line.strip())
    assert settings["appendonly"] == "yes"
    assert settings["dir"] == "/data"
    assert settings["maxmemory-policy"] == "noeviction"
    c = container(sts)
    assert c["command"] == ["redis-server", "/etc/redis/redis.conf"]
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    chat = find(docs, "Deployment", "chatsys-chat")
    assert env(chat)["CHATSYS_STORE"].startswith("redis://chatsys-redis:6379/")


def test_autoscale_connections_component() -> None:
    docs = component_build("autoscale-connections")
    hpa = find(docs, "HorizontalPodAutoscaler", "chatsys-gateway")
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert kinds["Pods"]["pods"]["metric"]["name"] == "chatsys_ws_connections"
    assert kinds["Pods"]["pods"]["target"]["type"] == "AverageValue"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    api = find(docs, "APIService", "v1beta1.custom.metrics.k8s.io")
    assert api["spec"]["service"] == {"name": "chatsys-prometheus-adapter",
                                      "namespace": "chatsys", "port": 443}
    adapter = find(docs, "Deployment", "chatsys-prometheus-adapter")
    assert "--prometheus-url=http://chatsys-prometheus:9090/" in container(adapter)["args"]
    assert has(docs, "Service", "chatsys-prometheus")
    for d in docs:
        if d["kind"] == "ClusterRoleBinding":
            assert all(s["namespace"] == "chatsys" for s in d["subjects"])


def test_monitoring_component_objects() -> None:
    docs = component_build("monitoring")
    prom = find(docs, "Deployment", "chatsys-prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in container(prom)["args"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap"
              and d["metadata"]["name"].startswith("chatsys-prometheus-"))
    assert set(cm["data"]) == {"prometheus.yml", "rules.yml"}
    vols = {v["name"]: v for v in prom["spec"]["template"]["spec"]["volumes"]}
    assert vols["config"]["configMap"]["name"] == cm["metadata"]["name"]
    graf = find(docs, "Deployment", "chatsys-grafana")
    gvols = {v["name"]: v for v in graf["spec"]["template"]["spec"]["volumes"]}
    assert gvols["dashboards"]["configMap"]["name"].startswith("chatsys-grafana-dashboards-")
    assert has(docs, "Deployment", "chatsys-kube-state-metrics")
    # Pods the Prometheus config keeps: every chatsys service asks to be scraped.
    for name in SERVICES:
        ann = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        labels = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "chatsys"
