"""``GET /status`` (the spec's model status) and ``GET /metrics`` (Prometheus, admin)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from proxy.api import deps
from proxy.api.auth import Caller
from proxy.api.http import ApiError
from proxy.api.routing import Route
from storage.records import finite_or_none


def _mode(request: web.Request, status: dict[str, Any]) -> str:
    mode = status.get("mode")
    if mode in ("learning", "enforce", "shadow"):
        return mode
    return "learning" if deps.models(request).current is None else deps.settings(request).mode


async def get_status(request: web.Request, _: Caller | None) -> dict[str, Any]:
    end = datetime.now(UTC) + timedelta(microseconds=1)
    perf = await deps.store(request).performance(end - timedelta(hours=24), end)
    lc = deps.lifecycle(request)
    if lc is not None:
        await lc.refresh_samples()  # at most once a minute per worker: a 30-day count is not free
    status: dict[str, Any] = lc.status() if lc is not None else {}
    drift = status.get("driftMetrics") or {}
    samples = status.get("samples")
    return {
        "performance": {
            "totalPredictions": perf.total,
            "anomalyCount": perf.anomaly_count,
            "averageAnomalyScore": finite_or_none(perf.avg_composite),
            "averageConfidence": finite_or_none(perf.avg_confidence),
            "driftMetrics": {
                "isDrifting": bool(drift.get("isDrifting", False)),
                "driftScore": finite_or_none(drift.get("driftScore")),
            },
        },
        "isRetraining": bool(status.get("isRetraining", False)),
        "lastRetrainingTime": status.get("lastRetrainingTime"),
        "modelVersion": deps.models(request).version,
        "mode": _mode(request, status),
        "samples": samples if isinstance(samples, dict) else None,
        "windowHours": 24,
    }


async def get_metrics(request: web.Request, _: Caller | None) -> web.Response:
    if deps.settings(request).api.metrics != "admin":
        raise ApiError(404, "not_found", "metrics are not served here")
    body = deps.metrics(request).render()
    return web.Response(
        body=body,
        headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
            "Cache-Control": "no-store",
        },
    )


ROUTES = [
    Route("GET", "/status", get_status, "user"),
    Route("GET", "/metrics", get_metrics, "admin"),
]
