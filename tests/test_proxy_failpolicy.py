"""Fail policy with a real Redis that goes away and comes back, and revocation across processes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench.procs import free_port, wait_port
from proxy.app import METRICS, PIPELINE, create_app, server_options
from storage.store import open_store
from tests.proxyharness import RecordingUpstream, gateway_settings, raw_exchange
from tests.test_proxy_enforcement import SECRET, ZERO, req, token


class RedisProcess:
    """A private redis-server on its own port, so a test may stop it without touching others."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server must be installed (it is on this machine kind and in CI)"
        self.proc = subprocess.Popen(  # noqa: S603
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def upstream(aiohttp_server):
    rec = RecordingUpstream()
    server = await aiohttp_server(rec.app())
    rec.port = server.port  # type: ignore[attr-defined]
    return rec


async def _gateway(aiohttp_server, upstream, tmp_path, bundle: bytes, **extra):
    settings = gateway_settings(
        upstream.port,
        str(tmp_path),
        identity={"jwt": {"hs256_secret": SECRET, "algorithms": ["HS256"]}},
        policy={
            "rules": [
                {"name": "admin", "match": "/api/admin/**", "strict": True, "mode": "enforce"},
                {"name": "block", "match": "/api/block/**", "thresholds": ZERO},
            ]
        },
        enforcement={"breaker": {"failures": 2, "reset_seconds": 0.5, "min_failure_seconds": 0}},
        scoring={"budget_ms": 500},
        **extra,
    )
    store = await open_store(settings.database)
    v = await store.registry.save_version(bundle, feature_set_version="bg-59.1")
    await store.registry.activate(v.version, by="test")
    await store.close()
    opts = server_options(settings)
    opts.pop("handler_cancellation")
    return await aiohttp_server(create_app(settings), **opts)


async def test_fail_open_and_closed_then_recovery(
    aiohttp_server, upstream, tmp_path, private_redis, bundle_bytes
):
    # Global shadow mode keeps the model's opinion of the test traffic out of the way; the strict
    # rule enforces, so it is the one that must fail closed.
    gw = await _gateway(
        aiohttp_server,
        upstream,
        tmp_path,
        bundle_bytes,
        mode="shadow",
        redis={"url": f"redis://127.0.0.1:{private_redis.port}/0"},
    )
    tok = token("amy", "s-amy")
    ok = await raw_exchange(gw.port, req("/api/items", tok))
    assert ok.status == 200
    assert upstream.seen[-1].header_values("X-BehaviorGate-Decision") != ["ERROR"]
    await gw.app[PIPELINE].drain()

    private_redis.stop()
    started = time.monotonic()
    open_path = await raw_exchange(gw.port, req("/api/items", tok))
    closed_path = await raw_exchange(gw.port, req("/api/admin/users", tok))
    assert open_path.status == 200
    assert upstream.seen[-1].header_values("X-BehaviorGate-Decision") == ["ERROR"]
    assert closed_path.status == 503
    assert json.loads(closed_path.body)["error"]["code"] == "scoring_unavailable"
    # The breaker is open now: further requests fail fast instead of waiting on Redis.
    for _ in range(5):
        assert (await raw_exchange(gw.port, req("/api/admin/users", tok))).status == 503
    assert time.monotonic() - started < 5
    assert upstream.seen[-1].raw_path == "/api/items"  # nothing strict went through
    # Each of those 7 unscored requests is counted under exactly one reason: the first 2 met the
    # dead Redis (which opened the breaker), the rest were skipped by it while it stayed open.
    unscored = gw.app[METRICS].unscored
    counts = {r: unscored.labels(r)._value.get() for r in ("redis_error", "breaker_open")}
    assert counts["redis_error"] >= 2 and counts["breaker_open"] >= 1
    assert counts["redis_error"] + counts["breaker_open"] == 7

    private_redis.start()  # same port
    deadline = time.monotonic() + 15
    decision = ["ERROR"]
    while decision == ["ERROR"] and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        assert (await raw_exchange(gw.port, req("/api/items", tok))).status == 200
        decision = upstream.seen[-1].header_values("X-BehaviorGate-Decision")
    assert decision not in (["ERROR"], []), "the gateway did not recover once Redis was back"
    strict = await raw_exchange(gw.port, req("/api/admin/users", tok))
    assert strict.status != 503


async def test_revocation_is_honoured_by_a_second_gateway_process(
    aiohttp_server, upstream, tmp_path, redis_url, redis_prefix, bundle_bytes
):
    gw = await _gateway(
        aiohttp_server,
        upstream,
        tmp_path,
        bundle_bytes,
        redis={"url": redis_url},
        history={"key_prefix": redis_prefix},
    )
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "BEHAVIORGATE_HISTORY__KEY_PREFIX": redis_prefix,
        "BEHAVIORGATE_IDENTITY__JWT__HS256_SECRET": SECRET,
        "BEHAVIORGATE_IDENTITY__JWT__ALGORITHMS": "[HS256]",
        "BEHAVIORGATE_DATABASE__SQLITE_PATH": str(tmp_path / "second.sqlite3"),
        "BEHAVIORGATE_WRITER__SPOOL_PATH": str(tmp_path / "second.spool"),
        "BEHAVIORGATE_LOGGING__ACCESS_LOG": "false",
    }
    second = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--upstream",
            f"http://127.0.0.1:{upstream.port}",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.get_running_loop().run_in_executor(None, wait_port, port, 30.0)
        tok = token("zed", "s-zed")
        assert (
            await raw_exchange(port, req("/api/items", tok))
        ).status == 200  # second gateway, learning
        assert (await raw_exchange(gw.port, req("/api/block/x", tok))).status == 403  # first blocks
        resp = await raw_exchange(port, req("/api/items", tok))  # second refuses at once
        assert resp.status == 403 and json.loads(resp.body)["error"]["code"] == "session_revoked"
    finally:
        second.terminate()
        second.wait(20)
