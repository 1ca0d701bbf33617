"""Enforcement end to end: real sockets, a real trained model, a recording upstream.

Per-rule thresholds pin the decision a rule produces (a ladder of zeros turns any score into
BLOCK), so each test checks what the gateway *does* with a decision, independent of what the
model thinks of the test traffic.
"""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from aiohttp import web

from proxy.app import MODELS, PIPELINE, STORE, WRITER, create_app, server_options
from proxy.notify import verify
from storage.store import open_store
from tests.proxyharness import RecordingUpstream, gateway_settings, raw_exchange

SECRET = "test-secret-0123456789abcdef-0123456789"
HOOK_SECRET = "hook-secret-0123456789"
ZERO = {"monitor": 0.0, "challenge": 0.0, "require_2fa": 0.0, "block": 0.0}
CHALLENGE_ONLY = {"monitor": 0.0, "challenge": 0.0, "require_2fa": 1.0, "block": 1.0}
TWO_FA = {"monitor": 0.0, "challenge": 0.0, "require_2fa": 0.0, "block": 1.0}
RULES = [
    {"name": "health", "match": "/health", "exempt": True},
    {"name": "verify", "match": "/api/auth/2fa/verify", "exempt": True},
    {"name": "challenge", "match": "/api/challenge/**", "thresholds": CHALLENGE_ONLY},
    {"name": "twofa", "match": "/api/twofa/**", "thresholds": TWO_FA},
    {"name": "block", "match": "/api/block/**", "thresholds": ZERO},
    {"name": "shadowed", "match": "/api/shadow/**", "thresholds": ZERO, "mode": "shadow"},
    {
        "name": "allowed",
        "match": "/api/allow/**",
        "thresholds": ZERO,
        "allowlist": {"users": ["svc-batch"]},
    },
]


def token(user: str, sid: str, **claims) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": user, "sid": sid, "iat": now, "exp": now + 600, **claims}, SECRET, algorithm="HS256"
    )


