"""The ML anomaly API on a real socket: every route's happy path, auth, validation, empty store."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import jsonschema
import jwt
import numpy as np
import pytest

from config.model import ModelSettings
from proxy.api.openapi import document, render
from proxy.app import HISTORY, MODELS, STORE, create_app, server_options
from scoring.context import EventOutcome, RequestContext
from scoring.features import FEATURE_NAMES, FEATURE_SET_VERSION
from scoring.training import train_bundle
from storage.records import Incident, PredictionRecord
from tests.proxyharness import RecordingUpstream, gateway_settings

SECRET = "s" * 40
ADMIN_TOKEN = "admin-token-for-tests-0123456789"  # noqa: S105 - a test token
P = "/api/ml-anomaly"
DOC = document(P)


def token(user: str, *, roles: list[str] | None = None, sid: str | None = None) -> str:
    claims = {"sub": user, "sid": sid or f"s-{user}", "exp": int(time.time()) + 3600}
    if roles:
        claims["roles"] = roles
    return jwt.encode(claims, SECRET, algorithm="HS256")


ALICE = {"Authorization": "Bearer " + token("alice")}
BOB = {"Authorization": "Bearer " + token("bob")}
ADMIN = {"Authorization": "Bearer " + token("root", roles=["admin"])}
API_TOKEN = {"Authorization": "Bearer " + ADMIN_TOKEN}


def api_overrides(**extra):
    return {
        "identity": {"jwt": {"hs256_secret": SECRET}},
        "api": {
            "admin_token_hashes": [hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()],
            "feedback_per_minute": 3,
            **extra.pop("api", {}),
        },
        "lifecycle": {"auto_train": False, "daily_retrain": False},
        **extra,
    }


@pytest.fixture(scope="module")
def bundle_bytes() -> bytes:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(1200, len(FEATURE_NAMES))).astype(np.float32)
    s = ModelSettings.model_validate(
        {
            "autoencoder": {"epochs": 3, "batch_size": 128, "encoding_dim": 4},
            "isolation_forest": {"n_trees": 20},
            "training": {"min_samples": 100},
        }
    )
    return train_bundle(X, list(FEATURE_NAMES), FEATURE_SET_VERSION, s).to_bytes()


@pytest.fixture
async def upstream(aiohttp_server):
    rec = RecordingUpstream()
    server = await aiohttp_server(rec.app())
    rec.port = server.port  # type: ignore[attr-defined]
    return rec


@pytest.fixture
def gateway(aiohttp_server, upstream, tmp_path):
    async def make(**overrides):
        settings = gateway_settings(upstream.port, str(tmp_path), **api_overrides(**overrides))
        opts = server_options(settings)
        opts.pop("handler_cancellation")
        server = await aiohttp_server(create_app(settings), **opts)
        return server

    return make


@pytest.fixture
async def client():
    async with aiohttp.ClientSession() as session:
        yield session


class Api:
    def __init__(self, server, session: aiohttp.ClientSession) -> None:
        self.server, self.session = server, session
        self.app = server.app

    async def call(
        self,
        method: str,
        path: str,
        headers=None,
        *,
        body=None,
        raw: bytes | None = None,
        params=None,
    ):
        url = f"http://127.0.0.1:{self.server.port}{P}{path}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {**(headers or {})}
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.request(method, url, headers=hdrs, data=data, params=params) as r:
            text = await r.text()
            doc = json.loads(text) if r.content_type == "application/json" else text
            return r.status, doc, r.headers


def check_schema(path: str, method: str, status: int, body) -> None:
    """Validate a response body against the document's schema for (path, method, status)."""
    op = DOC["paths"][P + path][method.lower()]
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": DOC["components"]}).validate(body)


@pytest.fixture
async def api(gateway, client):
    return Api(await gateway(), client)


