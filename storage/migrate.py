"""Versioned schema migrations for Postgres and SQLite, applied idempotently.

Files live beside this module as ``storage/migrations/<dialect>_<NNNN>_<name>.sql``
(dialect ``pg`` or ``sqlite``). Applied versions are recorded in ``schema_migrations``.
Concurrent migrators (two replicas starting together) serialise on a Postgres advisory lock
keyed by the current schema, or on SQLite's write lock (``BEGIN IMMEDIATE``); whoever comes
second re-reads the applied set under the lock and finds nothing left to do.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import aiosqlite
import asyncpg

__all__ = ("Migration", "first_row", "load_migrations", "migrate_pg", "migrate_sqlite")

Dialect = Literal["pg", "sqlite"]
_NAME = re.compile(r"^(pg|sqlite)_(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: Dialect) -> list[Migration]:
    """The migrations of one dialect, in version order."""
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match and match.group(1) == dialect:
            found.append(Migration(int(match.group(2)), match.group(3), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate {dialect} migration versions: {versions}")
    return found


# --- Postgres --------------------------------------------------------------------------------

_PG_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def migrate_pg(conn: asyncpg.Connection) -> list[int]:
    """Apply pending migrations on ``conn``; returns the versions this call applied."""
    schema = await conn.fetchval("SELECT current_schema()")
    if schema is None:
        raise RuntimeError("no current schema: check search_path in the database URL")
    key = f"behaviorgate:migrate:{schema}"
    await conn.execute("SELECT pg_advisory_lock(hashtext($1))", key)
    try:
        await conn.execute(_PG_LEDGER)
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        done = []
        for mig in load_migrations("pg"):
            if mig.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    mig.version,
                    mig.name,
                )
            done.append(mig.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)


# --- SQLite ----------------------------------------------------------------------------------

_SQLITE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)"""


async def first_row(cur: aiosqlite.Cursor) -> Any:
    """The first row of a cursor, reading it to the end and closing it.

    An SQLite statement left unfinished keeps its read lock even in autocommit mode, which
    blocks other connections' writers; so every cursor is drained.
    """
    rows = await cur.fetchall()
    await cur.close()
    return rows[0] if rows else None


def split_sqlite(sql: str) -> list[str]:
    """Split a script into whole statements (sqlite3.complete_statement knows quoting)."""
    statements, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            stmt = buf.strip()
            if stmt and not _only_comments(stmt):
                statements.append(stmt)
            buf = ""
    if buf.strip() and not _only_comments(buf):
        raise ValueError(f"incomplete SQL statement at end of migration: {buf[:80]!r}")
    return statements


def _only_comments(text: str) -> bool:
    return all(not ln.strip() or ln.strip().startswith("--") for ln in text.splitlines())


async def migrate_sqlite(conn: aiosqlite.Connection) -> list[int]:
    """Apply pending migrations; ``conn`` must be in autocommit mode (isolation_level=None)."""
    await conn.execute(_SQLITE_LEDGER)
    done = []
    for mig in load_migrations("sqlite"):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            cur = await conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (mig.version,)
            )
            if await first_row(cur) is None:
                for stmt in split_sqlite(mig.sql):
                    await conn.execute(stmt)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (mig.version, mig.name, int(time.time())),
                )
                done.append(mig.version)
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
    return done
