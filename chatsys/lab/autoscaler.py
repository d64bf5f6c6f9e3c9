"""The Kubernetes ``autoscaling/v2`` HorizontalPodAutoscaler's decision, as pure logic.

Given the replicas that run and each pod's metric readings, :class:`Autoscaler` says how many
should run, the way the HPA controller (``pkg/controller/podautoscaler``) does on each sync:

1. per metric, desired = ceil(ready pods x usage ratio), where the ratio is the average reading
   over its target; within the tolerance (0.1) of 1 nothing changes. Pods without a reading yet
   count as at the target (100% of their request for CPU) when the ratio says scale down and as
   idle when it says scale up, so a pod just started neither triggers nor hides a change. With
   several metrics the largest proposal wins;
2. stabilisation: the proposal is bounded by the recommendations of the last
   ``stabilizationWindowSeconds`` (scale up to at most the smallest of the scale-up window,
   down to at least the largest of the scale-down window);
3. rate policies: a change is limited by what each policy allows over its ``periodSeconds``,
   counting the changes made within that period (``selectPolicy`` picks the policy);
   min and max replicas bound the result.

The spec (metrics, min/max, behaviour) is read from the manifests the cluster applies —
``kustomize/overlays/hpa/gateway-hpa.yaml`` (CPU) and, for the connections policy, the metrics
of ``kustomize/components/autoscale-connections`` — and the CPU request of the gateway from
``kustomize/base/gateway.yaml``, so the local autoscaler follows whatever they say. Time is
passed in (seconds), so the logic is tested without waiting; :mod:`chatsys.lab.elastic` runs it
against live processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZE = Path(__file__).resolve().parents[2] / "kustomize"
HPA_MANIFEST = KUSTOMIZE / "overlays" / "hpa" / "gateway-hpa.yaml"
CONNECTIONS_MANIFEST = (KUSTOMIZE / "components" / "autoscale-connections"
                        / "gateway-hpa-connections.yaml")
GATEWAY_MANIFEST = KUSTOMIZE / "base" / "gateway.yaml"
GATEWAY_DEPLOYMENT = "chatsys-gateway"
TOLERANCE = 0.1  # the controller's --horizontal-pod-autoscaler-tolerance default
SYNC_PERIOD = 15.0  # the controller's --horizontal-pod-autoscaler-sync-period default
CPU = "cpu"
POLICIES = ("cpu", "connections")  # --hpa-metric: overlays/hpa, or components/autoscale-connections


class SpecError(ValueError):
    """A manifest says something this autoscaler does not implement."""


@dataclass(frozen=True)
class MetricTarget:
    """One entry of ``spec.metrics``: ``cpu`` (a Utilization percentage of the request) or a
    Pods metric such as ``chatsys_ws_connections`` (an AverageValue per pod)."""

    name: str
    utilization: float | None = None  # percent of the CPU request
    average_value: float | None = None  # per pod

    @property
    def target(self) -> float:
        value = self.utilization if self.name == CPU else self.average_value
        assert value is not None
        return value


@dataclass(frozen=True)
class RatePolicy:
    kind: str  # Pods or Percent
    value: int
    period: float  # seconds


@dataclass(frozen=True)
class ScalingRules:
    window: float  # stabilizationWindowSeconds
    select: str  # Max, Min or Disabled
    policies: tuple[RatePolicy, ...]


@dataclass(frozen=True)
class HpaSpec:
    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricTarget, ...]
    scale_up: ScalingRules
    scale_down: ScalingRules
    cpu_request: float  # cores per pod: what CPU Utilization is a percentage of
    tolerance: float = TOLERANCE
    sync_period: float = SYNC_PERIOD

    def scaled(self, factor: float) -> HpaSpec:
        """Every duration (windows, policy periods, sync period) times ``factor``: the same
        behaviour in proportion, for a run of seconds rather than of minutes."""
        def rules(r: ScalingRules) -> ScalingRules:
            return replace(r, window=r.window * factor, policies=tuple(
                replace(p, period=p.period * factor) for p in r.policies))

        return replace(self, scale_up=rules(self.scale_up), scale_down=rules(self.scale_down),
                       sync_period=self.sync_period * factor)

    def with_target(self, value: float) -> HpaSpec:
        """The last metric's target replaced (CPU percent, or connections per pod)."""
        *rest, last = self.metrics
        changed = (replace(last, utilization=value) if last.name == CPU
                   else replace(last, average_value=value))
        return replace(self, metrics=(*rest, changed))