def record(
    user: str | None,
    *,
    decision="ALLOW",
    composite=0.2,
    rule="default",
    ts=None,
    session=None,
    **kw,
):
    kw.setdefault("processing_ms", 1.5)
    return PredictionRecord(
        ts=ts or datetime.now(UTC) - timedelta(minutes=5),
        session_id=session or f"s-{user}",
        user_id=user,
        method="GET",
        route="/api/x",
        rule=rule,
        client_ip="10.0.0.1",
        features=np.zeros(len(FEATURE_NAMES), np.float32),
        composite=composite,
        iforest_score=composite,
        autoencoder_score=composite,
        decision=decision,
        is_anomaly=decision in ("MONITOR", "CHALLENGE", "REQUIRE_2FA", "BLOCK"),
        confidence=0.8,
        agreement=0.9,
        feature_set_version=FEATURE_SET_VERSION,
        **kw,
    )


# ------------------------------------------------------------------ document and routing


async def test_openapi_served_equals_docs_copy(api):
    status, doc, _ = await api.call("GET", "/openapi.json")
    assert status == 200
    committed = json.loads((Path(__file__).parent.parent / "docs" / "openapi.json").read_text())
    assert doc == committed == json.loads(render())
    jsonschema.Draft202012Validator.check_schema(doc["components"]["schemas"]["Error"])


async def test_unknown_route_and_wrong_method_are_json_and_never_forwarded(api, upstream):
    status, doc, _ = await api.call("GET", "/nope/deeper", ALICE)
    assert status == 404 and doc["error"]["code"] == "not_found"
    status, doc, headers = await api.call("DELETE", "/status", ALICE)
    assert status == 405 and "GET" in headers["Allow"]
    status, doc, _ = await api.call("GET", "", ALICE)
    assert status == 404
    assert upstream.seen == []


# ------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/models"),
        ("POST", "/models/1/activate"),
        ("GET", "/drift/status"),
        ("GET", "/performance"),
        ("GET", "/false-positives"),
        ("GET", "/stats"),
        ("POST", "/predictions/batch"),
        ("POST", "/thresholds/what-if"),
        ("POST", "/initialize"),
        ("POST", "/retrain"),
        ("POST", "/release/unblock"),
        ("POST", "/release/clear-escalation"),
        ("POST", "/release/reset-user"),
        ("GET", "/metrics"),
    ],
)
async def test_admin_routes_refuse_anonymous_and_users(api, method, path):
    status, doc, _ = await api.call(method, path, body={})
    assert status == 401 and doc["success"] is False
    status, doc, _ = await api.call(method, path, ALICE, body={})
    assert (status, doc["error"]["code"]) == (403, "admin_required")
    status, _, _ = await api.call(method, path, {"Authorization": "Bearer not-the-token"}, body={})
    assert status == 401


async def test_admin_by_role_and_by_api_token(api):
    for headers in (ADMIN, API_TOKEN):
        status, doc, _ = await api.call("GET", "/models", headers)
        assert status == 200 and doc == {"success": True, "activeVersion": None, "versions": []}
        check_schema("/models", "GET", 200, doc)


async def test_mistyped_api_token_is_named_as_such(api):
    wrong = {"Authorization": "Bearer " + ADMIN_TOKEN + "x"}
    status, doc, headers = await api.call("GET", "/models", wrong)
    assert status == 401 and doc["error"]["code"] == "invalid_token"
    assert "API token" in doc["error"]["message"] and "Bearer" in headers["WWW-Authenticate"]


async def test_bad_jwt_is_401_with_reason(api):
    forged = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 60, "roles": ["admin"]},
        "x" * 40,
        algorithm="HS256",
    )
    status, doc, headers = await api.call("GET", "/status", {"Authorization": "Bearer " + forged})
    assert status == 401 and doc["error"]["code"] == "invalid_signature"
    assert "Bearer" in headers["WWW-Authenticate"]


# ------------------------------------------------------------------ status, empty store


async def test_status_on_empty_store_is_learning(api):
    status, doc, _ = await api.call("GET", "/status", ALICE)
    assert status == 200
    check_schema("/status", "GET", 200, doc)
    assert doc["performance"]["totalPredictions"] == 0
    assert doc["performance"]["averageAnomalyScore"] is None
    assert doc["mode"] == "learning" and doc["modelVersion"] is None
    assert doc["isRetraining"] is False


