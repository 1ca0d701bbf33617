"""The records store on an embedded SQLite file (aiosqlite), for a gateway without Postgres.

One connection in WAL mode serves the process; an asyncio lock keeps one logical operation
(possibly several statements) on it at a time. Times are stored as integer microseconds
since the epoch. Percentiles are computed in Python over the window's processing times, which
is fine at the volumes an embedded store is meant for.
"""

# ruff: noqa: S608 - SQL text is assembled only from module constants and column lists;
# every value travels as a bind parameter.

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np
import orjson

from config.storage import DatabaseSettings
from storage.migrate import first_row, migrate_sqlite
from storage.records import (
    NOTES_LIMIT,
    PREDICTION_COLUMNS,
    DecisionBucket,
    FalsePositiveReport,
    FeatureSample,
    Feedback,
    Incident,
    PerformanceStats,
    PredictionRecord,
    bucket_fill,
    clean_opt_text,
    clean_text,
    dumps_json,
    finite_or_none,
    from_us,
    prediction_from_row,
    prediction_row,
    stack_sample,
    to_us,
)
from storage.registry import SqliteRegistry
from storage.sqlite_tx import immediate
from storage.store import INCIDENT_STATUSES, RetentionResult, StoreUnavailable

__all__ = ("SqliteStore",)

_COLS = ", ".join(PREDICTION_COLUMNS)
_INSERT = (
    f"INSERT OR IGNORE INTO predictions ({_COLS}) "
    f"VALUES ({', '.join('?' for _ in PREDICTION_COLUMNS)})"
)
_LATEST_FEEDBACK = """
    SELECT prediction_id, is_false_positive FROM (
        SELECT prediction_id, is_false_positive,
               row_number() OVER (
                   PARTITION BY prediction_id ORDER BY created_at DESC, id DESC) AS rn
        FROM feedback WHERE prediction_ts >= ?1 AND prediction_ts < ?2
    ) WHERE rn = 1"""
_LEARNABLE = (
    "(lf.is_false_positive = 1 OR (p.decision <> 'BLOCK' AND lf.is_false_positive IS NULL))"
)
_INCIDENT_COLS = (
    "created_at, updated_at, status, prediction_id, session_id, user_id, client_ip, route, "
    "rule, composite, reason, actor, notes, details"
)


def _now_us() -> int:
    return to_us(datetime.now(UTC))


