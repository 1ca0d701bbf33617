"""The records store on Postgres (asyncpg pool).

Predictions are range-partitioned by day on ``ts`` (``predictions_pYYYYMMDD``), so retention
drops whole partitions instead of deleting rows, and window queries touch only their days.
Inserts go through ``COPY`` into a per-connection temporary staging table and then
``INSERT ... ON CONFLICT DO NOTHING``, so replaying a batch twice stores it once.
"""

# ruff: noqa: S608 - SQL text is assembled only from module constants and column lists;
# every value travels as a bind parameter.

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import orjson

from config.storage import DatabaseSettings
from storage.migrate import migrate_pg
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
    aware,
    bucket_fill,
    clean_opt_text,
    clean_text,
    dumps_json,
    finite_or_none,
    id_time,
    prediction_from_row,
    prediction_row,
    stack_sample,
)
from storage.registry import PgRegistry
from storage.store import INCIDENT_STATUSES, RetentionResult, StoreUnavailable

__all__ = ("PgStore", "UNAVAILABLE_ERRORS")

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
)
_COLS = ", ".join(PREDICTION_COLUMNS)
_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS _bg_stage "
    "(LIKE predictions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_LATEST_FEEDBACK = """
    SELECT prediction_id, prediction_ts, is_false_positive FROM (
        SELECT prediction_id, prediction_ts, is_false_positive,
               row_number() OVER (
                   PARTITION BY prediction_id ORDER BY created_at DESC, id DESC) AS rn
        FROM feedback WHERE prediction_ts >= $1 AND prediction_ts < $2
    ) latest WHERE rn = 1"""
_LEARNABLE = "(lf.is_false_positive OR (p.decision <> 'BLOCK' AND lf.is_false_positive IS NULL))"
_INCIDENT_COLS = (
    "created_at, updated_at, status, prediction_id, session_id, user_id, client_ip, route, "
    "rule, composite, reason, actor, notes, details"
)


@contextlib.asynccontextmanager
async def _guard() -> AsyncIterator[None]:
    """Turn connection-level failures into StoreUnavailable (the writer retries those)."""
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc


class PgStore:
    """:class:`storage.store.Store` on Postgres."""

    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, settings: DatabaseSettings, schema: str) -> None:
        self._pool = pool
        self._settings = settings
        self.schema = schema
        self.registry = PgRegistry(pool, settings, schema)
        self._held: dict[str, asyncpg.Connection] = {}

    @classmethod
    async def open(cls, settings: DatabaseSettings) -> PgStore:
        """Connect, migrate (if configured), create the pool and today's partitions."""
        assert settings.url is not None
        async with _guard():
            conn = await asyncpg.connect(settings.url, timeout=settings.connect_timeout)
            try:
                if settings.migrate_on_start:
                    await migrate_pg(conn)
                schema = await conn.fetchval("SELECT current_schema()")
            finally:
                await conn.close()
            pool = await asyncpg.create_pool(
                settings.url,
                min_size=settings.pool_min_size,
                max_size=settings.pool_max_size,
                timeout=settings.connect_timeout,
                command_timeout=settings.statement_timeout + 5,
                server_settings={
                    "statement_timeout": str(int(settings.statement_timeout * 1000)),
                    "client_min_messages": "warning",
                },
            )
        store = cls(pool, settings, schema)
        if settings.migrate_on_start:
            await store.ensure_partitions()
        return store

    async def close(self) -> None:
        for name in list(self._held):
            await self.unlock(name)
        await self.registry.close()
        await self._pool.close()

    async def migrate(self) -> list[int]:
        async with _guard(), self._pool.acquire() as conn:
            done = await migrate_pg(conn)
        await self.ensure_partitions()
        return done

    # -- predictions --------------------------------------------------------------------------

    async def insert_predictions(self, records: Sequence[PredictionRecord]) -> int:
        if not records:
            return 0
        rows = [prediction_row(r) for r in records]
        async with _guard(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_STAGE)
            await conn.copy_records_to_table("_bg_stage", records=rows, columns=PREDICTION_COLUMNS)
            status = await conn.execute(
                f"INSERT INTO predictions ({_COLS}) SELECT {_COLS} FROM _bg_stage "
                "ON CONFLICT DO NOTHING"
            )
        return int(status.rsplit(" ", 1)[-1])

    async def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        async with _guard():
            row = await self._find_prediction(prediction_id, _COLS)
        return _prediction(row) if row is not None else None

    async def _find_prediction(self, prediction_id: str, cols: str) -> asyncpg.Record | None:
        # The id embeds its creation time: look in the neighbouring days' partitions first.
        pid = clean_text(prediction_id, 64)
        around = id_time(pid)
        if around is not None:
            row = await self._pool.fetchrow(
                f"SELECT {cols} FROM predictions WHERE id = $1 AND ts >= $2 AND ts < $3",
                pid,
                around - timedelta(days=1),
                around + timedelta(days=1),
            )
            if row is not None:
                return row
        return await self._pool.fetchrow(f"SELECT {cols} FROM predictions WHERE id = $1", pid)

    async def list_predictions(
        self,
        start: datetime,
        end: datetime,
        *,
        user_id: str | None = None,
        limit: int = 100,
        before_id: str | None = None,
    ) -> list[PredictionRecord]:
        args: list[Any] = [aware(start), aware(end)]
        where = ["ts >= $1", "ts < $2"]
        if user_id is not None:
            args.append(clean_text(user_id))
            where.append(f"user_id = ${len(args)}")
        if before_id is not None:
            args.append(clean_text(before_id, 64))
            where.append(f"id < ${len(args)}")
        args.append(max(0, limit))
        sql = (
            f"SELECT {_COLS} FROM predictions WHERE {' AND '.join(where)} "
            f"ORDER BY id DESC LIMIT ${len(args)}"
        )
        async with _guard():
            rows = await self._pool.fetch(sql, *args)
        return [_prediction(r) for r in rows]

    # -- feedback -----------------------------------------------------------------------------

    async def add_feedback(
        self, prediction_id: str, user_id: str, *, is_false_positive: bool, notes: str = ""
    ) -> Feedback | None:
        async with _guard():
            pred = await self._find_prediction(prediction_id, "id, ts")
            if pred is None:
                return None
            row = await self._pool.fetchrow(
                """INSERT INTO feedback
                       (prediction_id, prediction_ts, user_id, is_false_positive, notes, created_at)
                   VALUES ($1, $2, $3, $4, $5, now())
                   ON CONFLICT (prediction_id, user_id) DO UPDATE SET
                       is_false_positive = EXCLUDED.is_false_positive,
                       notes = EXCLUDED.notes, created_at = EXCLUDED.created_at
                   RETURNING *""",
                pred["id"],
                pred["ts"],
                clean_text(user_id),
                bool(is_false_positive),
                clean_text(notes, NOTES_LIMIT),
            )
        return _feedback(row)

    async def false_positives(
        self, *, limit: int = 50, before_id: int | None = None
    ) -> list[FalsePositiveReport]:
        async with _guard():
            rows = await self._pool.fetch(
                """SELECT * FROM feedback
                   WHERE is_false_positive AND ($1::bigint IS NULL OR id < $1)
                   ORDER BY id DESC LIMIT $2""",
                before_id,
                max(0, limit),
            )
            preds = await self._pool.fetch(
                f"""SELECT {_COLS} FROM predictions WHERE (id, ts) IN
                    (SELECT * FROM unnest($1::text[], $2::timestamptz[]))""",
                [r["prediction_id"] for r in rows],
                [r["prediction_ts"] for r in rows],
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
        bucket_fill(start, end, bucket_seconds, {})  # validates before touching the database
        async with _guard():
            rows = await self._pool.fetch(
                """SELECT floor(extract(epoch FROM ts) / $3)::bigint AS b, decision, count(*) AS n
                   FROM predictions WHERE ts >= $1 AND ts < $2 GROUP BY 1, 2""",
                aware(start),
                aware(end),
                bucket_seconds,
            )
        step = bucket_seconds * 1_000_000
        found: dict[int, dict[str, int]] = {}
        for r in rows:
            found.setdefault(r["b"] * step, {})[r["decision"]] = r["n"]
        return bucket_fill(start, end, bucket_seconds, found)

    async def performance(self, start: datetime, end: datetime) -> PerformanceStats:
        args = (aware(start), aware(end))
        async with _guard():
            agg = await self._pool.fetchrow(
                """SELECT count(*) AS total, count(*) FILTER (WHERE is_anomaly) AS anomalies,
                          avg(composite) AS avg_c, avg(confidence) AS avg_conf,
                          avg(agreement) AS avg_agr,
                          percentile_cont(ARRAY[0.5, 0.95, 0.99])
                              WITHIN GROUP (ORDER BY processing_ms) AS pct
                   FROM predictions WHERE ts >= $1 AND ts < $2""",
                *args,
            )
            decisions = await self._pool.fetch(
                """SELECT decision, count(*) AS n FROM predictions
                   WHERE ts >= $1 AND ts < $2 GROUP BY decision""",
                *args,
            )
            fb = await self._pool.fetchrow(
                f"""SELECT count(*) AS n, count(*) FILTER (WHERE lf.is_false_positive) AS fp
                    FROM ({_LATEST_FEEDBACK}) lf
                    JOIN predictions p ON p.id = lf.prediction_id AND p.ts = lf.prediction_ts
                    WHERE p.is_anomaly""",
                *args,
            )
        return _stats(agg, decisions, fb)

    # -- training and drift samples -----------------------------------------------------------

    async def count_training_samples(
        self, start: datetime, end: datetime, *, feature_set_version: str | None = None
    ) -> int:
        where, args = _sample_where(start, end, feature_set_version, learnable=True)
        async with _guard():
            return int(await self._pool.fetchval(_sample_count_sql(where), *args))

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
        async with _guard(), self._pool.acquire() as conn, conn.transaction(readonly=True):
            total = int(await conn.fetchval(_sample_count_sql(where), *args))
            # Bernoulli pre-filter with a margin (one pass, no sort), then an exact uniform
            # cut in numpy; in the rare case the filter kept too few, sort by random().
            margin = limit + 6 * limit**0.5 + 10
            frac = 1.0 if total <= margin else margin / total
            select = f"""SELECT p.id, p.features, p.composite FROM predictions p
                    LEFT JOIN ({_LATEST_FEEDBACK}) lf ON lf.prediction_id = p.id
                    WHERE {where}"""
            rows = await conn.fetch(f"{select} AND random() < {frac!r}", *args)
            if len(rows) < min(limit, total):
                rows = await conn.fetch(f"{select} ORDER BY random() LIMIT {int(limit)}", *args)
        rows = _uniform_cut(rows, limit)
        return stack_sample(
            [r["id"] for r in rows], [r["features"] for r in rows], [r["composite"] for r in rows]
        )

    # -- incidents ----------------------------------------------------------------------------

    async def open_incident(self, incident: Incident) -> Incident:
        async with _guard():
            row = await self._pool.fetchrow(
                f"""INSERT INTO incidents ({_INCIDENT_COLS})
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)
                    RETURNING *""",
                *_incident_values(incident),
            )
        return _incident(row)

    async def get_incident(self, incident_id: int) -> Incident | None:
        async with _guard():
            row = await self._pool.fetchrow("SELECT * FROM incidents WHERE id = $1", incident_id)
        return _incident(row) if row else None

    async def list_incidents(
        self, *, status: str | None = None, limit: int = 50, before_id: int | None = None
    ) -> list[Incident]:
        async with _guard():
            rows = await self._pool.fetch(
                """SELECT * FROM incidents
                   WHERE ($1::text IS NULL OR status = $1) AND ($2::bigint IS NULL OR id < $2)
                   ORDER BY id DESC LIMIT $3""",
                status,
                before_id,
                max(0, limit),
            )
        return [_incident(r) for r in rows]

    async def update_incident(
        self, incident_id: int, *, status: str, actor: str | None = None, notes: str | None = None
    ) -> Incident | None:
        if status not in INCIDENT_STATUSES:
            raise ValueError(f"status must be one of {INCIDENT_STATUSES}")
        async with _guard():
            row = await self._pool.fetchrow(
                """UPDATE incidents SET status = $2, actor = coalesce($3, actor),
                          notes = coalesce($4, notes), updated_at = now()
                   WHERE id = $1 RETURNING *""",
                incident_id,
                status,
                clean_opt_text(actor),
                clean_opt_text(notes, NOTES_LIMIT),
            )
        return _incident(row) if row else None

    # -- lifecycle: job locks, drift checks, job slots -----------------------------------------

    async def try_lock(self, name: str) -> bool:
        """Take the cluster-wide lock ``name`` without waiting; False when someone holds it.

        A session advisory lock on a dedicated connection: it is released by :meth:`unlock`,
        or by the server when this process dies and its connection drops.
        """
        if name in self._held:
            return False
        async with _guard():
            conn = await asyncpg.connect(self._settings.url, timeout=self._settings.connect_timeout)
            try:
                got = await conn.fetchval(
                    "SELECT pg_try_advisory_lock(hashtext($1))", self._lock_key(name)
                )
            except BaseException:
                await conn.close()
                raise
        if not got:
            await conn.close()
            return False
        self._held[name] = conn
        return True

    async def unlock(self, name: str) -> None:
        """Release a lock taken by :meth:`try_lock` (closing its connection releases it)."""
        conn = self._held.pop(name, None)
        if conn is None:
            return
        with contextlib.suppress(*UNAVAILABLE_ERRORS):
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", self._lock_key(name))
        with contextlib.suppress(*UNAVAILABLE_ERRORS):
            await conn.close()

    def _lock_key(self, name: str) -> str:
        return f"behaviorgate:lock:{self.schema}:{name}"

    async def insert_drift_check(
        self, checked_at: datetime, model_version: int | None, report: dict, *, keep: int = 0
    ) -> int:
        """Store one drift check; with ``keep`` > 0 only the newest ``keep`` checks remain."""
        async with _guard(), self._pool.acquire() as conn, conn.transaction():
            new_id = await conn.fetchval(
                """INSERT INTO drift_checks
                       (checked_at, model_version, drift_score, is_drifting, sample_size, report)
                   VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING id""",
                aware(checked_at),
                model_version,
                float(report.get("driftScore", 0.0)),
                bool(report.get("isDrifting", False)),
                int(report.get("sampleSize", 0)),
                dumps_json(report, limit=10**7),
            )
            if keep > 0:
                await conn.execute(
                    """DELETE FROM drift_checks WHERE id <= (
                           SELECT id FROM drift_checks ORDER BY id DESC OFFSET $1 LIMIT 1)""",
                    keep,
                )
        return int(new_id)

    async def list_drift_checks(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` drift checks, newest first."""
        async with _guard():
            rows = await self._pool.fetch(
                "SELECT * FROM drift_checks ORDER BY id DESC LIMIT $1", max(0, limit)
            )
        return [_drift_check(r, r["checked_at"], _loads(r["report"])) for r in rows]

    async def job_slot(self, job: str) -> datetime | None:
        """The slot (start time) the scheduled job ``job`` last ran for, if any."""
        async with _guard():
            return await self._pool.fetchval("SELECT slot FROM job_runs WHERE job = $1", job)

    async def record_job_run(
        self, job: str, slot: datetime, *, ran_at: datetime, status: str, details: dict
    ) -> None:
        """Remember that ``job`` ran for ``slot`` (an upsert; the slot never moves back)."""
        async with _guard():
            await self._pool.execute(
                """INSERT INTO job_runs (job, slot, ran_at, status, details)
                   VALUES ($1, $2, $3, $4, $5::jsonb)
                   ON CONFLICT (job) DO UPDATE SET slot = greatest(job_runs.slot, EXCLUDED.slot),
                       ran_at = EXCLUDED.ran_at, status = EXCLUDED.status,
                       details = EXCLUDED.details""",
                clean_text(job, 64),
                aware(slot),
                aware(ran_at),
                clean_text(status, 64),
                dumps_json(details, limit=10**5),
            )

    # -- partitions and retention -------------------------------------------------------------

    async def ensure_partitions(self, now: datetime | None = None) -> list[str]:
        """Create the daily partitions from yesterday to ``partition_days_ahead`` days on."""
        today = _day(now or datetime.now(UTC))
        days = [
            today + timedelta(days=d) for d in range(-1, self._settings.partition_days_ahead + 1)
        ]
        created = []
        async with _guard(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                f"behaviorgate:partitions:{self.schema}",
            )
            for day in days:
                if await _create_partition(conn, day):
                    created.append(_partition_name(day))
        return created

    async def apply_retention(
        self, days: int, *, now: datetime | None = None, batch: int = 10_000
    ) -> RetentionResult:
        """Drop partitions older than ``days``; delete old rows elsewhere in batches."""
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=days)
        result = RetentionResult(cutoff=cutoff)
        await self.ensure_partitions(now)
        async with _guard():
            result.dropped_partitions = await self._drop_partitions_before(cutoff)
            result.deleted_predictions = await self._batched_delete(
                "predictions_default", "ctid", "ts", cutoff, batch
            )
            result.deleted_feedback = await self._batched_delete(
                "feedback", "id", "created_at", cutoff, batch
            )
            result.deleted_incidents = await self._batched_delete(
                "incidents", "id", "created_at", cutoff, batch
            )
        return result

    async def _drop_partitions_before(self, cutoff: datetime) -> list[str]:
        names = await self._pool.fetch(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'predictions'::regclass
                 AND c.relname ~ '^predictions_p[0-9]{8}$'"""
        )
        dropped = []
        for (name,) in names:
            day = datetime.strptime(name[-8:], "%Y%m%d").replace(tzinfo=UTC)
            if day + timedelta(days=1) <= cutoff:
                await self._pool.execute(f'DROP TABLE IF EXISTS "{name}"')
                dropped.append(name)
        return sorted(dropped)

    async def _batched_delete(
        self, table: str, key: str, column: str, cutoff: datetime, batch: int
    ) -> int:
        total = 0
        while True:
            status = await self._pool.execute(
                f"""DELETE FROM {table} WHERE {key} IN
                    (SELECT {key} FROM {table} WHERE {column} < $1 LIMIT $2)""",
                cutoff,
                batch,
            )
            n = int(status.rsplit(" ", 1)[-1])
            total += n
            if n < batch:
                return total


# --- helpers ---------------------------------------------------------------------------------


def _loads(value: Any) -> dict[str, Any]:
    return orjson.loads(value) if isinstance(value, str | bytes) else dict(value or {})


def _drift_check(row: Any, checked_at: datetime, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "checked_at": checked_at,
        "model_version": row["model_version"],
        "drift_score": row["drift_score"],
        "is_drifting": bool(row["is_drifting"]),
        "sample_size": row["sample_size"],
        "report": report,
    }


def _day(dt: datetime) -> datetime:
    dt = aware(dt).astimezone(UTC)
    return dt.replace(hour=0, minute=0, second=0, microsecond=0)


def _partition_name(day: datetime) -> str:
    return f"predictions_p{day:%Y%m%d}"


async def _create_partition(conn: asyncpg.Connection, day: datetime) -> bool:
    """Create one day's partition, moving any rows the default partition holds for it."""
    name = _partition_name(day)
    if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
        return False
    lo, hi = day.isoformat(), (day + timedelta(days=1)).isoformat()
    await conn.execute(f'CREATE TABLE "{name}" (LIKE predictions INCLUDING DEFAULTS)')
    await conn.execute(
        f"""WITH moved AS (DELETE FROM predictions_default WHERE ts >= $1 AND ts < $2 RETURNING *)
            INSERT INTO "{name}" SELECT * FROM moved""",
        day,
        day + timedelta(days=1),
    )
    await conn.execute(
        f"ALTER TABLE predictions ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{lo}') TO ('{hi}')"
    )
    return True


def _prediction(row: asyncpg.Record) -> PredictionRecord:
    return prediction_from_row(row, row["ts"])


def _feedback(row: asyncpg.Record) -> Feedback:
    return Feedback(
        id=row["id"],
        prediction_id=row["prediction_id"],
        user_id=row["user_id"],
        is_false_positive=row["is_false_positive"],
        notes=row["notes"],
        created_at=row["created_at"],
    )


def _sample_where(
    start: datetime, end: datetime, fsv: str | None, *, learnable: bool
) -> tuple[str, list[Any]]:
    where = "p.ts >= $1 AND p.ts < $2"
    args: list[Any] = [aware(start), aware(end)]
    if fsv is not None:
        args.append(fsv)
        where += " AND p.feature_set_version = $3"
    # Unscored predictions (scoring timed out or failed) carry no vector: never sampled.
    where += " AND octet_length(p.features) > 0"
    if learnable:
        where += f" AND {_LEARNABLE}"
    return where, args


def _sample_count_sql(where: str) -> str:
    return f"""SELECT count(*) FROM predictions p
               LEFT JOIN ({_LATEST_FEEDBACK}) lf ON lf.prediction_id = p.id WHERE {where}"""


def _uniform_cut(rows: list[Any], limit: int) -> list[Any]:
    if len(rows) <= limit:
        return rows
    keep = np.sort(np.random.default_rng().choice(len(rows), size=limit, replace=False))
    return [rows[i] for i in keep]


def _stats(agg: Any, decisions: Sequence[Any], fb: Any) -> PerformanceStats:
    total, anomalies = int(agg["total"]), int(agg["anomalies"])
    pct = agg["pct"] or [None, None, None]
    fp = int(fb["fp"])
    return PerformanceStats(
        total=total,
        anomaly_count=anomalies,
        anomaly_rate=anomalies / total if total else 0.0,
        avg_composite=finite_or_none(agg["avg_c"]),
        avg_confidence=finite_or_none(agg["avg_conf"]),
        avg_agreement=finite_or_none(agg["avg_agr"]),
        processing_ms_p50=finite_or_none(pct[0]),
        processing_ms_p95=finite_or_none(pct[1]),
        processing_ms_p99=finite_or_none(pct[2]),
        feedback_count=int(fb["n"]),
        false_positive_count=fp,
        false_positive_rate=min(1.0, fp / anomalies) if anomalies else 0.0,
        decisions={r["decision"]: int(r["n"]) for r in decisions},
    )


def _incident_values(inc: Incident) -> tuple[Any, ...]:
    if inc.status not in INCIDENT_STATUSES:
        raise ValueError(f"status must be one of {INCIDENT_STATUSES}")
    return (
        aware(inc.created_at),
        aware(inc.updated_at) if inc.updated_at else None,
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
    return Incident(
        id=row["id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
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