async def test_empty_store_admin_views(api):
    status, doc, _ = await api.call("GET", "/performance", ADMIN, params={"hours": "2"})
    assert status == 200 and doc["performance"]["totalPredictions"] == 0
    assert doc["challengeSolveRate"] is None
    check_schema("/performance", "GET", 200, doc)
    status, doc, _ = await api.call("GET", "/false-positives", ADMIN)
    assert status == 200 and doc["falsePositives"] == [] and doc["nextBefore"] is None
    status, doc, _ = await api.call("GET", "/stats", ADMIN, params={"hours": "3", "bucket": "hour"})
    assert status == 200 and doc["totals"] == {}
    assert len(doc["buckets"]) in (3, 4)  # epoch-aligned hours overlapping a 3 h window
    check_schema("/stats", "GET", 200, doc)
    status, doc, _ = await api.call("GET", "/predictions", ALICE)
    assert status == 200 and doc["predictions"] == [] and doc["count"] == 0


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/performance", {"hours": "0"}, "hours"),
        ("/performance", {"hours": "abc"}, "hours"),
        ("/performance", {"hours": "100000"}, "hours"),
        ("/stats", {"bucket": "fortnight"}, "bucket"),
        ("/stats", {"bucket": "²"}, "bucket"),  # str.isdigit() says yes, int() says no
        ("/performance", {"hours": "²"}, "hours"),
        ("/stats", {"hours": "720", "bucket": "60"}, "bucket"),
        ("/false-positives", {"limit": "0"}, "limit"),
        ("/false-positives", {"before": "x"}, "before"),
    ],
)
async def test_bad_query_names_the_field(api, path, params, field):
    status, doc, _ = await api.call("GET", path, ADMIN, params=params)
    assert status == 400 and doc["error"]["field"] == field


async def test_unknown_bucket_name_lists_the_accepted_ones(api):
    status, doc, _ = await api.call("GET", "/stats", ADMIN, params={"bucket": "weird"})
    assert status == 400 and doc["error"]["field"] == "bucket"
    assert "minute" in doc["error"]["message"] and "seconds" in doc["error"]["message"]


async def test_bad_bodies_name_the_field(api):
    status, doc, _ = await api.call("POST", "/thresholds/what-if", ADMIN, raw=b"{not json")
    assert status == 400 and doc["error"]["field"] == "body"
    status, doc, _ = await api.call("POST", "/thresholds/what-if", ADMIN, body=[1])
    assert status == 400 and doc["error"]["field"] == "body"
    status, doc, _ = await api.call(
        "POST", "/thresholds/what-if", ADMIN, body={"thresholds": {"block": 2}}
    )
    assert status == 400 and doc["error"]["field"] == "block"
    status, doc, _ = await api.call(
        "POST", "/thresholds/what-if", ADMIN, body={"thresholds": {"monitor": 0.95}}
    )
    assert status == 400 and doc["error"]["field"] == "thresholds"
    message = doc["error"]["message"]
    assert "require2fa" in message and "require_2fa" not in message and "Value error" not in message
    status, doc, _ = await api.call(
        "POST", "/thresholds/what-if", ADMIN, body={"rules": {"ghost": {}}}
    )
    assert status == 400 and doc["error"]["field"] == "rules.ghost"
    status, doc, _ = await api.call("POST", "/release/reset-user", ADMIN, body={"userId": 5})
    assert status == 400 and doc["error"]["field"] == "userId"
    status, doc, _ = await api.call(
        "POST", "/predictions/batch", ADMIN, body={"sessions": [{"userId": "u"}]}
    )
    assert status == 400 and doc["error"]["field"] == "sessions[0].sessionId"
    status, doc, _ = await api.call("POST", "/models/abc/activate", ADMIN)
    assert status == 400 and doc["error"]["field"] == "version"


async def test_oversize_body_is_413(api):
    status, doc, _ = await api.call("POST", "/thresholds/what-if", ADMIN, raw=b" " * 70_000)
    assert status == 413 and doc["error"]["code"] == "request_too_large"


# ------------------------------------------------------------------ predictions, IDOR, feedback


