"""Shared fixtures: real Redis and Postgres, each test run in its own key prefix / database.

These fixtures never skip: when a server is absent the tests that need it fail, so CI cannot
go green without having exercised the real stores.
"""

from __future__ import annotations

import gc
import os
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from hypothesis import settings as hypothesis_settings

# CI replays the same generated examples every run (a red CI must mean a regression, not a new
# random draw); developers' runs keep exploring and keep failures in .hypothesis/.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

REDIS_URL = os.environ.get("BG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_DSN = os.environ.get("BG_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def _thawed_heap() -> Iterator[None]:
    """A gateway started by a test freezes the heap (server.gc_freeze); thaw it afterwards so
    one test's leftovers never escape the collector for the rest of the run."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def run_id() -> str:
    """A token unique to this test run, used to namespace shared servers."""
    return f"{os.getpid()}_{secrets.token_hex(4)}"


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
async def redis_prefix(run_id: str) -> AsyncIterator[str]:
    """A fresh key prefix on the real Redis; every key under it is deleted afterwards."""
    prefix = f"bgtest:{run_id}:{secrets.token_hex(3)}:"
    yield prefix
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def real_redis(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    await client.ping()
    yield client
    await client.aclose()


def _dsn_for(dbname: str) -> str:
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_database(run_id: str) -> Iterator[str]:
    """A database created for this test run on the real Postgres, dropped at the end."""
    import asyncio

    name = f"bgtest_{run_id}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield _dsn_for(name)
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def pg_dsn(pg_database: str) -> AsyncIterator[str]:
    """A DSN whose default schema is fresh for this test (dropped afterwards)."""
    schema = f"t_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(pg_database)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    yield f"{pg_database}?options=-csearch_path%3D{schema}"
    conn = await asyncpg.connect(pg_database)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def bundle_bytes() -> bytes:
    """A small model trained once per run on vectors from the gateway's own features code."""
    from bench.trafficmodel import tiny_bundle_bytes

    return tiny_bundle_bytes()
