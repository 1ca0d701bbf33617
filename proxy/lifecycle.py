"""Model lifecycle: learning mode, training in a child process, drift checks, scheduled jobs.

One :class:`Lifecycle` lives in every gateway replica. Cluster-wide exclusion comes from the store:

* a training job holds the lock ``train`` (a Postgres session advisory lock on a dedicated
  connection; process-local on embedded SQLite) from request to end, so at most one job runs
  across all replicas; a job started for a reason that no longer holds once it has the lock
  (learning but a model is active, drift measured against a version since replaced) is skipped;
* a scheduled job (drift check, daily retrain, retention) runs for a *slot* - the start of its
  hour, day or interval. A replica runs it only while holding the lock ``job:<name>`` and only if
  the ``job_runs`` row says that slot has not run yet, then records the slot. Slots missed while
  every replica was down collapse into the current one: after a restart a job runs at most once
  to catch up. The daily retrain does not run on a fresh install's first day (its first slot is
  recorded, not run).

Training never runs in the gateway process: the sample goes to a temporary ``.npz`` (in a
thread), ``python -m scoring.training`` runs niced with one BLAS thread, and the bundle it writes
is checked (held-out anomaly rate near the contamination, sane score quantiles), saved as a
candidate, compared in shadow with the active model on recent traffic (safe promotion) and then
activated; every replica follows the registry's active version.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import structlog
from aiohttp import web

from config.lifecycle import LifecycleSettings
from config.model import ThresholdSettings
from config.settings import Settings
from proxy.models import ActiveModel, ModelHolder
from scoring.bundle import BundleError, ModelBundle
from scoring.drift import compute_drift
from scoring.ensemble import Scorer
from scoring.features import FEATURE_NAMES, FEATURE_SET_VERSION
from storage.store import Store, StoreUnavailable

__all__ = [
    "LIFECYCLE",
    "InsufficientData",
    "JobRunning",
    "Lifecycle",
    "TrainingFailed",
    "daily_slot",
    "interval_slot",
    "lifecycle_ctx",
    "validate_candidate",
]

log = structlog.get_logger("behaviorgate.lifecycle")

TRAIN_LOCK = "train"
TRAINER = (sys.executable, "-m", "scoring.training")
_RUNNING = ("sampling", "training", "validating", "promoting")
_ANY: Literal["any"] = "any"
Clock = Callable[[], datetime]


class InsufficientData(Exception):  # noqa: N818 - the API contract names it so
    """Fewer learnable vectors in the training window than ``training.min_samples``."""

    def __init__(self, have: int, need: int) -> None:
        super().__init__(f"insufficient training data: {have} of {need} samples")
        self.have, self.need = have, need


class JobRunning(Exception):  # noqa: N818 - the API contract names it so
    """A training job is already running (here or on another replica)."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__("a training job is already running")
        self.job = job


class TrainingFailed(Exception):
    """The trainer process or the candidate's validation failed."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat()


@dataclass
class Job:
    """One training job as reported by the API."""

    reason: str
    by: str
    force: bool
    started_at: datetime
    job_id: str = field(default_factory=lambda: secrets.token_hex(6))
    state: str = "sampling"
    replica: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    finished_at: datetime | None = None
    duration_s: float | None = None
    samples: int | None = None
    version: int | None = None
    error: str | None = None
    promotion: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.state in _RUNNING

    def to_json(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "state": self.state,
            "reason": self.reason,
            "requestedBy": self.by,
            "force": self.force,
            "replica": self.replica,
            "startedAt": _iso(self.started_at),
            "finishedAt": _iso(self.finished_at),
            "durationSeconds": self.duration_s,
            "samples": self.samples,
            "version": self.version,
            "error": self.error,
            "promotion": self.promotion,
        }


# --- slots -----------------------------------------------------------------------------------


def interval_slot(now: datetime, seconds: float) -> datetime:
    """Start of the ``seconds``-long interval (counted from the epoch) containing ``now``."""
    ts = now.timestamp()
    return datetime.fromtimestamp(math.floor(ts / seconds) * seconds, UTC)


def daily_slot(now: datetime, at: str, tz: str) -> datetime:
    """The latest local ``at`` (HH:MM in zone ``tz``) not after ``now``, in UTC."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    hour, minute = (int(p) for p in at.split(":"))
    slot = datetime(local.year, local.month, local.day, hour, minute, tzinfo=zone)
    if slot > local:
        day = local.date() - timedelta(days=1)
        slot = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    return slot.astimezone(UTC)