async def test_predictions_list_detail_and_idor(api):
    store = api.app[STORE]
    mine = record(
        "alice",
        decision="CHALLENGE",
        composite=0.75,
        explanation={
            "topFeatures": [
                {
                    "feature": "ip_diversity_7d",
                    "contribution": 1.0,
                    "value": 3.0,
                    "normalizedValue": "2.000",
                }
            ],
            "explanation": "MEDIUM anomaly",
            "modelAgreement": 0.9,
            "confidence": 0.7,
        },
    )
    old = record("alice", ts=datetime.now(UTC) - timedelta(hours=30))
    theirs = record("bob")
    await store.insert_predictions([mine, old, theirs])
    status, doc, _ = await api.call("GET", "/predictions", ALICE)
    assert status == 200 and [p["id"] for p in doc["predictions"]] == [mine.id]
    check_schema("/predictions", "GET", 200, doc)
    status, doc, _ = await api.call("GET", "/predictions", ALICE, params={"hours": "48"})
    assert [p["id"] for p in doc["predictions"]] == [mine.id, old.id]
    status, doc, _ = await api.call("GET", f"/predictions/{mine.id}", ALICE)
    assert status == 200
    check_schema("/predictions/{id}", "GET", 200, doc)
    p = doc["prediction"]
    assert p["decision"] == "CHALLENGE" and p["anomalyScore"] == pytest.approx(0.75)
    assert (
        p["topFeatures"][0]["feature"] == "ip_diversity_7d" and p["explanationSource"] == "stored"
    )
    # another user's prediction, a well-formed unknown id and a malformed id all look the same
    for pid in (theirs.id, "0" * 26, "not-an-id"):
        status, doc, _ = await api.call("GET", f"/predictions/{pid}", ALICE)
        assert status == 404 and doc["error"]["code"] == "not_found"
    status, doc, _ = await api.call("GET", f"/predictions/{theirs.id}", ADMIN)
    assert status == 200
    status, doc, _ = await api.call("GET", "/predictions", ALICE, params={"userId": "bob"})
    assert status == 403
    status, doc, _ = await api.call("GET", "/predictions", API_TOKEN, params={"userId": "bob"})
    assert status == 200 and [p["id"] for p in doc["predictions"]] == [theirs.id]
    status, doc, _ = await api.call("GET", "/predictions", API_TOKEN)
    assert status == 400 and doc["error"]["field"] == "userId"


async def test_feedback_by_owner_then_visible_to_admin_and_rate_limited(api):
    store = api.app[STORE]
    rec = record("alice", decision="BLOCK", composite=0.95)
    await store.insert_predictions([rec])
    path = f"/predictions/{rec.id}/feedback"
    status, doc, _ = await api.call("POST", path, BOB, body={"isFalsePositive": True})
    assert status == 404
    status, doc, _ = await api.call("POST", path, ALICE, body={"isFalsePositive": "yes"})
    assert status == 400 and doc["error"]["field"] == "isFalsePositive"
    status, doc, _ = await api.call(
        "POST", path, ALICE, body={"isFalsePositive": True, "notes": "x" * 1001}
    )
    assert status == 400 and doc["error"]["field"] == "notes"
    status, doc, _ = await api.call(
        "POST", path, ALICE, body={"isFalsePositive": True, "notes": "home wifi"}
    )
    assert status == 201
    status, doc, headers = await api.call("POST", path, ALICE, body={"isFalsePositive": False})
    assert status == 429 and int(headers["Retry-After"]) >= 1  # limit 3 per minute, all spent
    status, doc, _ = await api.call("GET", "/false-positives", ADMIN)
    assert [f["feedback"]["notes"] for f in doc["falsePositives"]] == ["home wifi"]


