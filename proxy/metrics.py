"""Prometheus metrics, one registry per gateway (tests build many gateways in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)
_SCORE_BUCKETS = tuple(round(x * 0.05, 2) for x in range(1, 21))


class _Callbacks:
    """Gauges read at scrape time (queue depth, spool size…): no work on the request path."""

    def __init__(self) -> None:
        self.sources: dict[str, tuple[str, Callable[[], float]]] = {}

    def collect(self):  # noqa: ANN201 - prometheus collector protocol
        for name, (doc, fn) in self.sources.items():
            family = GaugeMetricFamily(name, doc)
            try:
                family.add_metric([], float(fn()))
            except Exception:  # noqa: BLE001, S112 - a broken source must not break the scrape
                continue
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "behaviorgate_requests_total",
            "Requests by decision and rule.",
            ["decision", "rule"],
            registry=r,
        )
        self.scores = Histogram(
            "behaviorgate_composite_score",
            "Composite anomaly scores.",
            buckets=_SCORE_BUCKETS,
            registry=r,
        )
        self.scoring_seconds = Histogram(
            "behaviorgate_scoring_seconds",
            "History read + features + models + decision.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "behaviorgate_upstream_seconds",
            "Upstream time to response end.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.dependency_errors = Counter(
            "behaviorgate_dependency_errors_total",
            "Redis/Postgres/model errors.",
            ["dependency"],
            registry=r,
        )
        self.unscored = Counter(
            "behaviorgate_unscored_total",
            "Requests the rule's fail policy answered because scoring did not happen, by reason:"
            " redis_timeout (the scoring budget ran out), redis_error, breaker_open (Redis"
            " skipped after repeated failures), model_error. A rise under load means the gateway"
            " is shedding scoring.",
            ["reason"],
            registry=r,
        )
        self.stepups = Counter(
            "behaviorgate_stepups_total", "Step-ups issued and completed.", ["state"], registry=r
        )
        self._callbacks = _Callbacks()
        r.register(self._callbacks)

    def gauge_from(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        """A gauge read at scrape time (active model version, drift score, writer queue…)."""
        self._callbacks.sources[name] = (doc, fn)

    def render(self) -> bytes:
        return generate_latest(self.registry)