# --- candidate checks (pure numpy; called in a thread) ----------------------------------------


def validate_candidate(bundle: ModelBundle, settings: LifecycleSettings) -> list[str]:
    """Problems that make a freshly trained bundle unfit to save (empty list: fit).

    The held-out anomaly rate (share of validation rows at or above the monitor threshold)
    should be near the contamination the calibration was anchored at: within a factor, or
    within 4 binomial standard errors (small validation sets are noisy).
    """
    m = bundle.metrics
    problems: list[str] = []
    c = bundle.settings.isolation_forest.contamination
    rate = float(m.get("heldout_anomaly_rate", float("nan")))
    n_val = int(m.get("rows", {}).get("validation", 0))
    f = settings.validation.heldout_rate_factor
    slack = 4.0 * math.sqrt(c * (1 - c) / max(n_val, 1))
    if not math.isfinite(rate) or not (c / f <= rate <= c * f or abs(rate - c) <= slack):
        problems.append(f"held-out anomaly rate {rate:.4f} far from contamination {c:.4f}")
    quants = [float(v) for _, v in sorted(m.get("score_quantiles", {}).items())]
    if not quants or not all(math.isfinite(q) and 0.0 <= q <= 1.0 for q in quants):
        problems.append(f"score quantiles not finite in [0, 1]: {quants}")
    elif any(b < a for a, b in zip(quants, quants[1:], strict=False)):
        problems.append(f"score quantiles not increasing: {quants}")
    elif quants[0] >= bundle.settings.thresholds.monitor:
        problems.append(f"median training score {quants[0]:.3f} is already anomalous")
    return problems


def shadow_rates(scorer: Scorer, X: np.ndarray, t: ThresholdSettings) -> dict[str, float]:
    """BLOCK and CHALLENGE-or-worse rates of ``scorer`` on rows ``X``."""
    comp = scorer.score_batch(X).composite
    return {
        "block": float(np.mean(comp >= t.block)),
        "challenge": float(np.mean(comp >= t.challenge)),
    }


def promotion_verdict(
    active: dict[str, float], candidate: dict[str, float], factor: float, floor: float
) -> str | None:
    """Why a candidate must stay a candidate (None: it may be activated)."""
    for name in ("block", "challenge"):
        old, new = max(active[name], floor), max(candidate[name], floor)
        ratio = new / old
        if ratio > factor or ratio < 1.0 / factor:
            label = "BLOCK" if name == "block" else "CHALLENGE+"
            return (
                f"{label} rate would change from {active[name]:.4f} to {candidate[name]:.4f} "
                f"(x{ratio:.2f}, limit x{factor:g})"
            )
    return None


def _drift_report(
    active: ActiveModel, X: np.ndarray, settings: Settings, history: Sequence[float]
) -> dict[str, Any]:
    scores = active.scorer.score_batch(X).composite if len(X) else np.zeros(0)
    b = active.bundle
    report = compute_drift(
        b.reference, b.feature_names, X, scores, settings.model.drift, history=history
    )
    return report.to_json()


def _write_inputs(directory: str, X: np.ndarray, settings: Settings) -> None:
    np.savez(
        os.path.join(directory, "in.npz"),
        X=np.asarray(X, dtype=np.float32),
        feature_names=np.array(FEATURE_NAMES),
        feature_set_version=np.array(FEATURE_SET_VERSION),
    )
    Path(directory, "model.json").write_text(settings.model.model_dump_json(), encoding="utf-8")


def _read_bundle(path: str) -> tuple[bytes, ModelBundle]:
    data = Path(path).read_bytes()
    return data, ModelBundle.from_bytes(data, FEATURE_SET_VERSION)


# --- the lifecycle ---------------------------------------------------------------------------


