"""Model registry: versioned bundles, exactly one active, activation broadcast to replicas.

Exactly-one-active holds at three levels: a partial unique index on ``status = 'active'``;
activation retires the old version and promotes the new one in one transaction; and that
transaction is serialised (a Postgres advisory transaction lock, SQLite ``BEGIN IMMEDIATE``),
so two admins activating different versions at once end with the later one active and never
with an error or two actives.

Replicas follow the active version with :meth:`watch`, an async iterator yielding the active
version number whenever it changes. On Postgres it wakes on ``NOTIFY`` (sent inside the
activation transaction, so delivered only on commit) and also polls as a fallback; on SQLite
it polls. Use it with ``contextlib.aclosing`` so its listening connection is closed.
"""

# ruff: noqa: S608 - SQL text is assembled only from module constants and column lists;
# every value travels as a bind parameter.

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import asyncpg
import orjson

from config.storage import DatabaseSettings
from storage.migrate import first_row
from storage.records import ModelVersion, aware, clean_text, dumps_json, from_us, to_us
from storage.sqlite_tx import immediate
from storage.store import NoPreviousVersion, StoreUnavailable, UnknownVersion

__all__ = ("NOTIFY_CHANNEL", "PgRegistry", "SqliteRegistry")

NOTIFY_CHANNEL = "behaviorgate_model_activated"
_META = (
    "version, created_at, feature_set_version, config, metrics, window_start, window_end, "
    "sample_count, status, activated_at, activated_by"
)
_PG_DOWN = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


