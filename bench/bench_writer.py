"""Prediction writer benchmark: sustained rows/s into real Postgres, and enqueue cost.

Creates its own database, drops it afterwards. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_writer.py [--rows 200000] [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

Targets (issue 5): >= 20,000 rows/s sustained; enqueue p99 <= 20 us.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time

import asyncpg
import numpy as np

from config.storage import DatabaseSettings, WriterSettings
from storage.records import PredictionRecord
from storage.store import open_store
from storage.writer import PredictionWriter


def make_records(n: int) -> list[PredictionRecord]:
    """Realistic rows: a 59-float vector, scores, and an explanation on non-ALLOW decisions."""
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(n, 59)).astype(np.float32)
    out = []
    for i in range(n):
        flagged = i % 20 == 0
        out.append(
            PredictionRecord(
                session_id=f"s{i % 5000}",
                user_id=f"u{i % 1000}",
                method="GET",
                route="/api/expenses/{id}",
                rule="default",
                client_ip="10.0.0.1",
                features=feats[i],
                iforest_score=0.3,
                autoencoder_score=0.2,
                composite=0.26,
                decision="CHALLENGE" if flagged else "ALLOW",
                is_anomaly=flagged,
                explanation={
                    "topFeatures": [
                        {"feature": "recent_request_rate", "contribution": 0.23, "value": 8.2}
                    ]
                }
                if flagged
                else None,
                model_version=1,
                feature_set_version="fs1",
                processing_ms=1.7,
                upstream_status=200,
                confidence=0.9,
                agreement=0.95,
            )
        )
    return out


async def sustained(dsn: str, n: int) -> None:
    store = await open_store(DatabaseSettings(url=dsn, pool_max_size=4))
    records = make_records(n)
    with tempfile.TemporaryDirectory() as tmp:
        settings = WriterSettings(spool_path=f"{tmp}/spool", queue_max=n + 1, batch_size=5000)
        writer = PredictionWriter(store, settings)
        await writer.start()
        t0 = time.perf_counter()
        for i in range(0, n, 1000):  # offered in chunks, like a busy event loop
            for r in records[i : i + 1000]:
                writer.enqueue(r)
            await asyncio.sleep(0)
        await writer.close()
        elapsed = time.perf_counter() - t0
    stats = writer.stats()
    await store.close()
    conn = await asyncpg.connect(dsn)
    count = await conn.fetchval("SELECT count(*) FROM predictions")
    await conn.close()
    print(f"rows offered           {n}")
    print(f"rows in postgres       {count}")
    print(
        f"written / spooled      {stats['written']} / {stats['spooled']} "
        f"(replayed {stats['replayed']}, dropped {stats['dropped']})"
    )
    print(f"elapsed                {elapsed:.2f} s (enqueue + drain, writer closed)")
    print(f"sustained              {n / elapsed:,.0f} rows/s")


async def enqueue_cost(n: int) -> None:
    """Per-call enqueue latency with the flusher running against a no-op store."""

    class NullStore:
        async def insert_predictions(self, records):  # noqa: ANN001, ANN202
            return len(records)

    records = make_records(n)
    with tempfile.TemporaryDirectory() as tmp:
        writer = PredictionWriter(
            NullStore(),  # type: ignore[arg-type]
            WriterSettings(spool_path=f"{tmp}/spool", queue_max=n + 1, batch_size=2000),
        )
        await writer.start()
        samples = np.empty(n)
        clock = time.perf_counter_ns
        for i, r in enumerate(records):
            t = clock()
            writer.enqueue(r)
            samples[i] = clock() - t
            if i % 500 == 0:
                await asyncio.sleep(0)
        await writer.close()
    us = samples / 1000
    print(f"enqueue calls          {n}")
    print(
        f"enqueue p50 / p99      {np.percentile(us, 50):.2f} / {np.percentile(us, 99):.2f} us "
        f"(max {us.max():.1f} us)"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    name = f"bgbench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base = args.dsn.rpartition("/")[0]
        await sustained(f"{base}/{name}", args.rows)
        await enqueue_cost(100_000)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
