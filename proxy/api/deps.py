"""Typed access to the gateway's resources from API handlers (and the optional lifecycle)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from config.settings import Settings
from proxy.api.http import ApiError
from proxy.app import HISTORY, METRICS, MODELS, PIPELINE, SETTINGS, STORE
from proxy.metrics import Metrics
from proxy.models import ModelHolder
from proxy.pipeline import Pipeline
from storage.history import HistoryStore
from storage.store import Store


def settings(request: web.Request) -> Settings:
    return request.app[SETTINGS]


def store(request: web.Request) -> Store:
    return _get(request, STORE)


def history(request: web.Request) -> HistoryStore:
    return _get(request, HISTORY)


def models(request: web.Request) -> ModelHolder:
    return _get(request, MODELS)


def pipeline(request: web.Request) -> Pipeline:
    return _get(request, PIPELINE)


def metrics(request: web.Request) -> Metrics:
    return request.app[METRICS]


def _get(request: web.Request, key: web.AppKey[Any]) -> Any:
    value = request.app.get(key)
    if value is None:
        raise ApiError(503, "starting", "the gateway is starting")
    return value


def lifecycle(request: web.Request) -> Any | None:
    """The model lifecycle (``proxy.lifecycle``), or None where this gateway has none."""
    try:
        from proxy.lifecycle import LIFECYCLE
    except ImportError:
        return None
    return request.app.get(LIFECYCLE)


def require_lifecycle(request: web.Request) -> Any:
    lc = lifecycle(request)
    if lc is None:
        raise ApiError(
            503, "lifecycle_unavailable", "model lifecycle is not running on this gateway"
        )
    return lc