def _document(path: Path, kind: str, name: str | None = None) -> dict[str, Any]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == kind and (name is None
                                                or doc["metadata"]["name"] == name):
            return dict(doc)
    raise SpecError(f"{path}: no {kind} {name or ''}".rstrip())


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity without binary suffixes (``500m``, ``2000``, ``0.5``)."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _metric(entry: Mapping[str, Any]) -> MetricTarget:
    kind = entry["type"]
    if kind == "Resource" and entry["resource"]["name"] == CPU:
        target = entry["resource"]["target"]
        if target["type"] != "Utilization":
            raise SpecError(f"CPU target of type {target['type']}: only Utilization")
        return MetricTarget(CPU, utilization=float(target["averageUtilization"]))
    if kind == "Pods":
        target = entry["pods"]["target"]
        if target["type"] != "AverageValue":
            raise SpecError(f"Pods target of type {target['type']}: only AverageValue")
        return MetricTarget(entry["pods"]["metric"]["name"],
                            average_value=quantity(target["averageValue"]))
    raise SpecError(f"metric of type {kind}: only Resource cpu and Pods")


def _rules(behavior: Mapping[str, Any]) -> ScalingRules:
    return ScalingRules(float(behavior.get("stabilizationWindowSeconds", 0)),
                        behavior.get("selectPolicy", "Max"),
                        tuple(RatePolicy(p["type"], int(p["value"]), float(p["periodSeconds"]))
                              for p in behavior.get("policies", ())))


def load_spec(policy: str = "cpu") -> HpaSpec:
    """The gateway HPA of the manifests: ``cpu`` is ``overlays/hpa``; ``connections`` is the
    same HPA with the metrics of ``components/autoscale-connections`` (CPU and open WebSockets
    per pod, the larger proposal winning)."""
    if policy not in POLICIES:
        raise SpecError(f"unknown policy {policy!r}: choose {', '.join(POLICIES)}")
    hpa = _document(HPA_MANIFEST, "HorizontalPodAutoscaler")["spec"]
    metrics = hpa["metrics"]
    if policy == "connections":
        metrics = _document(CONNECTIONS_MANIFEST, "HorizontalPodAutoscaler")["spec"]["metrics"]
    deployment = _document(GATEWAY_MANIFEST, "Deployment", GATEWAY_DEPLOYMENT)
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "gateway"]
    return HpaSpec(min_replicas=int(hpa.get("minReplicas", 1)),
                   max_replicas=int(hpa["maxReplicas"]),
                   metrics=tuple(_metric(m) for m in metrics),
                   scale_up=_rules(hpa["behavior"]["scaleUp"]),
                   scale_down=_rules(hpa["behavior"]["scaleDown"]),
                   cpu_request=quantity(container["resources"]["requests"]["cpu"]))


# Readings: metric name -> pod name -> value (CPU in cores used, or the Pods metric), or None
# for a pod without one yet (just started: no rate until its second scrape).
Readings = Mapping[str, Mapping[str, float | None]]


