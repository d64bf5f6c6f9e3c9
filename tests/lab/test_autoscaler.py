"""chatsys.lab.autoscaler: the autoscaling/v2 decision against cases computed by hand from the
values of kustomize/overlays/hpa (min 2, max 10, CPU 60% of a 500m request, scale up at once by
100% or 4 pods per 15 s, whichever is more; scale down by 1 pod per 60 s after 300 s) and of
components/autoscale-connections (2,000 connections per pod)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chatsys.lab.autoscaler import (
    CPU,
    Autoscaler,
    HpaSpec,
    MetricTarget,
    RatePolicy,
    ScalingRules,
    SpecError,
    load_spec,
    replicas_for_metric,
)

CONNECTIONS = "chatsys_ws_connections"


@pytest.fixture
def spec() -> HpaSpec:
    return load_spec("cpu")


def cpu(*cores: float | None) -> dict[str, dict[str, float | None]]:
    """CPU readings (cores used) of pods P-0, P-1..."""
    return {CPU: {f"P-{i}": c for i, c in enumerate(cores)}}


def test_the_spec_is_the_manifests_one(spec: HpaSpec) -> None:
    # The hand-computed cases below use these values: a change to the manifests fails here.
    assert (spec.min_replicas, spec.max_replicas, spec.cpu_request) == (2, 10, 0.5)
    assert spec.metrics == (MetricTarget(CPU, utilization=60),)
    assert spec.scale_up == ScalingRules(0, "Max", (RatePolicy("Percent", 100, 15),
                                                    RatePolicy("Pods", 4, 15)))
    assert spec.scale_down == ScalingRules(300, "Min", (RatePolicy("Pods", 1, 60),))
    assert (spec.tolerance, spec.sync_period) == (0.1, 15)
    connections = load_spec("connections")
    assert connections.metrics == (MetricTarget(CPU, utilization=60),
                                   MetricTarget(CONNECTIONS, average_value=2000))
    assert connections.scale_down == spec.scale_down
    with pytest.raises(SpecError):
        load_spec("memory")


def test_scaled_shortens_every_duration_in_proportion(spec: HpaSpec) -> None:
    short = spec.scaled(0.1)
    assert short.scale_down.window == 30 and short.scale_down.policies[0].period == 6
    assert short.scale_up.policies[1].period == 1.5 and short.sync_period == 1.5
    assert spec.with_target(80).metrics == (MetricTarget(CPU, utilization=80),)


@pytest.mark.parametrize(("readings", "expected"), [
    ((0.45, 0.45), 3),  # 90% of 500m against 60%: ratio 1.5, ceil(2 x 1.5)
    ((0.32, 0.32), 2),  # 64%: ratio 1.067, within the tolerance
    ((0.27, 0.27), 2),  # 54%: ratio 0.9, at the tolerance's edge: no change
    ((0.34, 0.34), 3),  # 68%: ratio 1.133, ceil(2.27)
    ((0.6, 0.0), 2),  # 60% on average: exactly at target
    ((0.15, 0.15, 0.15), 2),  # 30%: ratio 0.5, ceil(1.5) (min and windows come later)
    ((1.5, 1.5), 10),  # 300%: ratio 5 (the policies limit it later)
])
def test_desired_replicas_is_ceil_of_current_times_ratio(
        spec: HpaSpec, readings: tuple[float, ...], expected: int) -> None:
    result = replicas_for_metric(len(readings), cpu(*readings)[CPU], spec.metrics[0], spec)
    assert result is not None and result[0] == expected


def test_pods_without_a_reading_dampen_the_change(spec: HpaSpec) -> None:
    metric = spec.metrics[0]
    # Up: P-2 (no CPU rate yet) counts as idle: 1.2 cores over 3 x 500m is 80%, ratio 1.333,
    # ceil(3 x 1.333) = 4; the ratio reported is the measured pods' (120% / 60%).
    assert replicas_for_metric(3, cpu(0.6, 0.6, None)[CPU], metric, spec) == (4, 2.0)
    # Up, and the idle newcomer brings the ratio within the tolerance: no change.
    assert replicas_for_metric(3, cpu(0.4, 0.4, None)[CPU], metric, spec)[0] == 3
    # Down: P-2 counts as at its full request (100% > 60%): 0.03 + 0.03 + 0.5 over 1.5 cores
    # is 37%, ratio 0.617, ceil(3 x 0.617) = 2, where the two alone (6%) would propose 1.
    assert replicas_for_metric(3, cpu(0.03, 0.03, None)[CPU], metric, spec)[0] == 2
    # Nobody has a reading: the metric is skipped.
    assert replicas_for_metric(3, cpu(None, None, None)[CPU], metric, spec) is None


def test_scale_up_is_limited_by_the_larger_policy_per_period(spec: HpaSpec) -> None:
    hpa = Autoscaler(spec)
    # 300% of the request each: ratio 5, 10 wanted; 100% of 2 is 4, plus 4 pods is 6: 6.
    first = hpa.decide(2, cpu(1.5, 1.5), now=1000)
    assert (first.proposed, first.replicas, first.reason) == (10, 6, "ScaleUpLimit")
    hpa.scaled(2, 6, now=1000)
    # Within the same 15 s the period started at 2: still at most 6.
    again = hpa.decide(6, cpu(*[1.5] * 6), now=1010)
    assert (again.proposed, again.replicas, again.reason) == (30, 6, "ScaleUpLimit")
    # A new period starts at 6: 12 or 10 allowed; max 10 binds.
    later = hpa.decide(6, cpu(*[1.5] * 6), now=1016)
    assert (later.proposed, later.replicas, later.reason) == (30, 10, "TooManyReplicas")


def test_scale_down_waits_for_the_window_then_goes_one_pod_a_minute(spec: HpaSpec) -> None:
    hpa = Autoscaler(spec)
    # A new HPA opens its scale-down window with the current scale: no scale down at once.
    quiet = cpu(0.03, 0.03, 0.03, 0.03)  # 6%: ratio 0.1, ceil(0.4) = 1 proposed
    first = hpa.decide(4, quiet, now=0)
    assert (first.proposed, first.stabilized, first.replicas) == (1, 4, 4)
    assert first.reason == "ScaleDownStabilized"
    # Past the window: 1 recommended, the policy allows 4 - 1 = 3.
    down = hpa.decide(4, quiet, now=301)
    assert (down.stabilized, down.replicas, down.reason) == (1, 3, "ScaleDownLimit")
    hpa.scaled(4, 3, now=301)
    # Within that minute the period started at 4: 3 is the floor, so no change.
    held = hpa.decide(3, cpu(0.03, 0.03, 0.03), now=330)
    assert (held.replicas, held.reason) == (3, "ScaleDownLimit")
    # A minute on: 2, which is also minReplicas.
    last = hpa.decide(3, cpu(0.03, 0.03, 0.03), now=362)
    assert (last.replicas, last.reason) == (2, "TooFewReplicas")


def test_the_scale_down_window_keeps_its_highest_recommendation(spec: HpaSpec) -> None:
    hpa = Autoscaler(spec)
    assert hpa.decide(5, cpu(*[0.3] * 5), now=0).replicas == 5  # at target
    # 3 recommended at 100, but 5 (at 0) is still within 300 s: 5.
    mid = hpa.decide(5, cpu(*[0.17] * 5), now=100)  # 34%: ceil(5 x 0.567) = 3
    assert (mid.proposed, mid.stabilized, mid.replicas) == (3, 5, 5)
    # At 301 the 5s have left the window; the highest left is 3, one pod a minute: 4.
    late = hpa.decide(5, cpu(*[0.05] * 5), now=301)  # 10%: ceil(5 x 0.167) = 1
    assert (late.proposed, late.stabilized, late.replicas) == (1, 3, 4)


def test_a_scale_up_window_keeps_its_lowest_recommendation(spec: HpaSpec) -> None:
    hpa = Autoscaler(replace(spec, scale_up=replace(spec.scale_up, window=60)))
    # The current scale (2) opens the windows, so within 60 s nothing above it is taken.
    first = hpa.decide(2, cpu(0.45, 0.45), now=0)
    assert (first.proposed, first.replicas, first.reason) == (3, 2, "ScaleUpStabilized")
    assert hpa.decide(2, cpu(0.45, 0.45), now=61).replicas == 3
    hpa.scaled(2, 3, now=61)
    # 6 wanted at 90 s (120%: ratio 2), but 3 (at 61) is within the window: the lowest, 3.
    held = hpa.decide(3, cpu(0.6, 0.6, 0.6), now=90)
    assert (held.proposed, held.stabilized, held.reason) == (6, 3, "ScaleUpStabilized")
    # At 122 the 3 has left; 6 (at 90) is the lowest within: 6.
    assert hpa.decide(3, cpu(0.6, 0.6, 0.6), now=122).replicas == 6


def test_out_of_bounds_goes_to_the_bound_and_the_larger_metric_wins() -> None:
    spec = load_spec("connections")
    hpa = Autoscaler(spec)
    assert hpa.decide(1, {}, now=0).replicas == 2  # below minReplicas: min, metrics unread
    assert hpa.decide(12, {}, now=0).replicas == 10
    # CPU idle (alone it would propose 1), 5,000 connections on each of 2 pods against 2,000:
    # ceil(2 x 2.5) = 5.
    readings = {CPU: {"P-0": 0.01, "P-1": 0.01},
                CONNECTIONS: {"P-0": 5000.0, "P-1": 5000.0}}
    decision = hpa.decide(2, readings, now=0)
    assert (decision.proposed, decision.replicas) == (5, 5)
    assert decision.ratios == {CPU: pytest.approx(0.0333, abs=1e-3), CONNECTIONS: 2.5}
    assert hpa.decide(2, {CPU: {"P-0": None}}, now=1).reason == "NoMetrics"