async def test_feedback_happy_path(gateway, client):
    api = Api(await gateway(api={"feedback_per_minute": 100}), client)
    rec = record("alice", decision="BLOCK", composite=0.95)
    await api.app[STORE].insert_predictions([rec])
    status, doc, _ = await api.call(
        "POST",
        f"/predictions/{rec.id}/feedback",
        ALICE,
        body={"isFalsePositive": True, "notes": "home wifi"},
    )
    assert status == 201
    check_schema("/predictions/{id}/feedback", "POST", 201, doc)
    assert doc["feedback"]["predictionId"] == rec.id and doc["feedback"]["userId"] == "alice"
    status, doc, _ = await api.call("GET", "/false-positives", ADMIN)
    assert [f["prediction"]["id"] for f in doc["falsePositives"]] == [rec.id]
    assert doc["falsePositives"][0]["feedback"]["notes"] == "home wifi"
    check_schema("/false-positives", "GET", 200, doc)
    status, doc, _ = await api.call("GET", "/performance", ADMIN)
    # one anomalous prediction, reported as a false positive: rate 1/1
    assert (
        doc["performance"]["falsePositiveRate"] == 1.0 and doc["performance"]["anomalyCount"] == 1
    )


async def test_anonymous_session_may_report_its_own_prediction(gateway, client, upstream):
    """The 401 body's report link works for anonymous traffic: owner = same pseudo-session."""
    from proxy.identity import anonymous_session

    api = Api(await gateway(), client)
    ua = "pytest-agent"
    sid = anonymous_session("127.0.0.1", {"User-Agent": ua})
    rec = record(None, session=sid, decision="CHALLENGE", composite=0.72)
    await api.app[STORE].insert_predictions([rec])
    status, doc, _ = await api.call(
        "POST",
        f"/predictions/{rec.id}/feedback",
        {"User-Agent": ua},
        body={"isFalsePositive": True},
    )
    assert status == 201 and doc["feedback"]["userId"] == "session:" + sid
    status, _, _ = await api.call(
        "POST",
        f"/predictions/{rec.id}/feedback",
        {"User-Agent": "other"},
        body={"isFalsePositive": True},
    )
    assert status == 404


# ------------------------------------------------------------------ stats, performance, what-if


async def test_stats_and_performance_count_seeded_decisions(api):
    now = datetime.now(UTC)
    recs = [
        record("u1", decision=d, composite=c, ts=now - timedelta(minutes=m), processing_ms=ms)
        for d, c, m, ms in [
            ("ALLOW", 0.1, 10, 1.0),
            ("ALLOW", 0.3, 20, 2.0),
            ("MONITOR", 0.66, 30, 3.0),
            ("BLOCK", 0.95, 90, 4.0),
        ]
    ]
    await api.app[STORE].insert_predictions(recs)
    status, doc, _ = await api.call("GET", "/stats", ADMIN, params={"hours": "2", "bucket": "3600"})
    assert doc["totals"] == {"ALLOW": 2, "MONITOR": 1, "BLOCK": 1}
    assert sum(b["total"] for b in doc["buckets"]) == 4
    status, doc, _ = await api.call("GET", "/performance", ADMIN, params={"hours": "1"})
    perf = doc["performance"]
    assert perf["totalPredictions"] == 3 and perf["anomalyCount"] == 1
    assert perf["averageAnomalyScore"] == pytest.approx((0.1 + 0.3 + 0.66) / 3)
    assert perf["decisions"] == {"ALLOW": 2, "MONITOR": 1}


async def test_what_if_counts_changes_per_rule(gateway, client):
    policy = {"rules": [{"name": "admin", "match": "/api/admin/**", "strict": True}]}
    api = Api(await gateway(policy=policy), client)
    scores = {"default": [0.1, 0.64, 0.66, 0.72, 0.85, 0.93], "admin": [0.5, 0.68, 0.72, 0.75]}
    recs = [record("u", rule=r, composite=c) for r, cs in scores.items() for c in cs]
    recs.append(record("u", rule="default", composite=None, decision="LEARNING"))
    await api.app[STORE].insert_predictions(recs)
    body = {
        "thresholds": {"monitor": 0.6, "challenge": 0.7},
        "rules": {"admin": {"strictBlock": 0.74}},
    }
    status, doc, _ = await api.call("POST", "/thresholds/what-if", ADMIN, body=body)
    assert status == 200, doc
    check_schema("/thresholds/what-if", "POST", 200, doc)
    # default ladder 0.65/0.70/0.80/0.90 -> 0.60/0.70/0.80/0.90: only 0.64 moves (ALLOW -> MONITOR)
    d = doc["rules"]["default"]
    assert d["predictions"] == 6 and d["changed"] == 1
    assert d["transitions"] == [{"from": "ALLOW", "to": "MONITOR", "count": 1}]
    # strict admin rule, strict_block 0.70 -> 0.74: 0.72 BLOCK -> CHALLENGE; 0.75 stays BLOCK
    a = doc["rules"]["admin"]
    assert a["before"] == {"ALLOW": 1, "MONITOR": 1, "BLOCK": 2}
    assert a["after"] == {"ALLOW": 1, "MONITOR": 1, "CHALLENGE": 1, "BLOCK": 1}
    assert a["transitions"] == [{"from": "BLOCK", "to": "CHALLENGE", "count": 1}]
    assert doc["overall"]["changed"] == 2 and doc["skipped"] == 1