def usage_ratio(values: list[float], metric: MetricTarget, spec: HpaSpec) -> float:
    """Average reading over target, in the controller's integer arithmetic: readings in
    milli-units, CPU as a whole percent of the pods' requests, a Pods metric as an integer
    milli-average (so a reading exactly at a boundary lands where the controller's does)."""
    total = sum(int(v * 1000) for v in values)
    if metric.name == CPU:
        utilization = total * 100 // (int(spec.cpu_request * 1000) * len(values))
        return utilization / metric.target
    return (total // len(values)) / int(metric.target * 1000)


def replicas_for_metric(current: int, readings: Mapping[str, float | None],
                        metric: MetricTarget, spec: HpaSpec) -> tuple[int, float] | None:
    """The replicas one metric proposes, and its usage ratio (average reading over target);
    None without a single reading (the controller then skips the metric)."""
    known = [v for v in readings.values() if v is not None]
    missing = len(readings) - len(known)
    if not known:
        return None
    ratio = usage_ratio(known, metric, spec)
    if not missing or ratio == 1.0:  # at exactly 1 the controller leaves missing pods out
        if abs(1.0 - ratio) <= spec.tolerance:
            return current, ratio
        return math.ceil(ratio * len(known)), ratio
    # A pod without a reading counts as at the target (CPU: at its full request, if that is
    # more) on a scale down, and as idle on a scale up, so it dampens the change either way.
    if metric.name == CPU:
        at_target = spec.cpu_request * max(100.0, metric.target) / 100
    else:
        at_target = metric.target
    new_ratio = usage_ratio([*known, *[at_target if ratio < 1.0 else 0.0] * missing],
                            metric, spec)
    if (abs(1.0 - new_ratio) <= spec.tolerance or (ratio < 1.0 < new_ratio)
            or (new_ratio < 1.0 < ratio)):
        return current, ratio
    proposed = math.ceil(new_ratio * (len(known) + missing))
    if (new_ratio < 1.0 and proposed > current) or (new_ratio > 1.0 and proposed < current):
        return current, ratio
    return proposed, ratio


@dataclass(frozen=True)
class Decision:
    """One sync: what the metrics proposed, what stabilisation and the policies made of it."""

    at: float
    current: int
    proposed: int  # from the metrics (the largest of the metrics' proposals)
    stabilized: int
    replicas: int  # the new scale
    reason: str  # the controller's condition reason: DesiredWithinRange, ScaleUpLimit...
    ratios: dict[str, float] = field(default_factory=dict)  # metric -> usage ratio

    def to_record(self) -> dict[str, Any]:
        return {"current": self.current, "proposed": self.proposed,
                "stabilized": self.stabilized, "desired": self.replicas,
                "reason": self.reason, "ratios": self.ratios}


@dataclass
class Autoscaler:
    """The controller's state for one HPA: past recommendations and scale events."""

    spec: HpaSpec
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    scale_events: list[tuple[float, int]] = field(default_factory=list)  # (time, change)

    def decide(self, current: int, readings: Readings, now: float) -> Decision:
        """This sync's scale (not yet applied: call :meth:`scaled` once it is)."""
        spec = self.spec
        ratios: dict[str, float] = {}
        if current > spec.max_replicas or current < spec.min_replicas:
            bound = min(max(current, spec.min_replicas), spec.max_replicas)
            reason = "TooManyReplicas" if current > spec.max_replicas else "TooFewReplicas"
            return Decision(now, current, bound, bound, bound, reason)
        proposals = []
        for metric in spec.metrics:
            result = replicas_for_metric(current, readings.get(metric.name, {}), metric, spec)
            if result is not None:
                proposals.append(result[0])
                ratios[metric.name] = round(result[1], 4)
        if not proposals:
            return Decision(now, current, current, current, current, "NoMetrics", ratios)
        proposed = max(proposals)
        if not self.recommendations and spec.scale_down.window > 0:
            # A new HPA does not scale down at once: the current scale opens the window.
            self.recommendations.append((now, current))
        stabilized, reason = self._stabilize(current, proposed, now)
        replicas, limit_reason = self._limit(current, stabilized, now)
        if replicas != stabilized or stabilized == proposed:
            reason = limit_reason
        return Decision(now, current, proposed, stabilized, replicas, reason, ratios)

    def scaled(self, before: int, after: int, now: float) -> None:
        """Record a change made, for the rate policies' periods."""
        if after != before:
            self.scale_events.append((now, after - before))
        longest = max((p.period for r in (self.spec.scale_up, self.spec.scale_down)
                       for p in r.policies), default=0.0)
        self.scale_events = [(t, c) for t, c in self.scale_events if t > now - longest]

    def _stabilize(self, current: int, proposed: int, now: float) -> tuple[int, str]:
        up_cutoff = now - self.spec.scale_up.window
        down_cutoff = now - self.spec.scale_down.window
        up = min([proposed, *(n for t, n in self.recommendations if t > up_cutoff)])
        down = max([proposed, *(n for t, n in self.recommendations if t > down_cutoff)])
        self.recommendations = [(t, n) for t, n in self.recommendations
                                if t > min(up_cutoff, down_cutoff)]
        self.recommendations.append((now, proposed))
        stabilized = min(max(current, up), down)
        if stabilized == proposed:
            return stabilized, "ReadyForNewScale"
        return stabilized, ("ScaleUpStabilized" if proposed > stabilized
                            else "ScaleDownStabilized")

    def _change_within(self, period: float, now: float, sign: int) -> int:
        return sum(abs(c) for t, c in self.scale_events if t > now - period and c * sign > 0)

    def _period_start(self, current: int, period: float, now: float) -> int:
        """The replicas at the start of the policy's period (changes since then undone)."""
        return current - self._change_within(period, now, +1) + self._change_within(period, now, -1)

    def _limit(self, current: int, desired: int, now: float) -> tuple[int, str]:
        spec = self.spec
        if desired > current:
            limit = self._up_limit(current, now)
            if limit < spec.max_replicas:
                ceiling, why = limit, "ScaleUpLimit"
            else:
                ceiling, why = spec.max_replicas, "TooManyReplicas"
            if desired > ceiling:
                return ceiling, why
        elif desired < current:
            limit = self._down_limit(current, now)
            if limit > spec.min_replicas:
                floor, why = limit, "ScaleDownLimit"
            else:
                floor, why = spec.min_replicas, "TooFewReplicas"
            if desired < floor:
                return floor, why
        return desired, "DesiredWithinRange"

    def _up_limit(self, current: int, now: float) -> int:
        rules = self.spec.scale_up
        if rules.select == "Disabled":
            return current
        proposals = []
        for p in rules.policies:
            start = self._period_start(current, p.period, now)
            proposals.append(start + p.value if p.kind == "Pods"
                             else math.ceil(start * (1 + p.value / 100)))
        pick = min if rules.select == "Min" else max
        return max(pick(proposals), current) if proposals else current

    def _down_limit(self, current: int, now: float) -> int:
        rules = self.spec.scale_down
        if rules.select == "Disabled":
            return current
        proposals = []
        for p in rules.policies:
            start = self._period_start(current, p.period, now)
            proposals.append(start - p.value if p.kind == "Pods"
                             else int(start * (1 - p.value / 100)))
        # Min picks the smallest change, which on the way down is the largest floor.
        pick = max if rules.select == "Min" else min
        return min(pick(proposals), current) if proposals else current