class Lifecycle:
    """Training jobs, drift checks and the scheduler of one gateway replica."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        models: ModelHolder,
        *,
        clock: Clock | None = None,
        trainer: Sequence[str] = TRAINER,
    ) -> None:
        self.settings = settings
        self.cfg = settings.lifecycle
        self.store = store
        self.models = models
        self.clock = clock or _utcnow
        self.trainer = tuple(trainer)
        self.job: Job | None = None
        self.last_job: Job | None = None
        self.last_error: str | None = None
        self._samples_have = 0
        self._samples_at: float | None = None  # loop time of the last count
        self._last_drift: dict[str, Any] | None = None
        self._job_task: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._next_learning: datetime | None = None

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The lifecycle as the admin API shows it (camelCase)."""
        last = self.last_job
        drift = self._last_drift or {}
        return {
            "isRetraining": self.job is not None and self.job.running,
            "lastRetrainingTime": _iso(last.finished_at) if last else None,
            "lastError": self.last_error,
            "lastDurationSeconds": last.duration_s if last else None,
            "currentJob": self.job.to_json() if self.job and self.job.running else None,
            "lastJob": last.to_json() if last else None,
            "mode": "learning" if self.models.current is None else self.settings.mode,
            "activeVersion": self.models.version,
            "samples": {
                "have": self._samples_have,
                "need": self.settings.model.training.min_samples,
            },
            "driftMetrics": {
                "isDrifting": bool(drift.get("isDrifting", False)),
                "driftScore": drift.get("driftScore"),
            },
        }

    # -- training -----------------------------------------------------------------------------

    async def refresh_samples(self, max_age: float = 60.0) -> None:
        """Recount the learnable vectors for :meth:`status` when the cached count is older than
        ``max_age`` seconds (only learning mode and training jobs count them otherwise)."""
        last = self._samples_at
        if last is not None and asyncio.get_running_loop().time() - last < max_age:
            return
        with contextlib.suppress(StoreUnavailable):
            await self.count_samples()

    async def count_samples(self, now: datetime | None = None) -> int:
        """Learnable vectors in the training window (cached for :meth:`status`)."""
        now = now or self.clock()
        start = now - timedelta(days=self.settings.model.training.window_days)
        self._samples_at = asyncio.get_running_loop().time()
        self._samples_have = await self.store.count_training_samples(
            start, now, feature_set_version=FEATURE_SET_VERSION
        )
        return self._samples_have

    async def request_training(
        self,
        *,
        reason: str,
        by: str,
        force: bool,
        expect_active: int | None | Literal["any"] = _ANY,
    ) -> dict[str, Any]:
        """Start a training job in the background and return it.

        ``force`` activates the candidate even if safe promotion would hold it back (it is
        still validated). ``expect_active`` skips the job if, once it holds the lock, the
        active version is not this one (None: only while no model is active).

        Raises:
            InsufficientData: too few learnable vectors in the window.
            JobRunning: a job runs already, here or on another replica.
        """
        if self.job is not None and self.job.running:
            raise JobRunning(self.job.to_json())
        need = self.settings.model.training.min_samples
        have = await self.count_samples()
        if have < need:
            raise InsufficientData(have, need)
        if not await self.store.try_lock(TRAIN_LOCK):
            if self.job is not None and self.job.running:
                raise JobRunning(self.job.to_json())
            raise JobRunning({"jobId": None, "state": "running", "replica": "another replica"})
        job = Job(reason=reason, by=by, force=force, started_at=self.clock())
        self.job = job
        log.info("training_started", job=job.job_id, reason=reason, by=by, samples=have)
        self._job_task = asyncio.create_task(self._run(job, expect_active), name="bg-train")
        return job.to_json()

    async def wait_job(self) -> dict[str, Any] | None:
        """Wait for the running job (if any) and return how it ended."""
        if self._job_task is not None:
            await asyncio.shield(self._job_task)
        return self.last_job.to_json() if self.last_job else None

    async def _run(self, job: Job, expect_active: int | None | Literal["any"]) -> None:
        t0 = asyncio.get_running_loop().time()
        try:
            await self._train(job, expect_active)
        except asyncio.CancelledError:
            job.state, job.error = "failed", "cancelled (gateway shutting down)"
            raise
        except Exception as exc:  # noqa: BLE001 - any failure leaves the active model as it is
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        finally:
            job.finished_at = self.clock()
            job.duration_s = round(asyncio.get_running_loop().time() - t0, 3)
            await self.store.unlock(TRAIN_LOCK)
            self.last_job = job
            if job.state == "failed":
                self.last_error = job.error
            elif job.state in ("succeeded", "held"):
                self.last_error = None
            log.info(
                "training_finished", **{k: v for k, v in job.to_json().items() if k != "promotion"}
            )

    async def _train(self, job: Job, expect_active: int | None | Literal["any"]) -> None:
        if expect_active != _ANY:
            current = await self.store.registry.active_version_number()
            if current != expect_active:
                job.state, job.error = "skipped", f"active version is now {current}"
                return
        now = self.clock()
        tr = self.settings.model.training
        start = now - timedelta(days=tr.window_days)
        sample = await self.store.training_sample(
            start, now, limit=tr.max_samples, feature_set_version=FEATURE_SET_VERSION
        )
        job.samples = len(sample)
        if len(sample) < tr.min_samples:
            raise InsufficientData(len(sample), tr.min_samples)
        job.state = "training"
        data, bundle = await self._train_in_child(sample.features)
        job.state = "validating"
        problems = validate_candidate(bundle, self.cfg)
        if problems:
            raise TrainingFailed("candidate rejected: " + "; ".join(problems))
        metrics = {
            **bundle.metrics,
            "lifecycle": {"job": job.job_id, "reason": job.reason, "replica": job.replica},
        }
        saved = await self.store.registry.save_version(
            data,
            feature_set_version=bundle.feature_set_version,
            config=self.settings.model.model_dump(mode="json"),
            metrics=metrics,
            window_start=start,
            window_end=now,
            sample_count=len(sample),
        )
        job.version = saved.version
        job.state = "promoting"
        job.promotion = await self._promotion(bundle, job.force, now)
        if job.promotion.get("held"):
            job.state = "held"
            log.warning("candidate_held", version=saved.version, reason=job.promotion["reason"])
            return
        await self.store.registry.activate(saved.version, by="lifecycle")
        self.models.install(saved.version, bundle)
        job.state = "succeeded"

    async def _train_in_child(self, X: np.ndarray) -> tuple[bytes, ModelBundle]:
        workdir = await asyncio.to_thread(tempfile.mkdtemp, prefix="bg-train-")
        try:
            await asyncio.to_thread(_write_inputs, workdir, X, self.settings)
            out = os.path.join(workdir, "out.bundle")
            await self._run_trainer(
                [
                    os.path.join(workdir, "in.npz"),
                    out,
                    "--settings",
                    os.path.join(workdir, "model.json"),
                ]
            )
            try:
                return await asyncio.to_thread(_read_bundle, out)
            except (OSError, BundleError) as exc:
                raise TrainingFailed(f"unusable bundle: {exc}") from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _run_trainer(self, args: list[str]) -> None:
        cmd = trainer_command([*self.trainer, *args], self.cfg)
        env = trainer_environment(self.cfg)
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.cfg.trainer_timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise TrainingFailed(
                f"trainer timed out after {self.cfg.trainer_timeout_s:g} s"
            ) from exc
        if proc.returncode == 3:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                info = orjson.loads(out.strip().splitlines()[-1])
                raise InsufficientData(int(info["have"]), int(info["need"]))
        if proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise TrainingFailed(f"trainer exited with {proc.returncode}: {' | '.join(tail)}")

    async def _promotion(self, bundle: ModelBundle, force: bool, now: datetime) -> dict[str, Any]:
        p = self.cfg.promotion
        active = self.models.current
        if active is None or not p.enabled or force:
            why = "no active model" if active is None else "forced" if force else "disabled"
            return {"checked": False, "held": False, "reason": why}
        sample = await self.store.window_features(
            now - timedelta(hours=p.window_hours),
            now,
            limit=p.shadow_sample_size,
            feature_set_version=FEATURE_SET_VERSION,
        )
        if len(sample) < p.min_samples:
            return {
                "checked": False,
                "held": False,
                "reason": f"only {len(sample)} recent vectors (need {p.min_samples})",
            }
        t = self.settings.model.thresholds
        X = sample.features
        old = await asyncio.to_thread(shadow_rates, active.scorer, X, t)
        new = await asyncio.to_thread(shadow_rates, Scorer(bundle, t), X, t)
        reason = promotion_verdict(old, new, p.max_rate_factor, p.rate_floor)
        return {
            "checked": True,
            "held": reason is not None,
            "reason": reason,
            "samples": len(sample),
            "active": old,
            "candidate": new,
            "activeVersion": active.version,
        }

    # -- drift --------------------------------------------------------------------------------

    async def check_drift(self, now: datetime | None = None) -> dict[str, Any] | None:
        """Compare the recent window with the active model's reference; store the check.

        Returns the stored report, or None in learning mode. A drifting report starts a retrain.
        """
        active = self.models.current
        if active is None:
            return None
        now = now or self.clock()
        sample = await self.store.window_features(
            now - timedelta(seconds=self.cfg.drift_window_s),
            now,
            limit=self.cfg.drift_sample_limit,
            feature_set_version=FEATURE_SET_VERSION,
        )
        window = self.settings.model.drift.trend_window
        earlier = await self.store.list_drift_checks(window)
        history = [
            c["drift_score"] for c in reversed(earlier) if c["model_version"] == active.version
        ]
        report = await asyncio.to_thread(
            _drift_report, active, sample.features, self.settings, history
        )
        report = {**report, "checkedAt": _iso(now), "modelVersion": active.version}
        await self.store.insert_drift_check(
            now, active.version, report, keep=self.cfg.drift_history
        )
        self._last_drift = report
        log.info(
            "drift_checked",
            score=report["driftScore"],
            drifting=report["isDrifting"],
            samples=report["sampleSize"],
            version=active.version,
        )
        if report["isDrifting"] and self.cfg.auto_train:
            with contextlib.suppress(InsufficientData, JobRunning):
                await self.request_training(
                    reason="drift", by="lifecycle", force=False, expect_active=active.version
                )
        return report

    async def drift_status(self) -> dict[str, Any]:
        """The latest stored check in full, a summary of recent ones, and their trend."""
        checks = await self.store.list_drift_checks(max(self.settings.model.drift.trend_window, 24))
        latest = checks[0]["report"] if checks else None
        return {
            "latest": latest,
            "trend": latest.get("trend", "stable") if latest else "stable",
            "threshold": self.settings.model.drift.threshold,
            "checks": [
                {
                    "checkedAt": _iso(c["checked_at"]),
                    "modelVersion": c["model_version"],
                    "driftScore": c["drift_score"],
                    "isDrifting": c["is_drifting"],
                    "sampleSize": c["sample_size"],
                }
                for c in checks
            ],
        }

    # -- scheduler ----------------------------------------------------------------------------

    async def run_due_jobs(self, now: datetime | None = None) -> list[str]:
        """Run whatever is due at ``now``; returns the names of the jobs this replica ran."""
        now = now or self.clock()
        ran: list[str] = []
        if self.models.current is None:
            if self.cfg.auto_train and (self._next_learning is None or now >= self._next_learning):
                self._next_learning = now + timedelta(seconds=self.cfg.learning_check_interval_s)
                if await self._learning_check(now):
                    ran.append("learning")
        else:
            slot = interval_slot(now, self.cfg.drift_check_interval_s)
            if await self._slot_job("drift", slot, now, self._drift_job, run_first=True):
                ran.append("drift")
            if self.cfg.daily_retrain:
                slot = daily_slot(now, self.cfg.daily_retrain_at, self.cfg.timezone)
                if await self._slot_job(
                    "daily_retrain", slot, now, self._daily_job, run_first=False
                ):
                    ran.append("daily_retrain")
        slot = interval_slot(now, self.settings.retention.interval_hours * 3600.0)
        if await self._slot_job("retention", slot, now, self._retention_job, run_first=False):
            ran.append("retention")
        return ran

    async def _learning_check(self, now: datetime) -> bool:
        have = await self.count_samples(now)
        if have < self.settings.model.training.min_samples:
            return False
        try:
            await self.request_training(
                reason="learning", by="lifecycle", force=False, expect_active=None
            )
        except (InsufficientData, JobRunning):
            return False
        return True

    async def _slot_job(
        self,
        name: str,
        slot: datetime,
        now: datetime,
        run: Callable[[datetime], Any],
        *,
        run_first: bool,
    ) -> bool:
        last = await self.store.job_slot(name)
        if last is not None and last >= slot:
            return False
        if not await self.store.try_lock(f"job:{name}"):
            return False
        try:
            last = await self.store.job_slot(name)  # again, under the lock
            if last is not None and last >= slot:
                return False
            if last is None and not run_first:
                await self.store.record_job_run(
                    name, slot, ran_at=now, status="initialised", details={}
                )
                return False
            status, details = "ok", {}
            try:
                details = await run(now) or {}
            except Exception as exc:  # noqa: BLE001 - a failed run is recorded; the next slot retries
                status, details = "error", {"error": f"{type(exc).__name__}: {exc}"[:500]}
                log.error("job_failed", job=name, error=details["error"])
            await self.store.record_job_run(name, slot, ran_at=now, status=status, details=details)
            return True
        finally:
            await self.store.unlock(f"job:{name}")

    async def _drift_job(self, now: datetime) -> dict[str, Any]:
        if await self.store.registry.active_version_number() != self.models.version:
            await self.models.refresh()  # another replica activated a version: measure that one
        report = await self.check_drift(now)
        return {} if report is None else {"driftScore": report["driftScore"]}

    async def _daily_job(self, _now: datetime) -> dict[str, Any]:
        try:
            job = await self.request_training(reason="daily", by="scheduler", force=False)
        except InsufficientData as exc:
            return {"skipped": str(exc)}
        except JobRunning:
            return {"skipped": "a job was running"}
        return {"jobId": job["jobId"]}

    async def _retention_job(self, now: datetime) -> dict[str, Any]:
        r = self.settings.retention
        result = await self.store.apply_retention(r.days, now=now, batch=r.delete_batch)
        return {
            "droppedPartitions": len(result.dropped_partitions),
            "deletedPredictions": result.deleted_predictions,
        }

    async def start(self) -> None:
        """Start the scheduler loop (a background task)."""
        self._loop_task = asyncio.create_task(self._loop(), name="bg-lifecycle")

    async def close(self) -> None:
        """Stop the scheduler; a running training job is cancelled (its child is killed)."""
        for task in (self._loop_task, self._job_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_due_jobs()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep scheduling through outages
                log.warning("lifecycle_tick_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            wait = self.cfg.scheduler_tick_s
            if self.models.current is None:
                wait = min(wait, self.cfg.learning_check_interval_s)
            await asyncio.sleep(wait)


def trainer_command(base: list[str], cfg: LifecycleSettings) -> list[str]:
    """The trainer's command line with its CPU priority: idle class and/or niceness."""
    cmd = list(base)
    if cfg.trainer_nice and shutil.which("nice"):
        cmd = ["nice", "-n", str(cfg.trainer_nice), *cmd]
    if cfg.trainer_idle_priority and sys.platform == "linux" and shutil.which("chrt"):
        cmd = ["chrt", "--idle", "0", *cmd]
    return cmd


def trainer_environment(cfg: LifecycleSettings) -> dict[str, str]:
    threads = str(cfg.trainer_threads)
    return {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
    }


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)


async def lifecycle_ctx(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: build the Lifecycle, run its scheduler, stop it on shutdown."""
    from proxy.app import MODELS, SETTINGS, STORE  # late: proxy.app imports this module

    lifecycle = Lifecycle(app[SETTINGS], app[STORE], app[MODELS])
    app[LIFECYCLE] = lifecycle
    await lifecycle.start()
    yield
    await lifecycle.close()
