"""One contract suite for the records store, run on real Postgres and on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from config.storage import DatabaseSettings
from storage.records import Incident, PredictionRecord
from storage.store import Store, StoreUnavailable, open_store

T0 = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)  # old enough to sit in Postgres' default partition
NEAR = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)  # in a daily partition


@pytest.fixture(params=["postgresql", "sqlite"])
async def store(request, pg_dsn: str, tmp_path: Path) -> AsyncIterator[Store]:
    url = pg_dsn if request.param == "postgresql" else f"sqlite:///{tmp_path}/bg.db"
    s = await open_store(DatabaseSettings(url=url, pool_min_size=1, pool_max_size=4))
    yield s
    await s.close()


def rec(ts: datetime, **kw) -> PredictionRecord:
    kw.setdefault("features", np.arange(4, dtype=np.float32))
    kw.setdefault("feature_set_version", "fs1")
    return PredictionRecord(ts=ts, **kw)


async def test_open_store_kinds(store: Store) -> None:
    assert isinstance(store, Store)
    assert store.dialect in ("postgresql", "sqlite")


async def test_insert_is_idempotent_on_id(store: Store) -> None:
    first = [rec(NEAR + timedelta(seconds=i)) for i in range(5)]
    assert await store.insert_predictions(first) == 5
    more = [rec(NEAR + timedelta(seconds=10 + i)) for i in range(2)]
    assert await store.insert_predictions(first + more + more[:1]) == 2
    got = await store.list_predictions(NEAR, NEAR + timedelta(hours=1), limit=100)
    assert len(got) == 7
    assert await store.insert_predictions([]) == 0


async def test_round_trip_with_hostile_values(store: Store) -> None:
    r = rec(
        NEAR,
        session_id="s\x00\ud800",
        user_id="ünï😀",
        method="POST",
        route="/api/x/{id}",
        rule="strict",
        client_ip="2001:db8::1",
        features=np.array([1.5, np.nan, -2.0], dtype=np.float32),
        iforest_score=float("nan"),
        autoencoder_score=0.25,
        composite=float("inf"),
        decision="BLOCK",
        is_anomaly=True,
        explanation={"why\x00": ["a", float("nan")], "top": [{"f": "x", "c": 0.5}]},
        model_version=3,
        processing_ms=1.25,
        upstream_status=None,
        confidence=0.875,
        agreement=None,
    )
    await store.insert_predictions([r])
    got = await store.get_prediction(r.id)
    assert got is not None
    assert got.ts == NEAR
    assert got.session_id == "s\ufffd?"
    assert got.user_id == "ünï😀"
    assert (got.method, got.route, got.rule, got.client_ip) == (
        "POST",
        "/api/x/{id}",
        "strict",
        "2001:db8::1",
    )
    np.testing.assert_array_equal(got.feature_array(), np.array([1.5, np.nan, -2.0], np.float32))
    assert got.iforest_score is None and got.composite is None and got.agreement is None
    assert got.autoencoder_score == 0.25 and got.confidence == 0.875
    assert got.decision == "BLOCK" and got.is_anomaly is True
    assert got.explanation == {"why\ufffd": ["a", None], "top": [{"f": "x", "c": 0.5}]}
    assert got.model_version == 3 and got.processing_ms == 1.25 and got.upstream_status is None
    assert await store.get_prediction("01ZZZZZZZZZZZZZZZZZZZZZZZZ") is None
    assert await store.get_prediction("garbage\x00") is None


async def test_list_predictions_window_user_and_pages(store: Store) -> None:
    mine = [rec(NEAR + timedelta(minutes=i), user_id="alice") for i in range(5)]
    other = [rec(NEAR + timedelta(minutes=i), user_id="bob") for i in range(3)]
    await store.insert_predictions(mine + other)
    end = NEAR + timedelta(minutes=4)  # half-open: the 5th record (minute 4) is outside
    got = await store.list_predictions(NEAR, end, user_id="alice", limit=10)
    assert [g.id for g in got] == [r.id for r in reversed(mine[:4])]
    page1 = await store.list_predictions(NEAR, end, user_id="alice", limit=2)
    page2 = await store.list_predictions(
        NEAR, end, user_id="alice", limit=2, before_id=page1[-1].id
    )
    assert [g.id for g in page1 + page2] == [r.id for r in reversed(mine[:4])]
    assert len(await store.list_predictions(NEAR, end, limit=100)) == 7


async def test_feedback_upsert_and_unknown(store: Store) -> None:
    r = rec(NEAR, user_id="alice", decision="CHALLENGE", is_anomaly=True)
    await store.insert_predictions([r])
    assert await store.add_feedback("nope", "alice", is_false_positive=True) is None
    fb = await store.add_feedback(r.id, "alice", is_false_positive=True, notes="n" * 2000)
    assert fb is not None and fb.is_false_positive and len(fb.notes) == 1000
    again = await store.add_feedback(r.id, "alice", is_false_positive=False, notes="oops")
    assert again is not None and again.id == fb.id and not again.is_false_positive
    assert again.notes == "oops"


async def test_false_positive_review_pages(store: Store) -> None:
    rs = [rec(NEAR + timedelta(seconds=i), decision="BLOCK", is_anomaly=True) for i in range(5)]
    await store.insert_predictions(rs)
    for i, r in enumerate(rs):
        await store.add_feedback(r.id, f"u{i}", is_false_positive=i != 2, notes=f"n{i}")
    page1 = await store.false_positives(limit=3)
    assert [p.feedback.notes for p in page1] == ["n4", "n3", "n1"]
    assert page1[0].prediction is not None and page1[0].prediction.id == rs[4].id
    page2 = await store.false_positives(limit=3, before_id=page1[-1].feedback.id)
    assert [p.feedback.notes for p in page2] == ["n0"]


async def test_decision_counts_by_bucket(store: Store) -> None:
    offsets = {"ALLOW": [0, 10, 70], "BLOCK": [65], "MONITOR": [130, 179]}
    await store.insert_predictions(
        [rec(T0 + timedelta(seconds=s), decision=d) for d, secs in offsets.items() for s in secs]
    )
    buckets = await store.decision_counts(T0, T0 + timedelta(minutes=4), 60)
    assert [b.start for b in buckets] == [T0 + timedelta(minutes=m) for m in range(4)]
    assert [b.counts for b in buckets] == [
        {"ALLOW": 2},
        {"ALLOW": 1, "BLOCK": 1},
        {"MONITOR": 2},
        {},
    ]
    with pytest.raises(ValueError):
        await store.decision_counts(T0, T0 + timedelta(days=30), 1)


async def test_performance_aggregates(store: Store) -> None:
    rs = []
    for i in range(1, 101):  # processing 1..100 ms; every 4th is an anomaly
        anomalous = i % 4 == 0
        rs.append(
            rec(
                NEAR + timedelta(seconds=i),
                processing_ms=float(i),
                composite=0.8 if anomalous else 0.2,
                confidence=0.5,
                agreement=1.0 if anomalous else None,
                is_anomaly=anomalous,
                decision="CHALLENGE" if anomalous else "ALLOW",
            )
        )
    await store.insert_predictions(rs)
    # 25 anomalies: 5 reported false positives, 2 confirmed real, 1 reported then retracted
    for r in rs[3:23:4]:
        await store.add_feedback(r.id, "owner", is_false_positive=True)
    for r in rs[23:31:4]:
        await store.add_feedback(r.id, "owner", is_false_positive=False)
    await store.add_feedback(rs[0].id, "owner", is_false_positive=True)  # not an anomaly
    perf = await store.performance(NEAR, NEAR + timedelta(hours=1))
    assert perf.total == 100 and perf.anomaly_count == 25
    assert perf.anomaly_rate == pytest.approx(0.25)
    assert perf.avg_composite == pytest.approx((25 * 0.8 + 75 * 0.2) / 100)
    assert perf.avg_confidence == pytest.approx(0.5) and perf.avg_agreement == pytest.approx(1.0)
    # linear interpolation on 1..100: rank (n-1)q → 50.5, 95.05, 99.01
    assert perf.processing_ms_p50 == pytest.approx(50.5)
    assert perf.processing_ms_p95 == pytest.approx(95.05)
    assert perf.processing_ms_p99 == pytest.approx(99.01)
    assert perf.feedback_count == 7 and perf.false_positive_count == 5
    assert perf.false_positive_rate == pytest.approx(5 / 25)
    assert perf.decisions == {"ALLOW": 75, "CHALLENGE": 25}
    empty = await store.performance(T0 - timedelta(days=1), T0)
    assert empty.total == 0 and empty.avg_composite is None and empty.processing_ms_p99 is None
    assert empty.anomaly_rate == 0.0 and empty.false_positive_rate == 0.0


async def _labelled(store: Store) -> dict[str, PredictionRecord]:
    t = NEAR
    rs = {
        "allow": rec(t, decision="ALLOW"),
        "block": rec(t + timedelta(seconds=1), decision="BLOCK", is_anomaly=True),
        "block_fp": rec(t + timedelta(seconds=2), decision="BLOCK", is_anomaly=True),
        "monitor_real": rec(t + timedelta(seconds=3), decision="MONITOR", is_anomaly=True),
        "challenge_fp": rec(t + timedelta(seconds=4), decision="CHALLENGE", is_anomaly=True),
        "retracted": rec(t + timedelta(seconds=5), decision="ALLOW"),
        "other_set": rec(
            t + timedelta(seconds=6),
            decision="ALLOW",
            feature_set_version="fs2",
            features=np.zeros(7, np.float32),
        ),
        # Unscored (Redis timed out): no vector, though its feature set is the current one. It
        # must stay out of training and drift samples, which need equal-length vectors.
        "unscored": rec(
            t + timedelta(seconds=7), decision="ERROR", features=np.zeros(0, np.float32)
        ),
    }
    await store.insert_predictions(list(rs.values()))
    await store.add_feedback(rs["block_fp"].id, "u", is_false_positive=True)
    await store.add_feedback(rs["monitor_real"].id, "admin", is_false_positive=False)
    await store.add_feedback(rs["challenge_fp"].id, "u", is_false_positive=True)
    await store.add_feedback(rs["retracted"].id, "u", is_false_positive=True)
    await store.add_feedback(rs["retracted"].id, "admin", is_false_positive=False)  # latest wins
    return rs


async def test_training_sample_excludes_flagged_keeps_false_positives(store: Store) -> None:
    rs = await _labelled(store)
    window = (NEAR - timedelta(minutes=1), NEAR + timedelta(minutes=1))
    expected = {rs[k].id for k in ("allow", "block_fp", "challenge_fp")}
    assert await store.count_training_samples(*window, feature_set_version="fs1") == 3
    sample = await store.training_sample(*window, limit=100, feature_set_version="fs1")
    assert set(sample.ids) == expected and len(sample) == 3
    assert sample.features.shape == (3, 4) and sample.features.dtype == np.float32
    capped = await store.training_sample(*window, limit=2, feature_set_version="fs1")
    assert len(capped) == 2 and set(capped.ids) <= expected
    everything = await store.window_features(*window, limit=100, feature_set_version="fs1")
    assert len(everything) == 6
    with pytest.raises(ValueError, match="feature_set_version"):
        await store.window_features(*window, limit=100)
    none = await store.training_sample(T0, T0 + timedelta(seconds=1), limit=5)
    assert len(none) == 0 and none.features.shape[0] == 0


async def test_capped_sample_is_uniform(store: Store) -> None:
    rs = [rec(NEAR + timedelta(milliseconds=i)) for i in range(400)]
    await store.insert_predictions(rs)
    window = (NEAR, NEAR + timedelta(seconds=1))
    hits = np.zeros(2)
    for _ in range(20):
        s = await store.training_sample(*window, limit=100)
        assert len(s) == 100 and len(set(s.ids)) == 100
        order = {r.id: i for i, r in enumerate(rs)}
        for pid in s.ids:
            hits[order[pid] >= 200] += 1
    # both halves of the window are drawn about equally (2000 draws, 1000 expected each)
    assert abs(hits[0] - hits[1]) < 300


async def test_incidents_lifecycle(store: Store) -> None:
    inc = await store.open_incident(
        Incident(
            prediction_id="p1",
            user_id="alice",
            reason="score 0.95\x00",
            composite=0.95,
            details={"ip": "1.2.3.4", "nan": float("nan")},
        )
    )
    assert inc.id is not None and inc.status == "open" and inc.reason == "score 0.95\ufffd"
    assert inc.details == {"ip": "1.2.3.4", "nan": None}
    second = await store.open_incident(Incident(user_id="bob", reason="r2"))
    upd = await store.update_incident(inc.id, status="released", actor="admin", notes="ok")
    assert upd is not None and upd.status == "released" and upd.actor == "admin"
    assert upd.updated_at is not None
    assert [i.id for i in await store.list_incidents(status="open")] == [second.id]
    assert [i.id for i in await store.list_incidents()] == [second.id, inc.id]
    assert [i.id for i in await store.list_incidents(before_id=second.id)] == [inc.id]
    assert await store.update_incident(10_000, status="resolved") is None
    with pytest.raises(ValueError):
        await store.update_incident(inc.id, status="bogus")
    assert (await store.get_incident(inc.id)).status == "released"


async def test_retention_removes_only_old_rows(store: Store) -> None:
    now = datetime.now(UTC)
    old = [rec(now - timedelta(days=100, seconds=i)) for i in range(3)]
    new = [rec(now - timedelta(days=1, seconds=i)) for i in range(2)]
    if store.dialect == "postgresql":  # give the old day a real partition so it gets dropped
        await store.ensure_partitions(now - timedelta(days=100))  # type: ignore[attr-defined]
    await store.insert_predictions(old + new)
    result = await store.apply_retention(90, now=now, batch=2)
    assert [await store.get_prediction(r.id) for r in old] == [None] * 3
    assert None not in [await store.get_prediction(r.id) for r in new]
    if store.dialect == "postgresql":
        assert any(n.startswith("predictions_p") for n in result.dropped_partitions)
    else:
        assert result.deleted_predictions == 3


async def test_pg_partition_takes_rows_from_default(pg_dsn: str) -> None:
    s = await open_store(DatabaseSettings(url=pg_dsn, pool_max_size=2))
    try:
        future = datetime.now(UTC) + timedelta(days=40)
        r = rec(future)
        await s.insert_predictions([r])
        conn = await asyncpg.connect(pg_dsn)
        where = "SELECT tableoid::regclass::text FROM predictions WHERE id = $1"
        assert await conn.fetchval(where, r.id) == "predictions_default"
        created = await s.ensure_partitions(future)  # type: ignore[attr-defined]
        assert f"predictions_p{future:%Y%m%d}" in created
        assert await conn.fetchval(where, r.id) == f"predictions_p{future:%Y%m%d}"
        await conn.close()
        assert (await s.get_prediction(r.id)) is not None
    finally:
        await s.close()


async def test_sqlite_failed_commit_does_not_wedge_the_shared_connection(tmp_path: Path) -> None:
    """A COMMIT that fails leaves SQLite inside the transaction; the store must roll it back, or
    every later write on its one connection fails ("cannot start a transaction within a
    transaction") until a restart."""
    s = await open_store(DatabaseSettings(url=f"sqlite:///{tmp_path}/bg.db"))
    try:
        conn = s._conn  # type: ignore[attr-defined]
        real_execute = conn.execute
        fail_next = {"COMMIT"}

        async def execute(sql: str, *args: object):
            if sql in fail_next:
                fail_next.discard(sql)
                raise sqlite3.OperationalError("disk I/O error")
            return await real_execute(sql, *args)

        conn.execute = execute
        lost, kept = rec(NEAR), rec(NEAR + timedelta(seconds=1))
        with pytest.raises(StoreUnavailable):
            await s.insert_predictions([lost])
        assert not conn.in_transaction
        assert await s.insert_predictions([kept]) == 1
        got = await s.list_predictions(NEAR - timedelta(hours=1), NEAR + timedelta(hours=1))
        assert [r.id for r in got] == [kept.id]  # the failed batch was rolled back, not half-kept
    finally:
        await s.close()
