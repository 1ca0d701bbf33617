"""A caller's own predictions, their detail with explanation, and the "this was me" feedback.

Ownership: a prediction belongs to its user; one recorded without a user (anonymous traffic)
belongs to its pseudo-session. Anyone else — except an admin — gets the same 404 as for an id
that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import structlog
from aiohttp import web

from proxy.api import deps
from proxy.api.auth import Caller
from proxy.api.http import (
    ApiError,
    body_bool,
    not_found,
    only_keys,
    page_limit,
    query_str,
    read_json,
    window,
)
from proxy.api.routing import Route
from proxy.api.views import (
    feedback_json,
    has_spec_explanation,
    prediction_detail,
    prediction_summary,
)
from scoring.explain import explain
from storage.records import NOTES_LIMIT, PredictionRecord

log = structlog.get_logger("behaviorgate.api")
_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def owns(caller: Caller, rec: PredictionRecord) -> bool:
    if rec.user_id is not None:
        return caller.user_id is not None and caller.user_id == rec.user_id
    return rec.session_id is not None and caller.session_id == rec.session_id


async def visible_prediction(request: web.Request, caller: Caller) -> PredictionRecord:
    """The prediction named in the path if the caller may see it, else 404."""
    pid = request.match_info["id"]
    if not _ID.match(pid):
        raise not_found("prediction")
    rec = await deps.store(request).get_prediction(pid)
    if rec is None or not (caller.is_admin or owns(caller, rec)):
        raise not_found("prediction")
    return rec


def _listed_user(request: web.Request, caller: Caller) -> str:
    """Whose predictions to list: the caller's own; admins may name any user (``userId``)."""
    asked = query_str(request, "userId", 256)
    if asked is None:
        if caller.user_id is None:  # an API token is not a user: it has none of its own
            raise ApiError(
                400, "invalid_parameter", "userId: required with an API token", field="userId"
            )
        return caller.user_id
    if asked != caller.user_id and not caller.is_admin:
        raise ApiError(
            403, "admin_required", "only administrators may list another user's predictions"
        )
    return asked


async def list_predictions(request: web.Request, caller: Caller | None) -> dict[str, Any]:
    assert caller is not None
    api = deps.settings(request).api
    w = window(request, api)
    limit = page_limit(request, api)
    before = query_str(request, "before", 26)
    if before is not None and not _ID.match(before):
        raise ApiError(400, "invalid_parameter", "before: must be a prediction id", field="before")
    user_id = _listed_user(request, caller)
    records = await deps.store(request).list_predictions(
        w.start, w.end, user_id=user_id, limit=limit, before_id=before
    )
    return {
        "hours": w.hours,
        "predictions": [prediction_summary(r) for r in records],
        "count": len(records),
        "nextBefore": records[-1].id if len(records) == limit else None,
    }


def _explanation(request: web.Request, rec: PredictionRecord) -> tuple[dict[str, Any] | None, str]:
    """The stored explanation, or one computed now from the stored vector with the active model."""
    if has_spec_explanation(rec.explanation):
        return rec.explanation, "stored"
    active = deps.models(request).current
    vector = rec.feature_array()
    if active is None or vector.shape[0] != active.scorer.n_features or not vector.size:
        return None, "unavailable"
    if rec.feature_set_version and rec.feature_set_version != active.bundle.feature_set_version:
        return None, "unavailable"
    doc = explain(active.scorer, vector.astype(np.float64)).to_json()
    return doc, f"computed:v{active.version}"


async def get_prediction(request: web.Request, caller: Caller | None) -> dict[str, Any]:
    assert caller is not None
    rec = await visible_prediction(request, caller)
    explanation, source = _explanation(request, rec)
    return {"prediction": prediction_detail(rec, explanation, source)}


async def post_feedback(request: web.Request, caller: Caller | None) -> tuple[int, dict[str, Any]]:
    assert caller is not None
    doc = await read_json(request, deps.settings(request).api.max_body_bytes)
    rec = await visible_prediction(request, caller)
    only_keys(doc, {"isFalsePositive", "notes"})
    is_fp = body_bool(doc, "isFalsePositive")
    notes = doc.get("notes", "")
    if not isinstance(notes, str) or len(notes) > NOTES_LIMIT:
        raise ApiError(
            400,
            "invalid_parameter",
            f"notes: must be a string of at most {NOTES_LIMIT} characters",
            field="notes",
        )
    author = caller.user_id or caller.actor
    fb = await deps.store(request).add_feedback(
        rec.id, author, is_false_positive=is_fp, notes=notes
    )
    if fb is None:  # expired between the read and the write
        raise not_found("prediction")
    log.info("feedback", prediction_id=rec.id, by=caller.actor, false_positive=is_fp, rule=rec.rule)
    return 201, {"feedback": feedback_json(fb)}


ROUTES = [
    Route("GET", "/predictions", list_predictions, "user"),
    Route("GET", "/predictions/{id}", get_prediction, "any"),
    Route("POST", "/predictions/{id}/feedback", post_feedback, "any", "feedback"),
]
