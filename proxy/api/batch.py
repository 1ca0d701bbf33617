"""``POST /predictions/batch`` (admin): score sessions and users now, from their current history.

How a context is built (kept simple on purpose): a listed user is resolved to the session of
their most recent stored prediction (within ``api.max_window_hours``). For a session, one history
read gives its last event; the endpoint and client IP of that event (overridable per item) form
a request context at the current time, and a second read scores it. The user agent is not kept
in history: give ``userAgent`` per item, otherwise the device is scored as unknown. Nothing is
recorded or enforced; ids with no history are reported as unknown, never fatal.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from proxy.api import deps
from proxy.api.auth import Caller
from proxy.api.http import bad, read_json, window
from proxy.api.routing import Route
from scoring.context import RequestContext
from scoring.decision import Decision, decide
from scoring.explain import explain
from scoring.features import extract

_SESSION_KEYS = {"sessionId", "userId", "userAgent", "ipAddress", "endpoint", "method"}


def _text(item: dict[str, Any], key: str, where: str, max_len: int = 512) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise bad(f"{where}.{key}", f"must be a string of 1 to {max_len} characters")
    return value


def _parse(doc: dict[str, Any], cap: int) -> tuple[list[dict[str, Any]], list[str]]:
    for key in doc:
        if key not in ("sessions", "users"):
            raise bad(str(key)[:100], "unknown field")
    sessions, users = doc.get("sessions", []), doc.get("users", [])
    if not isinstance(sessions, list):
        raise bad("sessions", "must be a list")
    if not isinstance(users, list):
        raise bad("users", "must be a list")
    if not sessions and not users:
        raise bad("sessions", "give at least one session or user")
    if len(sessions) + len(users) > cap:
        raise bad("sessions", f"at most {cap} sessions and users together")
    parsed = []
    for i, item in enumerate(sessions):
        where = f"sessions[{i}]"
        if not isinstance(item, dict):
            raise bad(where, "must be an object")
        for key in item:
            if key not in _SESSION_KEYS:
                raise bad(f"{where}.{str(key)[:100]}", "unknown field")
        if _text(item, "sessionId", where, 256) is None:
            raise bad(f"{where}.sessionId", "is required")
        for key in _SESSION_KEYS - {"sessionId"}:
            _text(item, key, where)
        parsed.append(item)
    for i, user in enumerate(users):
        if not isinstance(user, str) or not 0 < len(user) <= 256:
            raise bad(f"users[{i}]", "must be a string of 1 to 256 characters")
    return parsed, users


def _context(
    item: dict[str, Any], now: float, route: str, ip: str, sensitivity: int
) -> RequestContext:
    return RequestContext(
        ts=now,
        method=(item.get("method") or "GET").upper()[:16],
        path=route,
        route=route,
        user_id=item.get("userId"),
        session_id=item["sessionId"],
        client_ip=ip,
        user_agent=item.get("userAgent") or "",
        request_bytes=0,
        sensitivity=sensitivity,
        authenticated=item.get("userId") is not None,
    )


async def score_session(request: web.Request, item: dict[str, Any]) -> dict[str, Any]:
    """One result object for one session item (see module docstring)."""
    pipeline, hist = deps.pipeline(request), deps.history(request)
    now = time.time()
    out: dict[str, Any] = {"sessionId": item["sessionId"], "userId": item.get("userId")}
    probe = await hist.read(
        _context(item, now, item.get("endpoint") or "/", item.get("ipAddress") or "0.0.0.0", 0)
    )
    n_events = len(probe.route_codes)
    if n_events == 0:
        return {**out, "found": False, "error": "no history for this session"}
    route = item.get("endpoint") or probe.route_vocab[int(probe.route_codes[-1])]
    ip = item.get("ipAddress") or probe.ip_vocab[int(probe.ip_codes[-1])]
    match = pipeline.policy.match((item.get("method") or "GET").upper()[:16], route)
    rule = pipeline.rules.get(match.rule_name) or pipeline.rules["default"]
    ctx = _context(item, now, route, ip, 0 if match.rejected else match.sensitivity)
    snapshot = await hist.read(ctx)
    vector = extract(snapshot, ctx, now, deps.settings(request).history.timezone)
    out.update(
        found=True,
        revoked=snapshot.revoked,
        events=n_events,
        rule=rule.name,
        context={"endpoint": route, "method": ctx.method, "ipAddress": ip},
    )
    active = deps.models(request).current
    if active is None:
        return {
            **out,
            "decision": Decision.LEARNING.value,
            "anomalyScore": None,
            "modelVersion": None,
        }
    result = active.scorer.score(vector)
    decision = decide(result.composite, rule.thresholds, strict=rule.strict)
    out.update(
        decision=decision.value,
        isAnomaly=decision.is_anomaly,
        anomalyScore=result.composite,
        scores={"isolationForest": result.iforest, "autoencoder": result.autoencoder},
        modelAgreement=result.model_agreement,
        confidence=result.confidence,
        modelVersion=active.version,
    )
    if decision.is_anomaly:
        out["explanation"] = explain(active.scorer, vector).to_json()
    return out


async def _session_of(request: web.Request, user_id: str) -> dict[str, Any] | None:
    w = window(request, deps.settings(request).api, deps.settings(request).api.max_window_hours)
    latest = await deps.store(request).list_predictions(w.start, w.end, user_id=user_id, limit=1)
    if not latest or latest[0].session_id is None:
        return None
    rec = latest[0]
    return {"sessionId": rec.session_id, "userId": user_id, "method": rec.method or "GET"}


async def post_batch(request: web.Request, _: Caller | None) -> dict[str, Any]:
    api = deps.settings(request).api
    doc = await read_json(request, api.max_body_bytes)
    sessions, users = _parse(doc, api.batch_max_items)
    results = [{"kind": "session", **await score_session(request, item)} for item in sessions]
    for user in users:
        item = await _session_of(request, user)
        if item is None:
            results.append(
                {
                    "kind": "user",
                    "userId": user,
                    "found": False,
                    "error": "no recent predictions for this user",
                }
            )
        else:
            results.append({"kind": "user", **await score_session(request, item)})
    return {
        "results": results,
        "count": len(results),
        "unknown": sum(1 for r in results if not r["found"]),
    }


ROUTES = [Route("POST", "/predictions/batch", post_batch, "admin")]
