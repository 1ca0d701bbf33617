"""The API against real Postgres and real Redis: records, feedback, stats and a release."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import aiohttp
import numpy as np

from proxy.app import HISTORY, STORE, create_app, server_options
from scoring.context import RequestContext
from scoring.features import FEATURE_NAMES, FEATURE_SET_VERSION
from storage.records import PredictionRecord
from tests.proxyharness import gateway_settings
from tests.test_proxy_api_routes import ADMIN, ALICE, BOB, P, api_overrides


async def test_api_on_postgres_and_redis(aiohttp_server, tmp_path, pg_dsn, redis_url, redis_prefix):
    settings = gateway_settings(
        9,
        str(tmp_path),
        **api_overrides(
            database={"url": pg_dsn}, redis={"url": redis_url}, history={"key_prefix": redis_prefix}
        ),
    )
    opts = server_options(settings)
    opts.pop("handler_cancellation")
    server = await aiohttp_server(create_app(settings), **opts)
    app, base = server.app, f"http://127.0.0.1:{server.port}{P}"
    now = datetime.now(UTC)
    recs = [
        PredictionRecord(
            ts=now - timedelta(minutes=m),
            user_id="alice",
            session_id="s-alice",
            route="/api/pay",
            rule="default",
            decision=d,
            composite=c,
            is_anomaly=d != "ALLOW",
            features=np.zeros(len(FEATURE_NAMES), np.float32),
            feature_set_version=FEATURE_SET_VERSION,
        )
        for m, d, c in [(1, "ALLOW", 0.2), (2, "BLOCK", 0.95), (3, "CHALLENGE", 0.74)]
    ]
    await app[STORE].insert_predictions(recs)
    blocked = recs[1]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/predictions", headers=ALICE) as r:
            doc = await r.json()
            assert [p["id"] for p in doc["predictions"]] == [r_.id for r_ in recs]
        async with http.get(f"{base}/predictions/{blocked.id}", headers=BOB) as r:
            assert r.status == 404
        async with http.post(
            f"{base}/predictions/{blocked.id}/feedback",
            headers=ALICE,
            json={"isFalsePositive": True, "notes": "me"},
        ) as r:
            assert r.status == 201
        async with http.get(f"{base}/performance", headers=ADMIN) as r:
            perf = (await r.json())["performance"]
            # two anomalous predictions, one reported a false positive
            assert perf["anomalyCount"] == 2 and perf["falsePositiveRate"] == 0.5
        async with http.get(f"{base}/stats", headers=ADMIN, params={"hours": "1"}) as r:
            assert (await r.json())["totals"] == {"ALLOW": 1, "BLOCK": 1, "CHALLENGE": 1}
        await app[HISTORY].revoke("s-alice", "alice", 600)
        async with http.post(
            f"{base}/release/unblock",
            headers=ADMIN,
            json={"sessionId": "s-alice", "userId": "alice"},
        ) as r:
            doc = await r.json()
            assert doc["wasRevoked"] is True
        incident = await app[STORE].get_incident(doc["recordId"])
        assert incident.actor == "user:root" and incident.status == "released"
    ctx = RequestContext(
        ts=time.time(),
        method="GET",
        path="/",
        route="/",
        user_id="alice",
        session_id="s-alice",
        client_ip="1.2.3.4",
        user_agent="",
        request_bytes=0,
        sensitivity=0,
        authenticated=True,
    )
    assert not (await app[HISTORY].read(ctx)).revoked