# ------------------------------------------------------------------ models, lifecycle, release


async def test_models_activate_and_detail_explanation_computed(api, bundle_bytes):
    registry = api.app[STORE].registry
    v1 = await registry.save_version(
        bundle_bytes,
        feature_set_version=FEATURE_SET_VERSION,
        metrics={"auc": 0.9},
        sample_count=1200,
    )
    status, doc, _ = await api.call("POST", "/models/99/activate", ADMIN)
    assert status == 404
    status, doc, _ = await api.call("POST", f"/models/{v1.version}/activate", API_TOKEN)
    assert status == 200 and doc["activeVersion"] == v1.version
    check_schema("/models/{version}/activate", "POST", 200, doc)
    assert doc["version"]["activatedBy"].startswith("token:")
    assert api.app[MODELS].version == v1.version
    status, doc, _ = await api.call("GET", "/models", ADMIN)
    assert doc["versions"][0]["isActive"] and doc["versions"][0]["trainingMetrics"] == {"auc": 0.9}
    rec = record("alice", composite=0.3)
    vector = np.random.default_rng(1).normal(size=len(FEATURE_NAMES)).astype(np.float32)
    vector[3] += 3.0  # a typical row with one unusual feature: scored, not saturated
    rec.features = vector
    await api.app[STORE].insert_predictions([rec])
    status, doc, _ = await api.call("GET", f"/predictions/{rec.id}", ALICE)
    p = doc["prediction"]
    assert p["explanationSource"] == f"computed:v{v1.version}"
    assert p["topFeatures"] and sum(f["contribution"] for f in p["topFeatures"]) <= 1.0 + 1e-6
    status, doc, _ = await api.call("GET", "/status", ALICE)
    assert doc["mode"] == "enforce" and doc["modelVersion"] == v1.version


async def test_initialize_with_too_little_data_is_409_with_counts(api):
    status, doc, _ = await api.call("POST", "/initialize", ADMIN, body={})
    assert status == 409 and doc["error"]["code"] == "insufficient_data"
    assert doc["samples"] == {"have": 0, "need": 1000}
    status, doc, _ = await api.call("POST", "/retrain", ADMIN, body={"force": True})
    assert status == 409 and doc["samples"]["have"] == 0


async def test_drift_status_answers(api):
    status, doc, _ = await api.call("GET", "/drift/status", ADMIN)
    assert status == 200 and isinstance(doc["drift"], dict)


async def test_unblock_by_session_id_alone_releases_a_signed_in_users_session(api):
    hist = api.app[HISTORY]
    await hist.revoke("s-dave", "dave", 600)
    now = time.time()
    for i in range(3):  # step-ups that would escalate the next request straight back to BLOCK
        await hist.count_challenge("s-dave", "dave", 3600, now + i)
    ctx = RequestContext(
        ts=time.time(),
        method="GET",
        path="/a",
        route="/a",
        user_id="dave",
        session_id="s-dave",
        client_ip="10.0.0.4",
        user_agent="ua",
        request_bytes=0,
        sensitivity=0,
        authenticated=True,
    )
    assert (await hist.read(ctx)).revoked
    status, doc, _ = await api.call("POST", "/release/unblock", ADMIN, body={"sessionId": "s-dave"})
    assert status == 200 and doc["wasRevoked"] is True and doc["releasedOwners"] == ["dave"]
    assert doc["escalationCleared"] is True
    assert await hist.count_challenge("s-dave", "dave", 3600, now + 10) == 1  # window starts anew
    check_schema("/release/unblock", "POST", 200, doc)
    assert not (await hist.read(ctx)).revoked
    incident = await api.app[STORE].get_incident(doc["recordId"])
    assert incident.user_id == "dave" and incident.session_id == "s-dave"
    status, doc, _ = await api.call("POST", "/release/unblock", ADMIN, body={"sessionId": "s-dave"})
    assert status == 200 and doc["wasRevoked"] is False and doc["releasedOwners"] == []