def req(target: str, tok: str | None = None, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [
        f"{method} {target} HTTP/1.1",
        "Host: gw.test",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
    ]
    if tok:
        lines.append(f"Authorization: Bearer {tok}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
async def upstream(aiohttp_server):
    rec = RecordingUpstream()
    server = await aiohttp_server(rec.app())
    rec.port = server.port  # type: ignore[attr-defined]
    return rec


@pytest.fixture
async def hook(aiohttp_server):
    received: list[tuple[bytes, str]] = []
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-BehaviorGate-Signature"]))
        arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    server = await aiohttp_server(app)
    return server.port, received, arrived


@pytest.fixture
def gateway(aiohttp_server, upstream, tmp_path, bundle_bytes, hook):
    """A gateway whose store already holds an active model."""

    async def make(**overrides):
        base = {
            "identity": {"jwt": {"hs256_secret": SECRET, "algorithms": ["HS256"]}},
            "policy": {"rules": RULES},
            "enforcement": {
                "notify": {
                    "webhooks": [
                        {"url": f"http://127.0.0.1:{hook[0]}/hook", "secret": HOOK_SECRET}
                    ],
                    "backoff_initial_seconds": 0.05,
                },
                "escalation": {"challenges": 3},
            },
            "scoring": {"budget_ms": 2000},
        }
        for key, value in overrides.items():
            base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
        settings = gateway_settings(upstream.port, str(tmp_path), **base)
        store = await open_store(settings.database)
        version = await store.registry.save_version(bundle_bytes, feature_set_version="bg-59.1")
        await store.registry.activate(version.version, by="test")
        await store.close()
        opts = server_options(settings)
        opts.pop("handler_cancellation")
        server = await aiohttp_server(create_app(settings), **opts)
        assert server.app[MODELS].version == version.version
        return server

    return make


async def settle(server) -> None:
    """Let after-response work (history, grants, records) finish."""
    await server.app[PIPELINE].drain()


async def stored(server, prediction_id: str):
    writer = server.app[WRITER]
    for _ in range(100):
        found = await server.app[STORE].get_prediction(prediction_id)
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"prediction {prediction_id} never reached the store ({writer.stats()})")


async def test_challenge_answers_401_without_contacting_upstream(upstream, gateway):
    gw = await gateway()
    resp = await raw_exchange(gw.port, req("/api/challenge/transfer", token("alice", "s-alice")))
    assert resp.status == 401
    body = json.loads(resp.body)
    assert body["action"] == "CHALLENGE"
    assert body["stepUp"] == {"method": "challenge", "verifyPath": "/api/auth/2fa/verify"}
    assert body["report"]["path"] == f"/api/ml-anomaly/predictions/{body['predictionId']}/feedback"
    assert resp.header("WWW-Authenticate").startswith(
        'StepUp realm="behaviorgate", method="challenge"'
    )
    assert resp.header("Retry-After") == "5"
    assert upstream.seen == []
    record = await stored(gw, body["predictionId"])
    assert (
        record.decision == "CHALLENGE" and record.user_id == "alice" and record.rule == "challenge"
    )
    assert record.explanation is not None and record.explanation["topFeatures"]


async def test_require_2fa_names_the_2fa_step_up(upstream, gateway):
    gw = await gateway()
    resp = await raw_exchange(gw.port, req("/api/twofa/export", token("bob", "s-bob")))
    assert resp.status == 401
    assert json.loads(resp.body)["action"] == "REQUIRE_2FA"
    assert json.loads(resp.body)["stepUp"]["method"] == "2fa"
    assert upstream.seen == []


async def test_step_up_flow_grants_the_same_session_only(upstream, gateway):
    gw = await gateway()
    carol = token("carol", "s-carol")
    assert (await raw_exchange(gw.port, req("/api/challenge/t", carol))).status == 401
    # The upstream confirms the 2FA code for carol's session.
    ok = await raw_exchange(
        gw.port, req("/api/auth/2fa/verify", carol, method="POST", body=b'{"code":"1"}')
    )
    assert ok.status == 200
    await settle(gw)
    passed = await raw_exchange(gw.port, req("/api/challenge/t", carol))
    assert passed.status == 200 and upstream.seen[-1].raw_path == "/api/challenge/t"
    # Recorded as what the model said, enforced as satisfied by the step-up.
    assert upstream.seen[-1].header_values("X-BehaviorGate-Decision") == ["CHALLENGE"]
    pid = upstream.seen[-1].header_values("X-BehaviorGate-Prediction-Id")[0]
    record = await stored(gw, pid)
    assert (
        record.explanation["note"] == "step-up satisfied"
        and record.explanation["enforced"] == "ALLOW"
    )
    # Another session of the same user is not covered by carol's grant.
    other = await raw_exchange(gw.port, req("/api/challenge/t", token("carol", "s-carol-2")))
    assert other.status == 401


async def test_failed_verification_grants_nothing(upstream, gateway):
    async def refuse(request: web.Request, seen) -> web.StreamResponse:
        if request.path.endswith("/verify"):
            return web.json_response({"verified": False}, status=401)
        return web.json_response({"ok": True})

    upstream.behaviour = refuse
    gw = await gateway()
    dave = token("dave", "s-dave")
    await raw_exchange(gw.port, req("/api/auth/2fa/verify", dave, method="POST", body=b"{}"))
    await settle(gw)
    assert (await raw_exchange(gw.port, req("/api/challenge/t", dave))).status == 401


async def test_block_revokes_session_opens_incident_and_notifies(upstream, gateway, hook):
    _, received, arrived = hook
    gw = await gateway()
    eve = token("eve", "s-eve")
    resp = await raw_exchange(gw.port, req("/api/block/admin", eve))
    assert resp.status == 403
    body = json.loads(resp.body)
    assert body["action"] == "BLOCK" and body["error"]["code"] == "session_blocked"
    # Every later request of the session is refused without scoring, on any path.
    later = await raw_exchange(gw.port, req("/api/challenge/harmless", eve))
    assert later.status == 403 and json.loads(later.body)["error"]["code"] == "session_revoked"
    assert upstream.seen == []
    # A new session of another user is unaffected by eve's revocation.
    other = await raw_exchange(gw.port, req("/health", token("frank", "s-frank")))
    assert other.status == 200
    await settle(gw)
    incidents = await gw.app[STORE].list_incidents()
    assert [(i.session_id, i.user_id, i.prediction_id) for i in incidents] == [
        ("s-eve", "eve", body["predictionId"])
    ]
    await asyncio.wait_for(arrived.wait(), 10)
    payload, signature = received[0]
    assert verify(HOOK_SECRET, signature, payload)
    assert json.loads(payload)["event"] == "block" and json.loads(payload)["sessionId"] == "s-eve"


async def test_shadow_mode_records_but_changes_nothing(upstream, gateway):
    gw = await gateway()
    gina = token("gina", "s-gina")
    resp = await raw_exchange(gw.port, req("/api/shadow/x", gina))
    assert resp.status == 200 and upstream.seen[-1].raw_path == "/api/shadow/x"
    assert upstream.seen[-1].header_values("X-BehaviorGate-Decision") == ["BLOCK"]
    assert resp.header("X-BehaviorGate-Decision") is None  # clients never see decisions by default
    pid = upstream.seen[-1].header_values("X-BehaviorGate-Prediction-Id")[0]
    record = await stored(gw, pid)
    assert record.decision == "BLOCK" and record.explanation["enforced"] == "ALLOW"
    # and the session was not revoked
    assert (await raw_exchange(gw.port, req("/api/shadow/y", gina))).status == 200


async def test_global_shadow_mode(upstream, gateway):
    gw = await gateway(mode="shadow")
    resp = await raw_exchange(gw.port, req("/api/block/x", token("hal", "s-hal")))
    assert resp.status == 200 and upstream.seen[-1].header_values("X-BehaviorGate-Decision") == [
        "BLOCK"
    ]


async def test_allowlisted_users_are_scored_but_never_enforced(upstream, gateway):
    gw = await gateway()
    resp = await raw_exchange(gw.port, req("/api/allow/job", token("svc-batch", "s-svc")))
    assert resp.status == 200
    pid = upstream.seen[-1].header_values("X-BehaviorGate-Prediction-Id")[0]
    record = await stored(gw, pid)
    assert record.decision == "BLOCK" and record.explanation["note"] == "allowlisted"
    denied = await raw_exchange(gw.port, req("/api/allow/job", token("ivan", "s-ivan")))
    assert denied.status == 403


async def test_repeated_challenges_escalate_to_block(upstream, gateway, hook):
    _, received, arrived = hook
    gw = await gateway()
    statuses = []
    for i in range(3):  # escalation.challenges = 3
        statuses.append(
            (
                await raw_exchange(gw.port, req("/api/challenge/t", token("judy", f"s-judy-{i}")))
            ).status
        )
    assert statuses == [401, 401, 403]
    await asyncio.wait_for(arrived.wait(), 10)
    assert json.loads(received[0][0])["event"] == "escalation"


async def test_decision_headers_reach_upstream_and_client_headers_are_replaced(upstream, gateway):
    gw = await gateway()
    forged = req("/api/shadow/z", token("kim", "s-kim")).replace(
        b"\r\n\r\n", b"\r\nX-BehaviorGate-Decision: ALLOW\r\nX-BehaviorGate-Score: 0.0\r\n\r\n"
    )
    await raw_exchange(gw.port, forged)
    seen = upstream.seen[-1]
    assert seen.header_values("X-BehaviorGate-Decision") == ["BLOCK"]
    score = float(seen.header_values("X-BehaviorGate-Score")[0])
    assert 0.0 <= score <= 1.0


async def test_invalid_token_is_401_json(upstream, gateway):
    gw = await gateway()
    forged = jwt.encode(
        {"sub": "mallory", "sid": "x", "exp": int(time.time()) + 60},
        "another-secret-0123456789abcdef!!",
        algorithm="HS256",
    )
    resp = await raw_exchange(gw.port, req("/api/challenge/t", forged))
    assert resp.status == 401 and json.loads(resp.body)["success"] is False
    assert upstream.seen == []


async def test_a_failing_model_applies_the_fail_policy(upstream, gateway):
    from proxy.models import ActiveModel

    class Broken:
        def score(self, vector):
            raise RuntimeError("corrupt weights")

    gw = await gateway(
        policy={"rules": [*RULES, {"name": "admin", "match": "/api/admin/**", "strict": True}]}
    )
    current = gw.app[MODELS].current
    gw.app[MODELS].current = ActiveModel(current.version, Broken(), current.bundle)
    tok = token("olga", "s-olga")
    open_rule = await raw_exchange(gw.port, req("/api/items", tok))
    assert open_rule.status == 200
    assert upstream.seen[-1].header_values("X-BehaviorGate-Decision") == ["ERROR"]
    strict = await raw_exchange(gw.port, req("/api/admin/users", tok))
    assert (
        strict.status == 503 and json.loads(strict.body)["error"]["code"] == "scoring_unavailable"
    )
    assert upstream.seen[-1].raw_path == "/api/items"


async def test_metrics_exposition_names_each_metric_once(upstream, gateway):
    from prometheus_client.parser import text_string_to_metric_families

    from proxy.app import METRICS

    gw = await gateway()
    await raw_exchange(gw.port, req("/api/challenge/t", token("pia", "s-pia")))
    families = list(text_string_to_metric_families(gw.app[METRICS].render().decode()))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), names
    by_name = {f.name: f for f in families}
    assert by_name["behaviorgate_active_model_version"].samples[0].value == gw.app[MODELS].version
    samples = by_name["behaviorgate_stepups"].samples
    issued = [s for s in samples if s.labels.get("state") == "issued"]
    assert issued and issued[0].value == 1.0
