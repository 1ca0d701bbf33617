"""One SQLite write transaction that never leaves the connection inside a transaction."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiosqlite


@contextlib.asynccontextmanager
async def immediate(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any failure — the COMMIT's own included.

    A COMMIT that fails (disk full, I/O error) leaves SQLite inside the transaction; without the
    rollback every later ``BEGIN`` on this shared connection would fail with "cannot start a
    transaction within a transaction" until the process restarts.
    """
    await conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        await conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
        raise