async def test_unblock_by_incident_releases_only_the_owner_it_names(api):
    hist = api.app[HISTORY]
    await hist.revoke("s-shared", "dave", 600)
    await hist.revoke("s-shared", None, 600)
    incident = await api.app[STORE].open_incident(Incident(session_id="s-shared", reason="block"))
    status, doc, _ = await api.call(
        "POST", "/release/unblock", ADMIN, body={"incidentId": incident.id}
    )
    assert status == 200 and doc["releasedOwners"] == [None]
    status, doc, _ = await api.call(
        "POST", "/release/unblock", ADMIN, body={"sessionId": "s-shared"}
    )
    assert doc["releasedOwners"] == ["dave"]  # dave's was left for an explicit release


async def test_release_actions_are_recorded_with_actor(api):
    hist = api.app[HISTORY]
    await hist.revoke("s-alice", "alice", 600)
    ctx = RequestContext(
        ts=time.time(),
        method="GET",
        path="/a",
        route="/a",
        user_id="alice",
        session_id="s-alice",
        client_ip="10.0.0.1",
        user_agent="ua",
        request_bytes=0,
        sensitivity=0,
        authenticated=True,
    )
    assert (await hist.read(ctx)).revoked
    status, doc, _ = await api.call(
        "POST", "/release/unblock", ADMIN, body={"sessionId": "s-alice", "userId": "alice"}
    )
    assert status == 200 and doc["wasRevoked"] is True and doc["by"] == "user:root"
    check_schema("/release/unblock", "POST", 200, doc)
    assert not (await hist.read(ctx)).revoked
    incident = await api.app[STORE].get_incident(doc["recordId"])
    assert (
        incident.status == "released"
        and incident.actor == "user:root"
        and incident.reason == "release:unblock"
    )
    await hist.count_challenge("s-alice", "alice", 3600, time.time())
    status, doc, _ = await api.call(
        "POST", "/release/clear-escalation", ADMIN, body={"userId": "alice"}
    )
    assert doc["cleared"] is True
    await hist.record(
        ctx,
        EventOutcome(status=200, response_bytes=10, latency_ms=1.0, decision="ALLOW", score=0.1),
    )
    status, doc, _ = await api.call(
        "POST", "/release/reset-user", API_TOKEN, body={"userId": "alice", "notes": "new laptop"}
    )
    assert doc["keysDeleted"] > 0 and doc["by"].startswith("token:")
    assert len((await hist.read(ctx)).route_codes) == 0


async def test_batch_scores_known_sessions_and_reports_unknown(api, bundle_bytes):
    hist = api.app[HISTORY]
    now = time.time()
    for i in range(3):
        ctx = RequestContext(
            ts=now - 60 + i,
            method="GET",
            path="/api/items",
            route="/api/items",
            user_id="alice",
            session_id="s-alice",
            client_ip="10.0.0.7",
            user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
            request_bytes=0,
            sensitivity=0,
            authenticated=True,
        )
        await hist.record(
            ctx,
            EventOutcome(
                status=200, response_bytes=10, latency_ms=1.0, decision="ALLOW", score=0.1
            ),
        )
    await api.app[STORE].insert_predictions([record("alice", session="s-alice")])
    body = {
        "sessions": [{"sessionId": "s-alice", "userId": "alice"}, {"sessionId": "ghost"}],
        "users": ["alice", "nobody"],
    }
    status, doc, _ = await api.call("POST", "/predictions/batch", ADMIN, body=body)
    assert status == 200
    check_schema("/predictions/batch", "POST", 200, doc)
    found = [r["found"] for r in doc["results"]]
    assert found == [True, False, True, False] and doc["unknown"] == 2
    first = doc["results"][0]
    assert first["decision"] == "LEARNING" and first["context"] == {
        "endpoint": "/api/items",
        "method": "GET",
        "ipAddress": "10.0.0.7",
    }
    v = await api.app[STORE].registry.save_version(
        bundle_bytes, feature_set_version=FEATURE_SET_VERSION
    )
    await api.app[STORE].registry.activate(v.version, by="test")
    await api.app[MODELS].refresh()
    status, doc, _ = await api.call("POST", "/predictions/batch", ADMIN, body=body)
    assert (
        0.0 <= doc["results"][0]["anomalyScore"] <= 1.0
        and doc["results"][0]["modelVersion"] == v.version
    )


