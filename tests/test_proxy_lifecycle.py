"""Model lifecycle against real Postgres (and Redis for the gateway processes).

In-process tests drive a :class:`Lifecycle` with a controllable clock and a stand-in trainer
process (copies a prepared bundle, fails, or hangs); the end-to-end test runs two real gateway
processes on one Redis and one Postgres through learning -> train -> drift -> retrain.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from bench.procs import free_port, wait_port
from config.model import ModelSettings
from config.settings import Settings
from proxy.lifecycle import (
    InsufficientData,
    JobRunning,
    Lifecycle,
    daily_slot,
    interval_slot,
    promotion_verdict,
    validate_candidate,
)
from proxy.models import ModelHolder
from scoring.bundle import ModelBundle
from scoring.features import FEATURE_NAMES, FEATURE_SET_VERSION
from scoring.training import train_bundle
from storage.records import PredictionRecord
from storage.store import open_store

D = len(FEATURE_NAMES)
SMALL_MODEL = {
    "isolation_forest": {"n_trees": 20, "sample_size": 64},
    "autoencoder": {"epochs": 3, "encoding_dim": 4},
    "drift": {"reference_sample_size": 200},
}
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

FAKE_TRAINER = """
import shutil, sys, time
mode, src, out = sys.argv[1], sys.argv[2], sys.argv[4]
if mode == "fail":
    sys.stderr.write("trainer blew up\\n")
    sys.exit(1)
if mode == "hang":
    time.sleep(60)
shutil.copyfile(src, out)
"""


def normal_rows(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, D)) + shift).astype(np.float32)


def records(X: np.ndarray, end: datetime, span: timedelta) -> list[PredictionRecord]:
    step = span / max(1, len(X))
    return [
        PredictionRecord(
            ts=end - step * (i + 1),
            features=row,
            decision="LEARNING",
            feature_set_version=FEATURE_SET_VERSION,
        )
        for i, row in enumerate(X)
    ]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small bundles: one of 'normal' traffic, one of traffic shifted by +4 everywhere."""
    s = ModelSettings.model_validate({**SMALL_MODEL, "training": {"min_samples": 100}})
    d = tmp_path_factory.mktemp("bundles")
    out = {}
    for name, shift in (("normal", 0.0), ("shifted", 4.0)):
        b = train_bundle(normal_rows(600, 1, shift), list(FEATURE_NAMES), FEATURE_SET_VERSION, s)
        out[name] = d / f"{name}.bundle"
        out[name].write_bytes(b.to_bytes())
    trainer = d / "fake_trainer.py"
    trainer.write_text(FAKE_TRAINER)
    out["trainer"] = trainer
    return out


def settings(dsn: str, **lifecycle: object) -> Settings:
    return Settings.model_validate(
        {
            "database": {"url": dsn, "registry_poll_interval": 0.2},
            "model": {**SMALL_MODEL, "training": {"min_samples": 300}},
            "lifecycle": lifecycle,
        }
    )


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Replica:
    """A store + model holder + lifecycle, as one gateway process would have them."""

    def __init__(self, lc: Lifecycle, holder: ModelHolder) -> None:
        self.lc, self.holder, self.store = lc, holder, lc.store

    @classmethod
    async def open(
        cls, s: Settings, clock: Clock, trainer: tuple[str, ...] | None = None
    ) -> Replica:
        store = await open_store(s.database)
        holder = ModelHolder(store.registry, 0.2)
        await holder.start()
        kw = {"trainer": trainer} if trainer else {}
        return cls(Lifecycle(s, store, holder, clock=clock, **kw), holder)

    async def close(self) -> None:
        await self.lc.close()
        await self.holder.close()
        await self.store.close()


def fake(bundles: dict[str, Path], mode: str, src: str = "normal") -> tuple[str, ...]:
    return (sys.executable, str(bundles["trainer"]), mode, str(bundles[src]))


@pytest.fixture
async def replica(pg_dsn: str) -> AsyncIterator[Replica]:
    r = await Replica.open(settings(pg_dsn, promotion={"enabled": False}), Clock(T0))
    yield r
    await r.close()


async def activate(r: Replica, path: Path) -> int:
    v = await r.store.registry.save_version(
        path.read_bytes(), feature_set_version=FEATURE_SET_VERSION
    )
    await r.store.registry.activate(v.version, by="test")
    await r.holder.refresh()
    return v.version


# --- pure pieces -----------------------------------------------------------------------------