class SqliteStore:
    """:class:`storage.store.Store` on SQLite."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, settings: DatabaseSettings) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.registry = SqliteRegistry(conn, self._lock, settings)
        # Embedded means one process: job locks need only be process-local.
        self._held: set[str] = set()

    @classmethod
    async def open(cls, path: str | Path, settings: DatabaseSettings) -> SqliteStore:
        """Open (creating) the database file, configure it and migrate if configured."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None, timeout=30.0)
        conn.row_factory = aiosqlite.Row
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
            await first_row(await conn.execute(f"PRAGMA {pragma}"))
        store = cls(conn, settings)
        if settings.migrate_on_start:
            await store.migrate()
        return store

    async def close(self) -> None:
        await self._conn.close()

    async def migrate(self) -> list[int]:
        async with self._lock:
            return await migrate_sqlite(self._conn)

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        async with self._lock, _guard():
            cur = await self._conn.execute(sql, tuple(args))
            return list(await cur.fetchall())

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock, _guard(), immediate(self._conn) as conn:
            yield conn

    # -- predictions --------------------------------------------------------------------------

    async def insert_predictions(self, records: Sequence[PredictionRecord]) -> int:
        if not records:
            return 0
        rows = [_sqlite_row(prediction_row(r)) for r in records]
        async with self._tx() as conn:
            before = conn.total_changes
            await conn.executemany(_INSERT, rows)
            return conn.total_changes - before

    async def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        rows = await self._fetch(
            f"SELECT {_COLS} FROM predictions WHERE id = ?", (clean_text(prediction_id, 64),)
        )
        return _prediction(rows[0]) if rows else None

    async def list_predictions(
        self,
        start: datetime,
        end: datetime,
        *,
        user_id: str | None = None,
        limit: int = 100,
        before_id: str | None = None,
    ) -> list[PredictionRecord]:
        where, args = ["ts >= ?", "ts < ?"], [to_us(start), to_us(end)]
        if user_id is not None:
            where.append("user_id = ?")
            args.append(clean_text(user_id))
        if before_id is not None:
            where.append("id < ?")
            args.append(clean_text(before_id, 64))
        rows = await self._fetch(
            f"SELECT {_COLS} FROM predictions WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            [*args, max(0, limit)],
        )
        return [_prediction(r) for r in rows]

    # -- feedback -----------------------------------------------------------------------------

    async def add_feedback(
        self, prediction_id: str, user_id: str, *, is_false_positive: bool, notes: str = ""
    ) -> Feedback | None:
        pid = clean_text(prediction_id, 64)
        async with self._tx() as conn:
            cur = await conn.execute("SELECT ts FROM predictions WHERE id = ?", (pid,))
            pred = await first_row(cur)
            if pred is None:
                return None
            await conn.execute(
                """INSERT INTO feedback
                       (prediction_id, prediction_ts, user_id, is_false_positive, notes, created_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (prediction_id, user_id) DO UPDATE SET
                       is_false_positive = excluded.is_false_positive,
                       notes = excluded.notes, created_at = excluded.created_at""",
                (
                    pid,
                    pred["ts"],
                    clean_text(user_id),
                    int(bool(is_false_positive)),
                    clean_text(notes, NOTES_LIMIT),
                    _now_us(),
                ),
            )
            cur = await conn.execute(
                "SELECT * FROM feedback WHERE prediction_id = ? AND user_id = ?",
                (pid, clean_text(user_id)),
            )
            return _feedback(await first_row(cur))

    async def false_positives(
        self, *, limit: int = 50, before_id: int | None = None
    ) -> list[FalsePositiveReport]:
        rows = await self._fetch(
            """SELECT * FROM feedback WHERE is_false_positive = 1 AND (?1 IS NULL OR id < ?1)
               ORDER BY id DESC LIMIT ?2""",
            (before_id, max(0, limit)),
        )
        ids = [r["prediction_id"] for r in rows]
        preds = (
            await self._fetch(
                f"SELECT {_COLS} FROM predictions WHERE id IN ({', '.join('?' for _ in ids)})", ids
            )
            if ids
            else []
        )
        by_id = {p["id"]: _prediction(p) for p in preds}
        return [
            FalsePositiveReport(feedback=_feedback(r), prediction=by_id.get(r["prediction_id"]))
            for r in rows
        ]

    # -- aggregates ---------------------------------------------------------------------------

    async def decision_counts(
        self, start: datetime, end: datetime, bucket_seconds: int
    ) -> list[DecisionBucket]:
        bucket_fill(start, end, bucket_seconds, {})
        step = bucket_seconds * 1_000_000
        rows = await self._fetch(
            """SELECT (ts / ?3) * ?3 AS b, decision, count(*) AS n FROM predictions
               WHERE ts >= ?1 AND ts < ?2 GROUP BY 1, 2""",
            (to_us(start), to_us(end), step),
        )
        found: dict[int, dict[str, int]] = {}
        for r in rows:
            found.setdefault(r["b"], {})[r["decision"]] = r["n"]
        return bucket_fill(start, end, bucket_seconds, found)

    async def performance(self, start: datetime, end: datetime) -> PerformanceStats:
        args = (to_us(start), to_us(end))
        agg = (
            await self._fetch(
                """SELECT count(*) AS total, coalesce(sum(is_anomaly), 0) AS anomalies,
                      avg(composite) AS avg_c, avg(confidence) AS avg_conf,
                      avg(agreement) AS avg_agr
               FROM predictions WHERE ts >= ?1 AND ts < ?2""",
                args,
            )
        )[0]
        times = await self._fetch(
            """SELECT processing_ms FROM predictions
               WHERE ts >= ?1 AND ts < ?2 AND processing_ms IS NOT NULL""",
            args,
        )
        decisions = await self._fetch(
            """SELECT decision, count(*) AS n FROM predictions
               WHERE ts >= ?1 AND ts < ?2 GROUP BY decision""",
            args,
        )
        fb = (
            await self._fetch(
                f"""SELECT count(*) AS n, coalesce(sum(lf.is_false_positive), 0) AS fp
                FROM ({_LATEST_FEEDBACK}) lf JOIN predictions p ON p.id = lf.prediction_id
                WHERE p.is_anomaly = 1""",
                args,
            )
        )[0]
        total, anomalies, fp = int(agg["total"]), int(agg["anomalies"]), int(fb["fp"])
        pct = _percentiles([r[0] for r in times])
        return PerformanceStats(
            total=total,
            anomaly_count=anomalies,
            anomaly_rate=anomalies / total if total else 0.0,
            avg_composite=finite_or_none(agg["avg_c"]),
            avg_confidence=finite_or_none(agg["avg_conf"]),
            avg_agreement=finite_or_none(agg["avg_agr"]),
            processing_ms_p50=pct[0],
            processing_ms_p95=pct[1],
            processing_ms_p99=pct[2],
            feedback_count=int(fb["n"]),
            false_positive_count=fp,
            false_positive_rate=min(1.0, fp / anomalies) if anomalies else 0.0,
            decisions={r["decision"]: int(r["n"]) for r in decisions},
        )

    # -- training and drift samples -----------------------------------------------------------

    async def count_training_samples(
        self, start: datetime, end: datetime, *, feature_set_version: str | None = None
    ) -> int:
        where, args = _sample_where(start, end, feature_set_version, learnable=True)
        rows = await self._fetch(_sample_sql("count(*)", where), args)
        return int(rows[0][0])

    async def training_sample(
        self,
        start: datetime,
        end: datetime,
        *,
        limit: int,
        feature_set_version: str | None = None,
    ) -> FeatureSample:
        return await self._sample(start, end, limit, feature_set_version, learnable=True)

    async def window_features(
        self,
        start: datetime,
        end: datetime,
        *,
        limit: int,
        feature_set_version: str | None = None,
    ) -> FeatureSample:
        return await self._sample(start, end, limit, feature_set_version, learnable=False)

    async def _sample(
        self, start: datetime, end: datetime, limit: int, fsv: str | None, *, learnable: bool
    ) -> FeatureSample:
        where, args = _sample_where(start, end, fsv, learnable=learnable)
        rows = await self._fetch(_sample_sql("p.id, p.features, p.composite", where), args)
        if len(rows) > limit:
            keep = np.sort(np.random.default_rng().choice(len(rows), size=limit, replace=False))
            rows = [rows[i] for i in keep]
        return stack_sample([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

    # -- incidents ----------------------------------------------------------------------------

    async def open_incident(self, incident: Incident) -> Incident:
        values = _incident_values(incident)
        async with self._tx() as conn:
            cur = await conn.execute(
                f"INSERT INTO incidents ({_INCIDENT_COLS}) VALUES ({', '.join('?' * 14)})", values
            )
            cur = await conn.execute("SELECT * FROM incidents WHERE id = ?", (cur.lastrowid,))
            return _incident(await first_row(cur))

    async def get_incident(self, incident_id: int) -> Incident | None:
        rows = await self._fetch("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        return _incident(rows[0]) if rows else None

    async def list_incidents(
        self, *, status: str | None = None, limit: int = 50, before_id: int | None = None
    ) -> list[Incident]:
        rows = await self._fetch(
            """SELECT * FROM incidents WHERE (?1 IS NULL OR status = ?1)
               AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3""",
            (status, before_id, max(0, limit)),
        )
        return [_incident(r) for r in rows]

    async def update_incident(
        self, incident_id: int, *, status: str, actor: str | None = None, notes: str | None = None
    ) -> Incident | None:
        if status not in INCIDENT_STATUSES:
            raise ValueError(f"status must be one of {INCIDENT_STATUSES}")
        async with self._tx() as conn:
            await conn.execute(
                """UPDATE incidents SET status = ?, actor = coalesce(?, actor),
                          notes = coalesce(?, notes), updated_at = ? WHERE id = ?""",
                (
                    status,
                    clean_opt_text(actor),
                    clean_opt_text(notes, NOTES_LIMIT),
                    _now_us(),
                    incident_id,
                ),
            )
            cur = await conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,))
            row = await first_row(cur)
        return _incident(row) if row else None

    # -- lifecycle: job locks, drift checks, job slots -----------------------------------------

    async def try_lock(self, name: str) -> bool:
        """Take the lock ``name`` without waiting; False when it is held (process-local)."""
        if name in self._held:
            return False
        self._held.add(name)
        return True

    async def unlock(self, name: str) -> None:
        """Release a lock taken by :meth:`try_lock`."""
        self._held.discard(name)

    async def insert_drift_check(
        self, checked_at: datetime, model_version: int | None, report: dict, *, keep: int = 0
    ) -> int:
        """Store one drift check; with ``keep`` > 0 only the newest ``keep`` checks remain."""
        async with self._tx() as conn:
            cur = await conn.execute(
                """INSERT INTO drift_checks
                       (checked_at, model_version, drift_score, is_drifting, sample_size, report)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (
                    to_us(checked_at),
                    model_version,
                    float(report.get("driftScore", 0.0)),
                    int(bool(report.get("isDrifting", False))),
                    int(report.get("sampleSize", 0)),
                    dumps_json(report, limit=10**7),
                ),
            )
            new_id = int(cur.lastrowid or 0)
            if keep > 0:
                await conn.execute(
                    """DELETE FROM drift_checks WHERE id <= (
                           SELECT id FROM drift_checks ORDER BY id DESC LIMIT 1 OFFSET ?)""",
                    (keep,),
                )
        return new_id

    async def list_drift_checks(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` drift checks, newest first."""
        rows = await self._fetch(
            """SELECT id, checked_at, model_version, drift_score, is_drifting, sample_size, report
               FROM drift_checks ORDER BY id DESC LIMIT ?""",
            (max(0, limit),),
        )
        return [
            {
                "id": r[0],
                "checked_at": from_us(r[1]),
                "model_version": r[2],
                "drift_score": r[3],
                "is_drifting": bool(r[4]),
                "sample_size": r[5],
                "report": orjson.loads(r[6]),
            }
            for r in rows
        ]

    async def job_slot(self, job: str) -> datetime | None:
        """The slot (start time) the scheduled job ``job`` last ran for, if any."""
        rows = await self._fetch("SELECT slot FROM job_runs WHERE job = ?", (job,))
        return from_us(rows[0][0]) if rows else None

    async def record_job_run(
        self, job: str, slot: datetime, *, ran_at: datetime, status: str, details: dict
    ) -> None:
        """Remember that ``job`` ran for ``slot`` (an upsert; the slot never moves back)."""
        async with self._tx() as conn:
            await conn.execute(
                """INSERT INTO job_runs (job, slot, ran_at, status, details)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (job) DO UPDATE SET slot = max(job_runs.slot, excluded.slot),
                       ran_at = excluded.ran_at, status = excluded.status,
                       details = excluded.details""",
                (
                    clean_text(job, 64),
                    to_us(slot),
                    to_us(ran_at),
                    clean_text(status, 64),
                    dumps_json(details, limit=10**5),
                ),
            )

    # -- retention ----------------------------------------------------------------------------

    async def apply_retention(
        self, days: int, *, now: datetime | None = None, batch: int = 10_000
    ) -> RetentionResult:
        """Delete rows older than ``days`` in batches (short write locks between batches)."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
        result = RetentionResult(cutoff=cutoff)
        c = to_us(cutoff)
        result.deleted_predictions = await self._batched_delete("predictions", "ts", c, batch)
        result.deleted_feedback = await self._batched_delete("feedback", "created_at", c, batch)
        result.deleted_incidents = await self._batched_delete("incidents", "created_at", c, batch)
        return result

    async def _batched_delete(self, table: str, column: str, cutoff: int, batch: int) -> int:
        total = 0
        while True:
            async with self._tx() as conn:
                cur = await conn.execute(
                    f"""DELETE FROM {table} WHERE rowid IN
                        (SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)""",
                    (cutoff, batch),
                )
                n = cur.rowcount
            total += n
            if n < batch:
                return total


# --- helpers ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _guard() -> AsyncIterator[None]:
    """A locked or unopenable database file is 'unavailable' (the writer spools)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        msg = str(exc).lower()
        if "locked" in msg or "unable to open" in msg or "disk i/o" in msg:
            raise StoreUnavailable(str(exc)) from exc
        raise
    except ValueError as exc:
        if "closed" in str(exc).lower():  # aiosqlite: "no active connection"
            raise StoreUnavailable(str(exc)) from exc
        raise


def _sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    values = list(row)
    values[1] = to_us(values[1])
    values[13] = int(values[13])
    return tuple(values)


def _prediction(row: Any) -> PredictionRecord:
    return prediction_from_row(row, from_us(row["ts"]))


def _feedback(row: Any) -> Feedback:
    return Feedback(
        id=row["id"],
        prediction_id=row["prediction_id"],
        user_id=row["user_id"],
        is_false_positive=bool(row["is_false_positive"]),
        notes=row["notes"],
        created_at=from_us(row["created_at"]),
    )


def _sample_where(
    start: datetime, end: datetime, fsv: str | None, *, learnable: bool
) -> tuple[str, list[Any]]:
    where = "p.ts >= ?1 AND p.ts < ?2"
    args: list[Any] = [to_us(start), to_us(end)]
    if fsv is not None:
        args.append(fsv)
        where += " AND p.feature_set_version = ?3"
    # Unscored predictions (scoring timed out or failed) carry no vector: never sampled.
    where += " AND length(p.features) > 0"
    if learnable:
        where += f" AND {_LEARNABLE}"
    return where, args


def _sample_sql(select: str, where: str) -> str:
    return f"""SELECT {select} FROM predictions p
               LEFT JOIN ({_LATEST_FEEDBACK}) lf ON lf.prediction_id = p.id WHERE {where}"""


def _percentiles(values: list[float]) -> list[float | None]:
    if not values:
        return [None, None, None]
    # linear interpolation, the same definition as Postgres percentile_cont
    return [float(v) for v in np.percentile(np.asarray(values, float), [50, 95, 99])]


def _incident_values(inc: Incident) -> tuple[Any, ...]:
    if inc.status not in INCIDENT_STATUSES:
        raise ValueError(f"status must be one of {INCIDENT_STATUSES}")
    return (
        to_us(inc.created_at),
        to_us(inc.updated_at) if inc.updated_at else None,
        inc.status,
        clean_opt_text(inc.prediction_id, 64),
        clean_opt_text(inc.session_id),
        clean_opt_text(inc.user_id),
        clean_opt_text(inc.client_ip, 64),
        clean_opt_text(inc.route),
        clean_opt_text(inc.rule),
        finite_or_none(inc.composite),
        clean_text(inc.reason, NOTES_LIMIT),
        clean_opt_text(inc.actor),
        clean_text(inc.notes, NOTES_LIMIT),
        dumps_json(inc.details or {}),
    )


def _incident(row: Any) -> Incident:
    import orjson

    return Incident(
        id=row["id"],
        created_at=from_us(row["created_at"]),
        updated_at=from_us(row["updated_at"]) if row["updated_at"] is not None else None,
        status=row["status"],
        prediction_id=row["prediction_id"],
        session_id=row["session_id"],
        user_id=row["user_id"],
        client_ip=row["client_ip"],
        route=row["route"],
        rule=row["rule"],
        composite=row["composite"],
        reason=row["reason"],
        actor=row["actor"],
        notes=row["notes"],
        details=orjson.loads(row["details"]) if row["details"] else {},
    )
