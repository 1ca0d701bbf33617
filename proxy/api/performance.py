"""Admin read models: performance over a window, false-positive reports, decisions over time."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.api import deps
from proxy.api.auth import Caller
from proxy.api.http import INTEGER, bad, iso, page_limit, query_int, query_str, window
from proxy.api.routing import Route
from proxy.api.views import bucket_json, false_positive_json, performance_json

_BUCKET_NAMES = {"minute": 60, "5m": 300, "15m": 900, "hour": 3600, "day": 86_400}
_MAX_BUCKETS = 10_000


def _stepups(request: web.Request) -> dict[str, Any]:
    """Step-ups issued and completed by this replica since it started (Prometheus counters)."""
    registry = deps.metrics(request).registry
    issued = registry.get_sample_value("behaviorgate_stepups_total", {"state": "issued"}) or 0.0
    done = registry.get_sample_value("behaviorgate_stepups_total", {"state": "completed"}) or 0.0
    return {
        "issued": int(issued),
        "completed": int(done),
        "solveRate": min(1.0, done / issued) if issued else None,
        "scope": "this replica since start",
    }


async def get_performance(request: web.Request, _: Caller | None) -> dict[str, Any]:
    w = window(request, deps.settings(request).api)
    perf = await deps.store(request).performance(w.start, w.end)
    stepups = _stepups(request)
    return {
        "hours": w.hours,
        "from": iso(w.start),
        "to": iso(w.end),
        "performance": performance_json(perf),
        "challengeSolveRate": stepups["solveRate"],
        "stepUps": stepups,
    }


async def get_false_positives(request: web.Request, _: Caller | None) -> dict[str, Any]:
    limit = page_limit(request, deps.settings(request).api)
    before = query_int(request, "before", None, 1, 2**63 - 1)
    reports = await deps.store(request).false_positives(limit=limit, before_id=before)
    items = [false_positive_json(r) for r in reports]
    nxt = reports[-1].feedback.id if len(reports) == limit else None
    return {"falsePositives": items, "count": len(items), "nextBefore": nxt}


def _bucket_seconds(request: web.Request) -> int:
    raw = query_str(request, "bucket", 16)
    if raw is None:
        return 3600
    if raw in _BUCKET_NAMES:
        return _BUCKET_NAMES[raw]
    if not INTEGER.fullmatch(raw.strip()):
        names = ", ".join(_BUCKET_NAMES)
        raise bad("bucket", f"must be one of {names} or a number of seconds (60 to 604800)")
    value = query_int(request, "bucket", None, 60, 7 * 86_400)
    assert value is not None
    return value


async def get_stats(request: web.Request, _: Caller | None) -> dict[str, Any]:
    w = window(request, deps.settings(request).api)
    bucket = _bucket_seconds(request)
    if w.hours * 3600 // bucket >= _MAX_BUCKETS:
        raise bad("bucket", f"too small for {w.hours} hours (at most {_MAX_BUCKETS} buckets)")
    buckets = await deps.store(request).decision_counts(w.start, w.end, bucket)
    totals: dict[str, int] = {}
    for b in buckets:
        for decision, n in b.counts.items():
            totals[decision] = totals.get(decision, 0) + n
    return {
        "hours": w.hours,
        "bucketSeconds": bucket,
        "buckets": [bucket_json(b) for b in buckets],
        "totals": totals,
    }


ROUTES = [
    Route("GET", "/performance", get_performance, "admin"),
    Route("GET", "/false-positives", get_false_positives, "admin"),
    Route("GET", "/stats", get_stats, "admin"),
]
