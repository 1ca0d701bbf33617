"""The OpenAPI 3.1 document of the API, built from code so it cannot drift from the routes.

``docs/openapi.json`` is this document for the default prefix (``python -m proxy.api.openapi``
rewrites it; a test checks they are equal).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from aiohttp import web

from proxy.api import deps
from proxy.api.auth import Caller
from proxy.api.routing import Route

NUM = {"type": ["number", "null"]}
INT = {"type": "integer"}
STR = {"type": "string"}
OSTR = {"type": ["string", "null"]}
BOOL = {"type": "boolean"}
OBJ = {"type": "object"}
COUNTS = {"type": "object", "additionalProperties": INT}
DECISIONS = ["ALLOW", "MONITOR", "CHALLENGE", "REQUIRE_2FA", "BLOCK", "LEARNING", "ERROR"]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(
    required: dict[str, Any], optional: dict[str, Any] | None = None, *, closed: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
    }
    if closed:
        out["additionalProperties"] = False
    return out


def ok(**props: Any) -> dict[str, Any]:
    return obj({"success": {"const": True}, **props})


THRESHOLDS = obj(
    {},
    {
        k: {"type": "number", "minimum": 0, "maximum": 1}
        for k in ("monitor", "challenge", "require2fa", "block", "strictBlock")
    },
    closed=True,
)
TOP_FEATURE = obj(
    {
        "feature": STR,
        "contribution": {"type": "number"},
        "value": {"type": ["number", "null"]},
        "normalizedValue": STR,
    }
)
SUMMARY = obj(
    {
        "id": STR,
        "timestamp": STR,
        "sessionId": OSTR,
        "userId": OSTR,
        "method": STR,
        "route": STR,
        "rule": OSTR,
        "clientIp": OSTR,
        "decision": STR,
        "isAnomaly": BOOL,
        "anomalyScore": NUM,
        "scores": obj({"isolationForest": NUM, "autoencoder": NUM}),
        "modelAgreement": NUM,
        "confidence": NUM,
        "modelVersion": {"type": ["integer", "null"]},
        "processingTimeMs": NUM,
        "upstreamStatus": {"type": ["integer", "null"]},
    }
)
SCHEMAS: dict[str, Any] = {
    "Error": obj(
        {"success": {"const": False}, "error": obj({"code": STR, "message": STR}, {"field": STR})}
    ),
    "PredictionSummary": SUMMARY,
    "PredictionDetail": {
        "allOf": [
            ref("PredictionSummary"),
            obj(
                {
                    "topFeatures": {"type": "array", "items": TOP_FEATURE},
                    "explanation": OSTR,
                    "explanationSource": STR,
                    "note": OSTR,
                    "enforced": OSTR,
                    "featureSetVersion": STR,
                }
            ),
        ]
    },
    "Feedback": obj(
        {
            "id": INT,
            "predictionId": STR,
            "userId": STR,
            "isFalsePositive": BOOL,
            "notes": STR,
            "createdAt": STR,
        }
    ),
    "ModelVersion": obj(
        {
            "version": INT,
            "createdAt": STR,
            "status": STR,
            "isActive": BOOL,
            "featureSetVersion": STR,
            "sampleCount": INT,
            "windowStart": OSTR,
            "windowEnd": OSTR,
            "activatedAt": OSTR,
            "activatedBy": OSTR,
            "trainingMetrics": OBJ,
        }
    ),
    "Performance": obj(
        {
            "totalPredictions": INT,
            "anomalyCount": INT,
            "anomalyRate": {"type": "number"},
            "averageAnomalyScore": NUM,
            "averageConfidence": NUM,
            "modelAgreement": NUM,
            "processingTimeMs": obj({"p50": NUM, "p95": NUM, "p99": NUM}),
            "feedbackCount": INT,
            "falsePositiveCount": INT,
            "falsePositiveRate": {"type": "number"},
            "decisions": COUNTS,
        }
    ),
    "Tally": obj(
        {
            "predictions": INT,
            "changed": INT,
            "before": COUNTS,
            "after": COUNTS,
            "transitions": {"type": "array", "items": obj({"from": STR, "to": STR, "count": INT})},
        }
    ),
    "BatchResult": obj(
        {"kind": {"enum": ["session", "user"]}, "found": BOOL},
        {
            "sessionId": STR,
            "userId": OSTR,
            "decision": {"enum": DECISIONS},
            "anomalyScore": NUM,
            "error": STR,
        },
    ),
    "Release": ok(action=STR, by=STR, recordId={"type": ["integer", "null"]}),
}

HOURS = {
    "name": "hours",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 720, "default": 24},
}
LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
}
PID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"},
}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid parameter (the error names the field)",
        401: "Not authenticated",
        403: "Not an administrator",
        404: "Not found (or not yours)",
        409: "Conflict",
        413: "Body too large",
        429: "Rate limited",
        503: "A dependency is unavailable",
    }
    return {
        str(c): {"description": text[c], "content": {"application/json": {"schema": ref("Error")}}}
        for c in codes
    }


def op(
    summary: str,
    ok_schema: dict[str, Any],
    *,
    access: str,
    status: int = 200,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    codes = {401, 503, *errors}
    if access == "admin":
        codes |= {403, 429}
    if body is not None:
        codes |= {400, 413}
    if params:
        codes.add(400)
    out: dict[str, Any] = {
        "summary": summary,
        "x-access": access,
        "responses": {
            str(status): {
                "description": "Success",
                "content": {"application/json": {"schema": ok_schema}},
            },
            **_errors(*sorted(codes)),
        },
    }
    if access != "public":
        out["security"] = [{"bearer": []}]
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return out


def paths() -> dict[str, Any]:
    detail_ok = ok(prediction=ref("PredictionDetail"))
    released = ref("Release")
    user_body = obj(
        {"userId": {"type": "string", "minLength": 1, "maxLength": 256}},
        {"notes": {"type": "string", "maxLength": 1000}},
        closed=True,
    )
    return {
        "/status": {
            "get": op(
                "Model status and 24 h performance",
                ok(
                    performance=obj(
                        {
                            "totalPredictions": INT,
                            "anomalyCount": INT,
                            "averageAnomalyScore": NUM,
                            "averageConfidence": NUM,
                            "driftMetrics": obj({"isDrifting": BOOL, "driftScore": NUM}),
                        }
                    ),
                    isRetraining=BOOL,
                    lastRetrainingTime=OSTR,
                    modelVersion={"type": ["integer", "null"]},
                    mode={"enum": ["learning", "enforce", "shadow"]},
                ),
                access="user",
            )
        },
        "/initialize": {
            "post": op(
                "Train the first model (202 with a job id)",
                ok(jobId=STR, job=OBJ),
                access="admin",
                status=202,
                errors=(409,),
                body=obj(
                    {}, {"force": BOOL, "reason": {"type": "string", "maxLength": 200}}, closed=True
                ),
            )
        },
        "/retrain": {
            "post": op(
                "Retrain now (202 with a job id)",
                ok(jobId=STR, job=OBJ),
                access="admin",
                status=202,
                errors=(409,),
                body=obj(
                    {},
                    {"force": BOOL, "reason": {"type": "string", "maxLength": 200}},
                    closed=True,
                ),
            )
        },
        "/models": {
            "get": op(
                "Model version history",
                ok(
                    activeVersion={"type": ["integer", "null"]},
                    versions={"type": "array", "items": ref("ModelVersion")},
                ),
                access="admin",
            )
        },
        "/models/{version}/activate": {
            "post": op(
                "Activate (or roll back to) a version",
                ok(activeVersion=INT, version=ref("ModelVersion")),
                access="admin",
                errors=(404, 409),
                params=[
                    {
                        "name": "version",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                    }
                ],
            )
        },
        "/drift/status": {
            "get": op(
                "Drift: PSI, KS, distribution and score drift, trend, recent checks",
                ok(drift=OBJ),
                access="admin",
            )
        },
        "/performance": {
            "get": op(
                "Performance over a window",
                ok(hours=INT, performance=ref("Performance"), challengeSolveRate=NUM, stepUps=OBJ),
                access="admin",
                params=[HOURS],
            )
        },
        "/false-positives": {
            "get": op(
                "Reported false positives, newest first",
                ok(
                    falsePositives={
                        "type": "array",
                        "items": obj(
                            {
                                "feedback": ref("Feedback"),
                                "prediction": {
                                    "oneOf": [ref("PredictionSummary"), {"type": "null"}]
                                },
                            }
                        ),
                    },
                    count=INT,
                    nextBefore={"type": ["integer", "null"]},
                ),
                access="admin",
                params=[
                    LIMIT,
                    {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ],
            )
        },
        "/stats": {
            "get": op(
                "Decisions over time buckets",
                ok(
                    hours=INT,
                    bucketSeconds=INT,
                    totals=COUNTS,
                    buckets={
                        "type": "array",
                        "items": obj({"start": STR, "counts": COUNTS, "total": INT}),
                    },
                ),
                access="admin",
                params=[
                    HOURS,
                    {
                        "name": "bucket",
                        "in": "query",
                        "description": "seconds (60..604800) or minute/5m/15m/hour/day",
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/predictions": {
            "get": op(
                "The caller's recent predictions (admins: any userId)",
                ok(
                    hours=INT,
                    count=INT,
                    nextBefore=OSTR,
                    predictions={"type": "array", "items": ref("PredictionSummary")},
                ),
                access="user",
                errors=(403,),
                params=[
                    HOURS,
                    LIMIT,
                    {"name": "before", "in": "query", "schema": PID["schema"]},
                    {
                        "name": "userId",
                        "in": "query",
                        "schema": {"type": "string", "maxLength": 256},
                    },
                ],
            )
        },
        "/predictions/batch": {
            "post": op(
                "Score sessions and users now from their history",
                ok(results={"type": "array", "items": ref("BatchResult")}, count=INT, unknown=INT),
                access="admin",
                body=obj(
                    {},
                    {
                        "sessions": {
                            "type": "array",
                            "items": obj(
                                {"sessionId": {"type": "string", "minLength": 1, "maxLength": 256}},
                                {
                                    k: {"type": "string", "minLength": 1, "maxLength": 512}
                                    for k in (
                                        "userId",
                                        "userAgent",
                                        "ipAddress",
                                        "endpoint",
                                        "method",
                                    )
                                },
                                closed=True,
                            ),
                        },
                        "users": {
                            "type": "array",
                            "items": {"type": "string", "minLength": 1, "maxLength": 256},
                        },
                    },
                    closed=True,
                ),
            )
        },
        "/predictions/{id}": {
            "get": op(
                "One prediction with its explanation (owner or admin)",
                detail_ok,
                access="any",
                errors=(404,),
                params=[PID],
            )
        },
        "/predictions/{id}/feedback": {
            "post": op(
                "Report a false positive (owner)",
                ok(feedback=ref("Feedback")),
                access="any",
                status=201,
                errors=(404, 429),
                params=[PID],
                body=obj(
                    {"isFalsePositive": BOOL},
                    {"notes": {"type": "string", "maxLength": 1000}},
                    closed=True,
                ),
            )
        },
        "/thresholds/what-if": {
            "post": op(
                "Replay proposed thresholds over stored predictions",
                ok(
                    hours=INT,
                    overall=ref("Tally"),
                    rules={"type": "object", "additionalProperties": ref("Tally")},
                    skipped=INT,
                    truncated=BOOL,
                    proposed=OBJ,
                ),
                access="admin",
                body=obj(
                    {},
                    {
                        "hours": {"type": "integer", "minimum": 1, "maximum": 720},
                        "thresholds": THRESHOLDS,
                        "rules": {"type": "object", "additionalProperties": THRESHOLDS},
                    },
                    closed=True,
                ),
            )
        },
        "/release/unblock": {
            "post": op(
                "Lift a session's revocation",
                released,
                access="admin",
                errors=(404,),
                body=obj(
                    {},
                    {
                        "sessionId": {"type": "string", "minLength": 1, "maxLength": 256},
                        "userId": {"type": "string", "minLength": 1, "maxLength": 256},
                        "incidentId": {"type": "integer", "minimum": 1},
                        "notes": {"type": "string", "maxLength": 1000},
                    },
                    closed=True,
                ),
            )
        },
        "/release/clear-escalation": {
            "post": op("Forget a user's recent step-ups", released, access="admin", body=user_body)
        },
        "/release/reset-user": {
            "post": op(
                "Forget a user's behavioural baseline", released, access="admin", body=user_body
            )
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (admin)",
                "x-access": "admin",
                "security": [{"bearer": []}],
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": STR}},
                    },
                    **_errors(401, 403, 404, 429),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "x-access": "public",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": OBJ}},
                    }
                },
            }
        },
    }


def document(prefix: str = "/api/ml-anomaly") -> dict[str, Any]:
    """The OpenAPI document with every path under ``prefix``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "BehaviorGate ML anomaly API",
            "version": "1.0.0",
            "description": "Answered by the gateway itself; camelCase JSON with `success`. "
            "Bearer: the same JWT as proxied traffic, or an admin API token.",
        },
        "servers": [{"url": "/"}],
        "paths": {prefix + p: v for p, v in paths().items()},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def render(prefix: str = "/api/ml-anomaly") -> str:
    return json.dumps(document(prefix), indent=2, sort_keys=True) + "\n"


async def get_openapi(request: web.Request, _: Caller | None) -> web.Response:
    body = render(deps.settings(request).api.prefix)
    return web.Response(
        text=body, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


ROUTES = [Route("GET", "/openapi.json", get_openapi, "public")]

if __name__ == "__main__":
    sys.stdout.write(render())
