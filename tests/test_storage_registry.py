"""Model registry: versions, one active, races between connections, NOTIFY to a second process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.storage import DatabaseSettings
from storage.store import NoPreviousVersion, Store, UnknownVersion, open_store

W0 = datetime(2026, 1, 1, tzinfo=UTC)
W1 = datetime(2026, 1, 31, tzinfo=UTC)


def _url(kind: str, pg_dsn: str, tmp_path: Path) -> str:
    return pg_dsn if kind == "postgresql" else f"sqlite:///{tmp_path}/bg.db"


@pytest.fixture(params=["postgresql", "sqlite"])
async def two_stores(request, pg_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two independent connections (pools / SQLite connections) to the same database."""
    url = _url(request.param, pg_dsn, tmp_path)
    a = await open_store(DatabaseSettings(url=url, pool_max_size=4))
    b = await open_store(DatabaseSettings(url=url, pool_max_size=4))
    yield a, b
    await a.close()
    await b.close()


async def test_save_list_get(two_stores: tuple[Store, Store]) -> None:
    reg = two_stores[0].registry
    v1 = await reg.save_version(
        b"\x00bundle\xff",
        feature_set_version="fs1",
        config={"trees": 100},
        metrics={"auc": 0.9},
        window_start=W0,
        window_end=W1,
        sample_count=1234,
    )
    assert v1.status == "candidate" and v1.bundle == b"\x00bundle\xff"
    v2 = await reg.save_version(b"two", feature_set_version="fs1")
    assert v2.version > v1.version
    listed = await reg.list_versions()
    assert [v.version for v in listed] == [v2.version, v1.version]
    assert all(v.bundle is None for v in listed)
    got = await two_stores[1].registry.get_version(v1.version)
    assert got is not None and got.bundle == b"\x00bundle\xff"
    assert (got.config, got.metrics, got.sample_count) == ({"trees": 100}, {"auc": 0.9}, 1234)
    assert (got.window_start, got.window_end) == (W0, W1)
    assert await reg.get_version(99_999) is None
    assert await reg.active_version() is None and await reg.active_version_number() is None


async def test_activate_and_rollback_history(two_stores: tuple[Store, Store]) -> None:
    reg = two_stores[0].registry
    vs = [(await reg.save_version(bytes([i]), feature_set_version="fs")).version for i in range(3)]
    with pytest.raises(NoPreviousVersion):
        await reg.rollback(by="ops")
    with pytest.raises(UnknownVersion):
        await reg.activate(99_999, by="ops")
    for v in vs:
        act = await reg.activate(v, by="trainer")
        assert act.status == "active" and act.activated_by == "trainer"
    active = await reg.active_version()
    assert active is not None and active.version == vs[2] and active.bundle == bytes([2])
    assert (await reg.rollback(by="ops")).version == vs[1]
    assert (await reg.rollback(by="ops")).version == vs[0]
    with pytest.raises(NoPreviousVersion):
        await reg.rollback(by="ops")
    statuses = {v.version: v.status for v in await reg.list_versions()}
    assert statuses == {vs[0]: "active", vs[1]: "retired", vs[2]: "retired"}


async def test_concurrent_activations_leave_exactly_one_active(
    two_stores: tuple[Store, Store],
) -> None:
    a, b = two_stores
    vs = [(await a.registry.save_version(b"x", feature_set_version="fs")).version for _ in range(4)]
    await a.registry.activate(vs[0], by="init")
    jobs = []
    for i in range(10):
        jobs.append(a.registry.activate(vs[1 + i % 3], by="a"))
        jobs.append(b.registry.activate(vs[(i + 2) % 4], by="b"))
        jobs.append(b.registry.rollback(by="b"))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    unexpected = [
        r for r in results if isinstance(r, Exception) and not isinstance(r, NoPreviousVersion)
    ]
    assert unexpected == []
    listed = await b.registry.list_versions()
    assert sum(v.status == "active" for v in listed) == 1
    active = await a.registry.active_version_number()
    assert active == next(v.version for v in listed if v.status == "active")


async def test_sqlite_watch_polls(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/bg.db"
    a = await open_store(DatabaseSettings(url=url))
    b = await open_store(DatabaseSettings(url=url))
    try:
        v = await a.registry.save_version(b"x", feature_set_version="fs")
        async with contextlib.aclosing(b.registry.watch(poll_interval=0.02)) as it:
            assert await anext(it) is None
            await a.registry.activate(v.version, by="t")
            assert await asyncio.wait_for(anext(it), 2) == v.version
    finally:
        await a.close()
        await b.close()


_WATCHER = """
import asyncio, contextlib, sys
from config.storage import DatabaseSettings
from storage.store import open_store

async def main():
    store = await open_store(DatabaseSettings(url=sys.argv[1], migrate_on_start=False))
    async with contextlib.aclosing(store.registry.watch(poll_interval=60)) as it:
        async for version in it:
            print(version, flush=True)
            if version == int(sys.argv[2]):
                break
    await store.close()

asyncio.run(main())
"""


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "watcher printed nothing in time"
    return proc.stdout.readline().strip()  # type: ignore[union-attr]


async def test_pg_notify_reaches_a_second_process(pg_dsn: str) -> None:
    """The watcher polls only every 60 s, so a prompt update proves NOTIFY delivered it."""
    store = await open_store(DatabaseSettings(url=pg_dsn))
    v1 = await store.registry.save_version(b"1", feature_set_version="fs")
    v2 = await store.registry.save_version(b"2", feature_set_version="fs")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _WATCHER, pg_dsn, str(v2.version)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    try:
        assert await asyncio.to_thread(_readline, proc, 20) == "None"
        started = time.monotonic()
        await store.registry.activate(v1.version, by="t")
        assert await asyncio.to_thread(_readline, proc, 10) == str(v1.version)
        await store.registry.activate(v2.version, by="t")
        assert await asyncio.to_thread(_readline, proc, 10) == str(v2.version)
        assert time.monotonic() - started < 10
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await store.close()