async def test_metrics_admin_only_text(api):
    status, text, headers = await api.call("GET", "/metrics", API_TOKEN)
    assert status == 200 and "behaviorgate_requests_total" in text
    assert headers["Content-Type"].startswith("text/plain")


async def test_retrain_accepts_202_runs_one_job_and_activates_a_version(gateway, client):
    """The happy path of /retrain: 202 with a job id, 409 while it runs, a new active model after.

    Training is real (a `python -m scoring.training` child process) on small settings."""
    from proxy.lifecycle import LIFECYCLE

    small = {
        "training": {"min_samples": 60},
        "isolation_forest": {"n_trees": 20},
        "autoencoder": {"epochs": 2, "batch_size": 32, "encoding_dim": 4},
    }
    api = Api(await gateway(model=small, lifecycle={"promotion": {"enabled": False}}), client)
    rng = np.random.default_rng(3)
    rows = [record(f"u{i % 7}") for i in range(120)]
    for r in rows:
        r.features = rng.normal(size=len(FEATURE_NAMES)).astype(np.float32)
    await api.app[STORE].insert_predictions(rows)
    status, doc, _ = await api.call("POST", "/retrain", ADMIN, body={"force": True})
    assert status == 202, doc
    job_id = doc["job"]["jobId"]
    again, busy, _ = await api.call("POST", "/retrain", ADMIN, body={"force": True})
    assert again == 409 and busy["error"]["code"] == "job_running"
    ended = await asyncio.wait_for(api.app[LIFECYCLE].wait_job(), 240)
    assert ended["jobId"] == job_id and ended["state"] == "succeeded", ended
    status, models, _ = await api.call("GET", "/models", ADMIN)
    active = [m for m in models["versions"] if m["isActive"]]
    assert status == 200 and len(active) == 1 and active[0]["sampleCount"] == 120
    assert models["activeVersion"] == active[0]["version"] == ended["version"]
    check_schema("/models", "GET", 200, models)


async def test_status_samples_count_learnable_vectors_and_refresh_at_most_once_a_minute(api):
    from proxy.lifecycle import LIFECYCLE

    now = datetime.now(UTC)
    unscored = dataclasses.replace(
        record("u9", decision="ERROR", ts=now), features=np.zeros(0, np.float32)
    )
    recs = [record("u9", ts=now - timedelta(minutes=i)) for i in range(3)]
    recs += [record("u9", decision="BLOCK", composite=0.97, ts=now), unscored]
    await api.app[STORE].insert_predictions(recs)
    lc = api.app[LIFECYCLE]
    await lc.refresh_samples(max_age=0)
    status, doc, _ = await api.call("GET", "/status", ALICE)
    assert status == 200 and doc["samples"]["have"] == 3  # no BLOCK, no unscored row
    await api.app[STORE].insert_predictions([record("u9", ts=now - timedelta(minutes=9))])
    status, doc, _ = await api.call("GET", "/status", ALICE)
    assert doc["samples"]["have"] == 3  # counted less than a minute ago: cached
    await lc.refresh_samples(max_age=0)
    status, doc, _ = await api.call("GET", "/status", ALICE)
    assert doc["samples"]["have"] == 4
