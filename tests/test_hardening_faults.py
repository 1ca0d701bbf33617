"""Faults with real processes: Postgres cut under load, SIGTERM under load, SIGKILL with a spool.

Each test asserts that every request the gateway accepted has its prediction in Postgres exactly
once, that no request outlived its timeout, and that the gateway recovered without a restart.
Upstream slow / refusing / resetting / garbage are covered in tests/test_proxy_forward.py; Redis
stopped and restarted in tests/test_proxy_failpolicy.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import jwt

from bench.procs import free_port, wait_port
from config.storage import DatabaseSettings
from proxy.app import PIPELINE, WRITER, create_app, server_options
from storage.store import open_store
from tests.proxyharness import RecordingUpstream, gateway_settings
from tests.test_storage_writer import TcpCut

ROOT = Path(__file__).resolve().parent.parent
SECRET = "faults-secret-0123456789abcdef-0123456"  # noqa: S105 - a test key


def bearer(i: int) -> dict[str, str]:
    now = int(time.time())
    tok = jwt.encode(
        {"sub": f"u{i % 7}", "sid": f"s{i % 13}", "iat": now, "exp": now + 600}, SECRET, "HS256"
    )
    return {"Authorization": f"Bearer {tok}", "User-Agent": "faults/1.0"}


async def seed(dsn: str, bundle: bytes) -> None:
    store = await open_store(DatabaseSettings(url=dsn))
    try:
        v = await store.registry.save_version(bundle, feature_set_version="bg-59.1")
        await store.registry.activate(v.version, by="test")
    finally:
        await store.close()


async def stored_ids(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM predictions")]
    finally:
        await conn.close()


async def until_stored(dsn: str, ids: set[str], timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    got: list[str] = []
    while time.monotonic() < deadline:
        got = await stored_ids(dsn)
        if ids <= set(got):
            break
        await asyncio.sleep(0.2)
    return got


async def fire(port: int, n: int, start: int = 0) -> list[tuple[int, float]]:
    """n concurrent GETs; (status, seconds) each; a client timeout would raise."""

    async def one(session: aiohttp.ClientSession, i: int) -> tuple[int, float]:
        t0 = time.monotonic()
        async with session.get(f"http://127.0.0.1:{port}/api/items/{i}", headers=bearer(i)) as r:
            await r.read()
            return r.status, time.monotonic() - t0

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        return await asyncio.gather(*(one(session, i) for i in range(start, start + n)))


def prediction_ids(upstream: RecordingUpstream) -> set[str]:
    return {v for s in upstream.seen for v in s.header_values("X-BehaviorGate-Prediction-Id")}


async def test_postgres_cut_under_load_loses_nothing_and_recovers(
    aiohttp_server, tmp_path, pg_dsn, redis_url, redis_prefix, bundle_bytes
):
    rec = RecordingUpstream()
    up = await aiohttp_server(rec.app())
    relay = TcpCut()
    await relay.start()
    dsn = pg_dsn.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
    await seed(dsn, bundle_bytes)
    settings = gateway_settings(
        up.port,
        str(tmp_path),
        mode="shadow",
        identity={"jwt": {"hs256_secret": SECRET, "algorithms": ["HS256"]}},
        database={"url": dsn, "connect_timeout": 1, "statement_timeout": 2},
        redis={"url": redis_url},
        history={"key_prefix": redis_prefix},
        writer={"retry_initial": 0.1, "retry_max": 0.5},
    )
    opts = server_options(settings)
    opts.pop("handler_cancellation")
    gw = await aiohttp_server(create_app(settings), **opts)
    results = await fire(gw.port, 60)
    await relay.cut()
    results += await fire(gw.port, 150, start=60)  # the database is away
    writer = gw.app[WRITER]
    assert writer.spooled > 0, "the outage was not noticed"
    await relay.restore()
    results += await fire(gw.port, 60, start=210)  # and back, same gateway, no restart
    await gw.app[PIPELINE].drain()
    assert [s for s, _ in results] == [200] * 270
    assert max(t for _, t in results) < settings.scoring.budget_ms / 1000 + 5
    ids = prediction_ids(rec)
    assert len(ids) == 270
    got = await until_stored(pg_dsn, ids)
    await relay.cut()
    assert sorted(got) == sorted(ids)  # every one, exactly once


def start_gateway(up_port: int, port: int, tmp: Path, dsn: str, redis_url: str, prefix: str):
    env = {
        **os.environ,
        "BEHAVIORGATE_LOGGING__ACCESS_LOG": "false",
        "BEHAVIORGATE_SERVER__SHUTDOWN_TIMEOUT": "15",
        "BEHAVIORGATE_MODE": "shadow",
        "BEHAVIORGATE_IDENTITY__JWT__HS256_SECRET": SECRET,
        "BEHAVIORGATE_WRITER__SPOOL_PATH": str(tmp / "predictions.spool"),
        "BEHAVIORGATE_WRITER__RETRY_INITIAL": "0.1",
        "BEHAVIORGATE_WRITER__RETRY_MAX": "0.5",
        "BEHAVIORGATE_DATABASE__CONNECT_TIMEOUT": "1",
        "BEHAVIORGATE_DATABASE__STATEMENT_TIMEOUT": "2",
        "BEHAVIORGATE_DATA_DIR": str(tmp),
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "BEHAVIORGATE_HISTORY__KEY_PREFIX": prefix,
    }
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "proxy.cli", "serve", "--upstream", f"http://127.0.0.1:{up_port}",
         "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


async def wait_ready(port: int) -> None:
    await asyncio.get_running_loop().run_in_executor(None, wait_port, port, 40.0)


async def test_sigterm_under_load_finishes_in_flight_and_drains_records(
    aiohttp_server, tmp_path, pg_dsn, redis_url, redis_prefix, bundle_bytes
):
    started = asyncio.Event()
    rec = RecordingUpstream()

    async def slow(_request, _seen):
        started.set()
        await asyncio.sleep(1.0)
        return aiohttp.web.json_response({"ok": True})

    rec.behaviour = slow
    up = await aiohttp_server(rec.app())
    await seed(pg_dsn, bundle_bytes)
    port = free_port()
    proc = start_gateway(up.port, port, tmp_path, pg_dsn, redis_url, redis_prefix)
    try:
        await wait_ready(port)
        load = asyncio.create_task(fire(port, 80))
        await asyncio.wait_for(started.wait(), 20)
        await asyncio.sleep(0.2)
        in_flight = len(rec.seen)
        proc.send_signal(signal.SIGTERM)
        results = await load
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert in_flight > 0 and code == 0
    assert [s for s, _ in results] == [200] * 80  # none cut mid-flight
    ids = prediction_ids(rec)
    assert len(ids) == 80
    assert sorted(await stored_ids(pg_dsn)) == sorted(ids)  # drained before exit, once each
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")


async def test_sigkill_with_spooled_records_replayed_at_next_start(
    aiohttp_server, tmp_path, pg_dsn, redis_url, redis_prefix, bundle_bytes
):
    rec = RecordingUpstream()
    up = await aiohttp_server(rec.app())
    relay = TcpCut()
    await relay.start()
    dsn = pg_dsn.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
    await seed(dsn, bundle_bytes)
    port = free_port()
    proc = start_gateway(up.port, port, tmp_path, dsn, redis_url, redis_prefix)
    spool = tmp_path / "predictions.spool"
    try:
        await wait_ready(port)
        await relay.cut()
        results = await fire(port, 120)
        assert [s for s, _ in results] == [200] * 120
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (not spool.exists() or spool.stat().st_size == 0):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let the rest of the queue reach the spool
        assert spool.exists() and spool.stat().st_size > 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    await relay.restore()
    ids = prediction_ids(rec)
    assert len(ids) == 120
    again = start_gateway(up.port, port, tmp_path, dsn, redis_url, redis_prefix)
    try:
        await wait_ready(port)
        got = await until_stored(pg_dsn, ids)
    finally:
        again.send_signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, again.wait, 30)
        await relay.cut()
    # Records already in the spool when killed are replayed once; none appear twice.
    assert len(got) == len(set(got))
    assert set(got) == ids, f"{len(ids - set(got))} of {len(ids)} lost"