def test_daily_slot_in_a_time_zone() -> None:
    # Berlin is UTC+1 in early March: local midnight is 23:00 UTC the day before.
    assert daily_slot(T0, "00:00", "Europe/Berlin") == datetime(2026, 3, 9, 23, 0, tzinfo=UTC)
    late = datetime(2026, 3, 10, 22, 30, tzinfo=UTC)  # 23:30 local
    assert daily_slot(late, "00:00", "Europe/Berlin") == datetime(2026, 3, 9, 23, 0, tzinfo=UTC)
    before = datetime(2026, 3, 9, 22, 59, tzinfo=UTC)  # 23:59 local on the 9th
    assert daily_slot(before, "00:00", "Europe/Berlin") == datetime(2026, 3, 8, 23, 0, tzinfo=UTC)
    assert daily_slot(T0, "13:30", "UTC") == datetime(2026, 3, 9, 13, 30, tzinfo=UTC)


def test_interval_slot() -> None:
    assert interval_slot(T0 + timedelta(minutes=59), 3600) == T0
    assert interval_slot(T0 + timedelta(hours=1), 3600) == T0 + timedelta(hours=1)
    assert interval_slot(T0 + timedelta(hours=5), 6 * 3600) == datetime(2026, 3, 10, 12, tzinfo=UTC)


def test_promotion_verdict_both_directions_and_floor() -> None:
    base = {"block": 0.01, "challenge": 0.05}
    assert promotion_verdict(base, {"block": 0.019, "challenge": 0.09}, 2.0, 0.005) is None
    assert "BLOCK" in (
        promotion_verdict(base, {"block": 0.03, "challenge": 0.05}, 2.0, 0.005) or ""
    )
    held = promotion_verdict(base, {"block": 0.01, "challenge": 0.02}, 2.0, 0.005)
    assert held is not None and held.startswith("CHALLENGE+")
    # 0 -> 0.004 is below the floor on both sides: no change.
    assert (
        promotion_verdict(
            {"block": 0, "challenge": 0}, {"block": 0.004, "challenge": 0}, 2.0, 0.005
        )
        is None
    )


def test_validation_rejects_insane_candidates(bundles: dict[str, Path]) -> None:
    b = ModelBundle.from_bytes(bundles["normal"].read_bytes())
    cfg = Settings().lifecycle
    assert validate_candidate(b, cfg) == []
    rows = {**b.metrics["rows"], "validation": 10_000}
    bad_rate = replace(b, metrics={**b.metrics, "heldout_anomaly_rate": 0.4, "rows": rows})
    assert "held-out anomaly rate" in validate_candidate(bad_rate, cfg)[0]
    q = dict(b.metrics["score_quantiles"], **{"0.99": float("nan")})
    assert (
        "not finite"
        in validate_candidate(replace(b, metrics={**b.metrics, "score_quantiles": q}), cfg)[0]
    )


# --- store additions -------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["pg", "sqlite"])
async def test_store_drift_checks_job_slots_and_locks(
    dialect: str, pg_dsn: str, tmp_path: Path
) -> None:
    url = pg_dsn if dialect == "pg" else f"sqlite:///{tmp_path}/s.db"
    s = Settings.model_validate({"database": {"url": url}})
    a = await open_store(s.database)
    b = await open_store(s.database) if dialect == "pg" else a
    try:
        for i in range(5):
            await a.insert_drift_check(
                T0 + timedelta(hours=i), 3, {"driftScore": i / 10, "sampleSize": i}, keep=3
            )
        checks = await a.list_drift_checks(10)
        assert [c["drift_score"] for c in checks] == [0.4, 0.3, 0.2]
        assert (
            checks[0]["checked_at"] == T0 + timedelta(hours=4)
            and checks[0]["report"]["sampleSize"] == 4
        )
        assert await a.job_slot("drift") is None
        await a.record_job_run("drift", T0, ran_at=T0, status="ok", details={})
        await a.record_job_run("drift", T0 - timedelta(hours=1), ran_at=T0, status="ok", details={})
        assert await b.job_slot("drift") == T0  # never moves back
        assert await a.try_lock("train") and not await b.try_lock("train")
        await a.unlock("train")
        assert await b.try_lock("train")
        await b.unlock("train")
    finally:
        await a.close()
        if b is not a:
            await b.close()


# --- training jobs ---------------------------------------------------------------------------


