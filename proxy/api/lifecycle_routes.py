"""Model lifecycle routes (admin): initialize, retrain, version history, activation, drift."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from proxy.api import deps
from proxy.api.auth import Caller
from proxy.api.http import ApiError, bad, body_bool, body_str, only_keys, read_json
from proxy.api.routing import Route
from proxy.api.views import version_json
from storage.store import UnknownVersion

log = structlog.get_logger("behaviorgate.api")
_MAX_VERSION = 2**31 - 1


async def _train(
    request: web.Request, caller: Caller, *, reason: str, force: bool
) -> tuple[int, dict[str, Any]]:
    lc = deps.require_lifecycle(request)
    errors = _lifecycle_errors()
    try:
        job = await lc.request_training(reason=reason, by=caller.actor, force=force)
    except errors["InsufficientData"] as exc:
        have, need = int(getattr(exc, "have", 0)), int(getattr(exc, "need", 0))
        raise ApiError(
            409,
            "insufficient_data",
            f"insufficient training data: {have} of {need} samples",
            samples={"have": have, "need": need},
        ) from None
    except errors["JobRunning"] as exc:
        raise ApiError(
            409, "job_running", "a training job is already running", job=getattr(exc, "job", None)
        ) from None
    log.info("training_requested", by=caller.actor, reason=reason, job=job.get("jobId"))
    return 202, {"jobId": job.get("jobId"), "job": job}


def _lifecycle_errors() -> dict[str, type[BaseException]]:
    import proxy.lifecycle as lifecycle

    return {
        "InsufficientData": lifecycle.InsufficientData,
        "JobRunning": lifecycle.JobRunning,
    }


async def initialize(request: web.Request, caller: Caller | None) -> tuple[int, dict[str, Any]]:
    doc = await read_json(request, deps.settings(request).api.max_body_bytes)
    only_keys(doc, {"force", "reason"})
    force = body_bool(doc, "force", False)
    reason = body_str(doc, "reason", required=False, max_len=200) or "initialize"
    assert caller is not None
    return await _train(request, caller, reason=reason, force=force)


async def retrain(request: web.Request, caller: Caller | None) -> tuple[int, dict[str, Any]]:
    doc = await read_json(request, deps.settings(request).api.max_body_bytes)
    only_keys(doc, {"force", "reason"})
    force = body_bool(doc, "force", False)
    reason = body_str(doc, "reason", required=False, max_len=200) or "manual retrain"
    assert caller is not None
    return await _train(request, caller, reason=reason, force=force)


async def list_models(request: web.Request, _: Caller | None) -> dict[str, Any]:
    versions = await deps.store(request).registry.list_versions()
    return {
        "activeVersion": deps.models(request).version,
        "versions": [version_json(v) for v in versions],
    }


def _version(request: web.Request) -> int:
    raw = request.match_info["version"]
    if not raw.isdigit() or len(raw) > 10 or not 1 <= int(raw) <= _MAX_VERSION:
        raise bad("version", f"must be an integer between 1 and {_MAX_VERSION}")
    return int(raw)


async def activate(request: web.Request, caller: Caller | None) -> dict[str, Any]:
    version = _version(request)
    assert caller is not None
    registry = deps.store(request).registry
    try:
        activated = await registry.activate(version, by=caller.actor)
    except UnknownVersion:
        raise ApiError(404, "not_found", "no such model version") from None
    holder = deps.models(request)
    await holder.refresh()  # this replica switches now; the others follow the registry
    log.info("model_activated", version=version, by=caller.actor)
    if holder.version != version:
        raise ApiError(
            409,
            "activation_refused",
            "the version was activated but cannot be loaded here",
            detail=holder.last_error,
            version=version_json(activated),
        )
    return {"activeVersion": holder.version, "version": version_json(activated)}


async def drift_status(request: web.Request, _: Caller | None) -> dict[str, Any]:
    lc = deps.require_lifecycle(request)
    report = await lc.drift_status()
    return {"drift": report}


ROUTES = [
    Route("POST", "/initialize", initialize, "admin"),
    Route("POST", "/retrain", retrain, "admin"),
    Route("GET", "/models", list_models, "admin"),
    Route("POST", "/models/{version}/activate", activate, "admin"),
    Route("GET", "/drift/status", drift_status, "admin"),
]