def _json(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return orjson.loads(value) if isinstance(value, str | bytes) else dict(value)


def _version(row: Any, conv: Any) -> ModelVersion:
    keys = row.keys()
    return ModelVersion(
        version=row["version"],
        created_at=conv(row["created_at"]),
        feature_set_version=row["feature_set_version"],
        bundle=bytes(row["bundle"]) if "bundle" in keys else None,
        config=_json(row["config"]),
        metrics=_json(row["metrics"]),
        window_start=conv(row["window_start"]),
        window_end=conv(row["window_end"]),
        sample_count=row["sample_count"],
        status=row["status"],
        activated_at=conv(row["activated_at"]),
        activated_by=row["activated_by"],
    )


def _same(value: Any) -> Any:
    return value


def _from_us_opt(value: int | None) -> datetime | None:
    return None if value is None else from_us(value)


def _to_us_opt(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


class PgRegistry:
    """Registry on Postgres; ``watch`` listens on :data:`NOTIFY_CHANNEL`."""

    def __init__(self, pool: asyncpg.Pool, settings: DatabaseSettings, schema: str) -> None:
        self._pool = pool
        self._settings = settings
        self._schema = schema
        self._lock_key = f"behaviorgate:registry:{schema}"

    async def close(self) -> None:
        """Nothing to release: listener connections belong to their watch iterators."""

    async def save_version(
        self,
        bundle: bytes,
        *,
        feature_set_version: str,
        config: dict | None = None,
        metrics: dict | None = None,
        window_start: datetime | None = None,
        window_end: datetime | None = None,
        sample_count: int = 0,
    ) -> ModelVersion:
        row = await self._pool.fetchrow(
            f"""INSERT INTO model_versions (feature_set_version, bundle, config, metrics,
                    window_start, window_end, sample_count)
                VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7) RETURNING {_META}, bundle""",
            clean_text(feature_set_version, 64),
            bytes(bundle),
            dumps_json(config or {}, limit=10**7),
            dumps_json(metrics or {}, limit=10**7),
            aware(window_start) if window_start else None,
            aware(window_end) if window_end else None,
            int(sample_count),
        )
        return _version(row, _same)

    async def list_versions(self) -> list[ModelVersion]:
        rows = await self._pool.fetch(f"SELECT {_META} FROM model_versions ORDER BY version DESC")
        return [_version(r, _same) for r in rows]

    async def get_version(self, version: int, *, with_bundle: bool = True) -> ModelVersion | None:
        cols = f"{_META}, bundle" if with_bundle else _META
        row = await self._pool.fetchrow(
            f"SELECT {cols} FROM model_versions WHERE version = $1", version
        )
        return _version(row, _same) if row else None

    async def active_version(self) -> ModelVersion | None:
        row = await self._pool.fetchrow(
            f"SELECT {_META}, bundle FROM model_versions WHERE status = 'active'"
        )
        return _version(row, _same) if row else None

    async def active_version_number(self) -> int | None:
        return await self._pool.fetchval(
            "SELECT version FROM model_versions WHERE status = 'active'"
        )

    async def activate(self, version: int, *, by: str) -> ModelVersion:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._lock_key)
            return await self._activate_locked(conn, version, by)

    async def rollback(self, *, by: str) -> ModelVersion:
        """Activate the highest previously-activated version below the active one."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._lock_key)
            current = await conn.fetchval(
                "SELECT version FROM model_versions WHERE status = 'active'"
            )
            previous = await conn.fetchval(
                """SELECT max(version) FROM model_versions
                   WHERE activated_at IS NOT NULL AND status <> 'active' AND version < $1""",
                current if current is not None else 2**31 - 1,
            )
            if previous is None:
                raise NoPreviousVersion("no earlier activated version to roll back to")
            return await self._activate_locked(conn, previous, by)

    async def _activate_locked(
        self, conn: asyncpg.Connection, version: int, by: str
    ) -> ModelVersion:
        if await conn.fetchval("SELECT 1 FROM model_versions WHERE version = $1", version) is None:
            raise UnknownVersion(f"model version {version} does not exist")
        await conn.execute(
            "UPDATE model_versions SET status = 'retired' "
            "WHERE status = 'active' AND version <> $1",
            version,
        )
        row = await conn.fetchrow(
            f"""UPDATE model_versions SET status = 'active', activated_at = now(), activated_by = $2
                WHERE version = $1 RETURNING {_META}""",
            version,
            clean_text(by),
        )
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, f"{self._schema}:{version}")
        return _version(row, _same)

    async def watch(self, poll_interval: float | None = None) -> AsyncIterator[int | None]:
        """Yield the active version now and again whenever it changes."""
        interval = poll_interval or self._settings.registry_poll_interval
        wake = asyncio.Event()
        listener: asyncpg.Connection | None = None
        last: object = object()

        def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
            if payload.startswith(f"{self._schema}:"):
                wake.set()

        try:
            while True:
                if listener is None or listener.is_closed():
                    listener = await self._listen(on_notify, wake)
                try:
                    current = await self.active_version_number()
                except _PG_DOWN:
                    current = last  # keep serving the version we have
                if current != last:
                    last = current
                    yield current  # type: ignore[misc]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
                wake.clear()
        finally:
            if listener is not None and not listener.is_closed():
                await listener.close()

    async def _listen(self, on_notify: Any, wake: asyncio.Event) -> asyncpg.Connection | None:
        """A dedicated LISTEN connection (pool connections UNLISTEN on release); None if down."""
        try:
            conn = await asyncpg.connect(self._settings.url, timeout=self._settings.connect_timeout)
            await conn.add_listener(NOTIFY_CHANNEL, on_notify)
            conn.add_termination_listener(lambda _c: wake.set())
            return conn
        except _PG_DOWN:
            return None


class SqliteRegistry:
    """Registry on the embedded SQLite file; ``watch`` polls."""

    def __init__(
        self, conn: aiosqlite.Connection, lock: asyncio.Lock, settings: DatabaseSettings
    ) -> None:
        self._conn = conn
        self._lock = lock
        self._settings = settings

    async def close(self) -> None:
        """The connection belongs to the store."""

    async def save_version(
        self,
        bundle: bytes,
        *,
        feature_set_version: str,
        config: dict | None = None,
        metrics: dict | None = None,
        window_start: datetime | None = None,
        window_end: datetime | None = None,
        sample_count: int = 0,
    ) -> ModelVersion:
        async with self._lock:
            cur = await self._conn.execute(
                """INSERT INTO model_versions (created_at, feature_set_version, bundle, config,
                       metrics, window_start, window_end, sample_count)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    to_us(datetime.now(UTC)),
                    clean_text(feature_set_version, 64),
                    bytes(bundle),
                    dumps_json(config or {}, limit=10**7),
                    dumps_json(metrics or {}, limit=10**7),
                    _to_us_opt(window_start),
                    _to_us_opt(window_end),
                    int(sample_count),
                ),
            )
            version = cur.lastrowid
        got = await self.get_version(int(version or 0))
        assert got is not None
        return got

    async def _fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        async with self._lock:
            cur = await self._conn.execute(sql, args)
            return list(await cur.fetchall())

    async def list_versions(self) -> list[ModelVersion]:
        rows = await self._fetch(f"SELECT {_META} FROM model_versions ORDER BY version DESC")
        return [_version(r, _from_us_opt) for r in rows]

    async def get_version(self, version: int, *, with_bundle: bool = True) -> ModelVersion | None:
        cols = f"{_META}, bundle" if with_bundle else _META
        rows = await self._fetch(f"SELECT {cols} FROM model_versions WHERE version = ?", (version,))
        return _version(rows[0], _from_us_opt) if rows else None

    async def active_version(self) -> ModelVersion | None:
        rows = await self._fetch(
            f"SELECT {_META}, bundle FROM model_versions WHERE status = 'active'"
        )
        return _version(rows[0], _from_us_opt) if rows else None

    async def active_version_number(self) -> int | None:
        rows = await self._fetch("SELECT version FROM model_versions WHERE status = 'active'")
        return rows[0][0] if rows else None

    async def activate(self, version: int, *, by: str) -> ModelVersion:
        async with self._write() as conn:
            await self._activate_locked(conn, version, by)
        got = await self.get_version(version, with_bundle=False)
        assert got is not None
        return got

    async def rollback(self, *, by: str) -> ModelVersion:
        async with self._write() as conn:
            cur = await conn.execute("SELECT version FROM model_versions WHERE status = 'active'")
            row = await first_row(cur)
            current = row[0] if row else 2**31 - 1
            cur = await conn.execute(
                """SELECT max(version) FROM model_versions
                   WHERE activated_at IS NOT NULL AND status <> 'active' AND version < ?""",
                (current,),
            )
            previous = (await first_row(cur))[0]  # type: ignore[index]
            if previous is None:
                raise NoPreviousVersion("no earlier activated version to roll back to")
            await self._activate_locked(conn, previous, by)
        got = await self.get_version(previous, with_bundle=False)
        assert got is not None
        return got

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """An exclusive write transaction (serialises against other processes too)."""
        async with self._lock, immediate(self._conn) as conn:
            yield conn

    async def _activate_locked(self, conn: aiosqlite.Connection, version: int, by: str) -> None:
        cur = await conn.execute("SELECT 1 FROM model_versions WHERE version = ?", (version,))
        if await first_row(cur) is None:
            raise UnknownVersion(f"model version {version} does not exist")
        await conn.execute(
            "UPDATE model_versions SET status = 'retired' WHERE status = 'active' AND version <> ?",
            (version,),
        )
        await conn.execute(
            """UPDATE model_versions SET status = 'active', activated_at = ?, activated_by = ?
               WHERE version = ?""",
            (to_us(datetime.now(UTC)), clean_text(by), version),
        )

    async def watch(self, poll_interval: float | None = None) -> AsyncIterator[int | None]:
        """Yield the active version now and whenever a poll sees it change."""
        interval = poll_interval or self._settings.registry_poll_interval
        last: object = object()
        while True:
            try:
                current = await self.active_version_number()
            except (aiosqlite.Error, StoreUnavailable):
                current = last
            if current != last:
                last = current
                yield current  # type: ignore[misc]
            await asyncio.sleep(interval)