async def test_insufficient_data_message_and_counts(replica: Replica) -> None:
    s = replica.lc.settings.model_copy(update={"model": ModelSettings()})  # 1,000 needed
    replica.lc.settings = s
    await replica.store.insert_predictions(records(normal_rows(7, 2), T0, timedelta(days=1)))
    blocked = records(normal_rows(3, 3), T0, timedelta(days=1))
    for r in blocked:
        r.decision = "BLOCK"
    old = records(normal_rows(4, 4), T0 - timedelta(days=31), timedelta(days=1))
    await replica.store.insert_predictions(blocked + old)
    with pytest.raises(InsufficientData) as err:
        await replica.lc.request_training(reason="manual", by="admin", force=False)
    assert str(err.value) == "insufficient training data: 7 of 1000 samples"
    assert (err.value.have, err.value.need) == (7, 1000)
    st = replica.lc.status()
    assert st["samples"] == {"have": 7, "need": 1000} and st["mode"] == "learning"
    assert not st["isRetraining"] and st["currentJob"] is None


async def test_failed_retrain_leaves_active_model_untouched(
    pg_dsn: str, bundles: dict[str, Path]
) -> None:
    r = await Replica.open(settings(pg_dsn), Clock(T0), fake(bundles, "fail"))
    try:
        v = await activate(r, bundles["normal"])
        await r.store.insert_predictions(records(normal_rows(320, 5), T0, timedelta(hours=2)))
        job = await r.lc.request_training(reason="manual", by="admin", force=False)
        assert job["state"] == "sampling" and job["reason"] == "manual"
        assert r.lc.status()["isRetraining"] is True
        done = await r.lc.wait_job()
        assert done is not None and done["state"] == "failed"
        assert "exited with 1" in done["error"] and "trainer blew up" in done["error"]
        st = r.lc.status()
        assert st["lastError"] == done["error"] and st["lastDurationSeconds"] > 0
        assert await r.store.registry.active_version_number() == v and r.holder.version == v
        assert [m.version for m in await r.store.registry.list_versions()] == [v]
        assert await r.store.try_lock("train")  # released
        await r.store.unlock("train")
    finally:
        await r.close()


async def test_job_running_here_and_on_another_replica(
    pg_dsn: str, bundles: dict[str, Path]
) -> None:
    a = await Replica.open(settings(pg_dsn), Clock(T0), fake(bundles, "hang"))
    b = await Replica.open(settings(pg_dsn), Clock(T0), fake(bundles, "hang"))
    try:
        await a.store.insert_predictions(records(normal_rows(320, 6), T0, timedelta(hours=2)))
        job = await a.lc.request_training(reason="manual", by="admin", force=True)
        with pytest.raises(JobRunning) as here:
            await a.lc.request_training(reason="manual", by="admin", force=True)
        assert here.value.job["jobId"] == job["jobId"]
        with pytest.raises(JobRunning) as there:
            await b.lc.request_training(reason="manual", by="admin", force=True)
        assert there.value.job["state"] == "running"
        await asyncio.sleep(0.5)  # the hanging child is running
        await a.lc.close()  # shutdown kills the child and releases the lock
        assert a.lc.last_job is not None and a.lc.last_job.state == "failed"
        assert await b.store.try_lock("train")
        await b.store.unlock("train")
    finally:
        await a.close()
        await b.close()


async def test_safe_promotion_holds_a_candidate_and_force_overrides(
    pg_dsn: str, bundles: dict[str, Path]
) -> None:
    r = await Replica.open(settings(pg_dsn), Clock(T0), fake(bundles, "copy", "shifted"))
    try:
        v1 = await activate(r, bundles["normal"])
        await r.store.insert_predictions(records(normal_rows(400, 7), T0, timedelta(hours=3)))
        await r.lc.request_training(reason="manual", by="admin", force=False)
        done = await r.lc.wait_job()
        assert done is not None and done["state"] == "held", done
        p = done["promotion"]
        assert p["checked"] and p["held"] and p["samples"] == 400
        assert p["candidate"]["challenge"] > 2 * max(p["active"]["challenge"], 0.005)
        assert "rate would change" in p["reason"]
        held = await r.store.registry.get_version(done["version"], with_bundle=False)
        assert held is not None and held.status == "candidate"
        assert await r.store.registry.active_version_number() == v1
        await r.lc.request_training(reason="manual", by="admin", force=True)
        forced = await r.lc.wait_job()
        assert forced is not None and forced["state"] == "succeeded"
        assert (
            await r.store.registry.active_version_number() == forced["version"] == r.holder.version
        )
    finally:
        await r.close()


# --- scheduler with a controllable clock -----------------------------------------------------


