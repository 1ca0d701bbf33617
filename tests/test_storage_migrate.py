"""Migrations: from empty, re-run, two migrators at once, on Postgres and SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
import asyncpg
import pytest

from storage.migrate import first_row, load_migrations, migrate_pg, migrate_sqlite, split_sqlite

EXPECTED_TABLES = {
    "predictions",
    "feedback",
    "incidents",
    "model_versions",
    "schema_migrations",
    "drift_checks",
    "job_runs",
}


def test_both_dialects_have_the_same_versions() -> None:
    pg = [m.version for m in load_migrations("pg")]
    lite = [m.version for m in load_migrations("sqlite")]
    assert pg == lite and pg[0] == 1


def test_split_sqlite_respects_quotes_and_comments() -> None:
    sql = (
        "-- note; not a statement\nCREATE TABLE a (x TEXT DEFAULT ';');\n\n"
        "INSERT INTO a VALUES ('b;c');\n"
    )
    assert split_sqlite(sql) == [
        "-- note; not a statement\nCREATE TABLE a (x TEXT DEFAULT ';');",
        "INSERT INTO a VALUES ('b;c');",
    ]


async def _pg_tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        """SELECT tablename FROM pg_tables WHERE schemaname = current_schema()
           AND tablename NOT LIKE 'predictions\\_%'"""
    )
    return {r[0] for r in rows}


async def test_pg_from_empty_then_rerun(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate_pg(conn) == [1, 2]
        assert await _pg_tables(conn) == EXPECTED_TABLES
        assert await migrate_pg(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 2
        # nothing leaked into public
        assert await conn.fetchval("SELECT to_regclass('public.predictions')") is None
    finally:
        await conn.close()


async def test_pg_two_concurrent_migrators(pg_dsn: str) -> None:
    a, b = await asyncpg.connect(pg_dsn), await asyncpg.connect(pg_dsn)
    try:
        done = await asyncio.gather(migrate_pg(a), migrate_pg(b))
        assert sorted(done) == [[], [1, 2]]
        assert await _pg_tables(a) == EXPECTED_TABLES
    finally:
        await a.close()
        await b.close()


async def _sqlite(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None, timeout=30)
    await first_row(await conn.execute("PRAGMA journal_mode=WAL"))
    return conn


async def _sqlite_tables(conn: aiosqlite.Connection) -> set[str]:
    cur = await conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    return {r[0] for r in await cur.fetchall()}


async def test_sqlite_from_empty_then_rerun(tmp_path: Path) -> None:
    conn = await _sqlite(tmp_path / "db")
    try:
        assert await migrate_sqlite(conn) == [1, 2]
        assert await migrate_sqlite(conn) == []
        assert await _sqlite_tables(conn) == EXPECTED_TABLES
    finally:
        await conn.close()


async def test_sqlite_two_concurrent_migrators(tmp_path: Path) -> None:
    a, b = await _sqlite(tmp_path / "db"), await _sqlite(tmp_path / "db")
    try:
        done = await asyncio.gather(migrate_sqlite(a), migrate_sqlite(b))
        assert sorted(done) == [[], [1, 2]]
        cur = await a.execute("SELECT count(*) FROM schema_migrations")
        assert (await cur.fetchone())[0] == 2
    finally:
        await a.close()
        await b.close()


async def test_pg_failed_migration_leaves_no_ledger_row(pg_dsn: str, monkeypatch) -> None:
    from storage import migrate as mod

    broken = [mod.Migration(1, "init", "CREATE TABLE ok_table (x int); SELECT 1/0;")]
    monkeypatch.setattr(mod, "load_migrations", lambda dialect: broken)
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await mod.migrate_pg(conn)
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
        assert await conn.fetchval("SELECT to_regclass('ok_table')") is None
    finally:
        await conn.close()
