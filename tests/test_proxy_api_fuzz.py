"""Schemathesis against the served OpenAPI document: no 5xx, no traceback, JSON errors only.

The gateway runs in its own thread and event loop (schemathesis calls are synchronous), on a
real socket with embedded stores, seeded with a few predictions; calls carry an admin API token
so admin routes are exercised past authentication.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings

from proxy.api.openapi import document
from proxy.app import STORE, create_app
from storage.records import PredictionRecord
from tests.proxyharness import gateway_settings

TOKEN = "fuzz-admin-token-0123456789abcdef"  # noqa: S105 - a test token
HEADERS = {"Authorization": "Bearer " + TOKEN}
schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("fuzz")
    overrides = {
        "identity": {"jwt": {"hs256_secret": "f" * 40}},
        "api": {
            "admin_token_hashes": [hashlib.sha256(TOKEN.encode()).hexdigest()],
            "admin_per_minute": 100_000,
            "feedback_per_minute": 10_000,
        },
        "lifecycle": {"auto_train": False, "daily_retrain": False},
    }
    settings_ = gateway_settings(9, str(data), **overrides)  # upstream never reached
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), asyncio.Event()
    box: dict[str, object] = {}

    async def serve() -> None:
        app = create_app(settings_)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["port"] = runner.addresses[0][1]
        now = datetime.now(UTC)
        await app[STORE].insert_predictions(
            [
                PredictionRecord(
                    ts=now - timedelta(minutes=i),
                    user_id="u",
                    session_id="s",
                    composite=0.1 * i,
                    decision="ALLOW",
                    features=[0.0] * 59,
                )
                for i in range(5)
            ]
        )
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(20), "gateway did not start"
    yield f"http://127.0.0.1:{box['port']}"
    loop.call_soon_threadsafe(stop.set)
    thread.join(20)
    loop.close()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, base_url, http) -> None:
    response = case.call(base_url=base_url, session=http, headers=HEADERS, timeout=10)
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        body = response.json()
        assert body["success"] is False and body["error"]["code"]