async def test_scheduler_slots_catch_up_once_and_one_replica_per_slot(
    pg_dsn: str, bundles: dict[str, Path]
) -> None:
    clock = Clock(T0)
    s = settings(pg_dsn, promotion={"enabled": False})
    a = await Replica.open(s, clock, fake(bundles, "copy"))
    b = await Replica.open(s, clock, fake(bundles, "copy"))
    try:
        v1 = await activate(a, bundles["normal"])
        await b.holder.refresh()
        await a.store.insert_predictions(records(normal_rows(400, 8), T0, timedelta(minutes=50)))
        assert await a.lc.run_due_jobs() == ["drift"]  # first daily/retention slots: recorded only
        assert await b.lc.run_due_jobs() == []  # same hour: already done by a
        clock.now = T0 + timedelta(minutes=30)
        assert await a.lc.run_due_jobs() == []
        clock.now = T0 + timedelta(hours=1, minutes=1)
        assert await b.lc.run_due_jobs() == ["drift"]
        assert await a.lc.run_due_jobs() == []
        # Both down for three days: one catch-up per job, not one per missed slot.
        clock.now = T0 + timedelta(days=3, minutes=5)
        ran = await a.lc.run_due_jobs()
        assert ran == ["drift", "daily_retrain", "retention"]
        assert await b.lc.run_due_jobs() == [] and await a.lc.run_due_jobs() == []
        done = await a.lc.wait_job()
        assert done is not None and done["reason"] == "daily" and done["state"] == "succeeded"
        assert await a.store.registry.active_version_number() == done["version"] != v1
        checks = await a.store.list_drift_checks(10)
        assert len(checks) == 3
        assert await a.store.job_slot("daily_retrain") == datetime(2026, 3, 13, tzinfo=UTC)
        # b follows the new version through the registry watch.
        for _ in range(50):
            if b.holder.version == done["version"]:
                break
            await asyncio.sleep(0.1)
        assert b.holder.version == done["version"]
    finally:
        await a.close()
        await b.close()


async def test_drift_check_stores_reports_and_triggers_retrain(
    replica: Replica, bundles: dict[str, Path]
) -> None:
    r = replica
    r.lc.trainer = fake(bundles, "copy", "shifted")
    v1 = await activate(r, bundles["normal"])
    now = T0
    assert (await r.lc.drift_status())["latest"] is None
    await r.store.insert_predictions(records(normal_rows(300, 9), now, timedelta(minutes=50)))
    calm = await r.lc.check_drift(now)
    assert calm is not None and not calm["isDrifting"] and calm["sampleSize"] == 300
    assert r.lc.job is None
    now += timedelta(hours=1)
    await r.store.insert_predictions(records(normal_rows(300, 10, 4.0), now, timedelta(minutes=50)))
    report = await r.lc.check_drift(now)
    assert report is not None and report["isDrifting"] and report["driftScore"] > 0.15
    assert report["distributionDrift"] == 1.0 and report["modelVersion"] == v1
    assert r.lc.status()["driftMetrics"] == {"isDrifting": True, "driftScore": report["driftScore"]}
    done = await r.lc.wait_job()
    assert done is not None and done["reason"] == "drift" and done["state"] == "succeeded"
    assert r.holder.version == done["version"] != v1
    status = await r.lc.drift_status()
    assert [c["isDrifting"] for c in status["checks"]] == [True, False]
    assert status["latest"]["driftScore"] == report["driftScore"]


async def test_learning_mode_trains_once_enough_samples(
    replica: Replica, bundles: dict[str, Path]
) -> None:
    r = replica
    r.lc.trainer = fake(bundles, "copy")
    await r.store.insert_predictions(records(normal_rows(299, 11), T0, timedelta(days=2)))
    assert await r.lc.run_due_jobs() == [] and r.lc.status()["samples"]["have"] == 299
    await r.store.insert_predictions(records(normal_rows(1, 12), T0, timedelta(hours=1)))
    assert await r.lc.run_due_jobs() == []  # the next learning check is not due yet
    r.lc.clock.now = T0 + timedelta(seconds=61)  # type: ignore[attr-defined]
    assert await r.lc.run_due_jobs() == ["learning"]
    done = await r.lc.wait_job()
    assert done is not None and done["state"] == "succeeded" and done["samples"] == 300
    assert r.lc.status()["mode"] == "enforce" and r.holder.version == done["version"]


# --- two gateway processes -------------------------------------------------------------------


def start_gateway(
    upstream: int, port: int, data_dir: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    full = {
        **os.environ,
        "BEHAVIORGATE_LOGGING__ACCESS_LOG": "false",
        "BEHAVIORGATE_WRITER__SPOOL_PATH": f"{data_dir}/spool.{port}",
        "BEHAVIORGATE_WRITER__FLUSH_INTERVAL": "0.05",
        **env,
    }
    return subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--upstream",
            f"http://127.0.0.1:{upstream}",
            "--port",
            str(port),
            "--mode",
            "shadow",
        ],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await predicate()
        if got:
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_two_gateways_learn_drift_retrain_and_follow(
    aiohttp_server,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    pg_dsn: str,  # noqa: ANN001
) -> None:
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-BehaviorGate-Prediction-Id", ""))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    up = await aiohttp_server(app)
    env = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": pg_dsn,
        "BEHAVIORGATE_HISTORY__KEY_PREFIX": redis_prefix,
        "BEHAVIORGATE_DATABASE__REGISTRY_POLL_INTERVAL": "1",
        "BEHAVIORGATE_MODEL__TRAINING__MIN_SAMPLES": "300",
        "BEHAVIORGATE_MODEL__ISOLATION_FOREST__N_TREES": "20",
        "BEHAVIORGATE_MODEL__ISOLATION_FOREST__SAMPLE_SIZE": "64",
        "BEHAVIORGATE_MODEL__AUTOENCODER__EPOCHS": "3",
        "BEHAVIORGATE_MODEL__AUTOENCODER__ENCODING_DIM": "4",
        "BEHAVIORGATE_LIFECYCLE__LEARNING_CHECK_INTERVAL_S": "0.3",
        "BEHAVIORGATE_LIFECYCLE__SCHEDULER_TICK_S": "0.3",
        "BEHAVIORGATE_LIFECYCLE__DRIFT_CHECK_INTERVAL_S": "1",
        "BEHAVIORGATE_LIFECYCLE__DRIFT_WINDOW_S": "600",
        "BEHAVIORGATE_LIFECYCLE__DAILY_RETRAIN": "false",
        "BEHAVIORGATE_LIFECYCLE__PROMOTION__ENABLED": "false",
    }
    ports = [free_port(), free_port()]
    procs = [start_gateway(up.port, p, tmp_path, env) for p in ports]
    store = await open_store(Settings.model_validate({"database": {"url": pg_dsn}}).database)
    try:
        loop = asyncio.get_running_loop()
        for p in ports:
            await loop.run_in_executor(None, wait_port, p, 30.0)
        reg = store.registry
        now = datetime.now(UTC)
        await store.insert_predictions(records(normal_rows(400, 20), now, timedelta(minutes=5)))

        async def versions() -> list:
            return [v for v in await reg.list_versions() if v.status == "active"]

        first = (await wait_for(versions, 60, "the first model"))[0]
        pids = {proc.pid for proc in procs}
        assert len(await reg.list_versions()) == 1  # exactly one replica trained
        assert first.activated_by == "lifecycle" and first.sample_count == 400
        assert int(first.metrics["lifecycle"]["replica"].rsplit(":", 1)[1]) in pids
        assert first.metrics["lifecycle"]["reason"] == "learning"

        now = datetime.now(UTC)
        await store.insert_predictions(
            records(normal_rows(400, 21, 4.0), now, timedelta(minutes=2))
        )

        async def second() -> object:
            v = await reg.active_version()
            return v if v is not None and v.version != first.version else None

        v2 = await wait_for(second, 60, "the drift retrain")
        assert v2.metrics["lifecycle"]["reason"] == "drift" and v2.sample_count == 800
        assert int(v2.metrics["lifecycle"]["replica"].rsplit(":", 1)[1]) in pids
        checks = await store.list_drift_checks(100)
        assert any(c["is_drifting"] and c["model_version"] == first.version for c in checks)

        # Both gateways score with the new version.
        for p in ports:

            async def scored_by_v2(p: int = p) -> bool:
                async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{p}/probe") as r:
                    assert r.status == 200
                pid = seen[-1]
                await asyncio.sleep(0.2)
                rec = await store.get_prediction(pid)
                return rec is not None and rec.model_version == v2.version

            await wait_for(scored_by_v2, 20, f"gateway {p} on version {v2.version}")
        assert len(await reg.list_versions()) == 2
    finally:
        await store.close()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20)
            err = proc.stderr.read().decode() if proc.stderr else ""
            assert code == 0 and "Traceback" not in err, err[-2000:]


def test_trainer_runs_at_idle_priority_by_default():
    import shutil as _shutil

    from config.lifecycle import LifecycleSettings as _LS
    from proxy.lifecycle import trainer_command, trainer_environment

    base = ["python", "-m", "scoring.training", "in.npz", "out.bundle"]
    cmd = trainer_command(base, _LS())
    assert cmd[-len(base) :] == base
    if _shutil.which("chrt"):
        assert cmd[:3] == ["chrt", "--idle", "0"]
    assert "nice" in cmd
    assert trainer_command(base, _LS(trainer_idle_priority=False, trainer_nice=0)) == base
    assert trainer_environment(_LS(trainer_threads=2))["OMP_NUM_THREADS"] == "2"
