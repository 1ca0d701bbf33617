"""``import-log`` and ``replay``: learn from an existing access log and score it offline.

Both commands feed the log's requests, in time order, through the gateway's own pieces: the
path policy (route template, sensitivity, strict/exempt), the Redis history store (embedded, or
a given Redis for ``import-log``), ``scoring.features.extract`` and — for ``replay`` — the
ensemble scorer and the decision ladder. Each request is therefore scored against exactly the
history the gateway would have held just before it, and its outcome is recorded afterwards just
as the gateway records it (status and size from the log, the decision and composite score).

Differences from live, by necessity: a log carries no request size (0) nor upstream latency (0);
replay acts like ``mode: shadow`` (a BLOCK does not revoke the session, the log's later requests
still happened); exempt paths and paths the gateway would refuse are reported, not scored.
Identity is the log's user field, else the anonymous pseudo-session of client IP + user agent,
split into sessions on inactivity gaps (:mod:`proxy.accesslog`).

Training runs in-process (these are offline commands, not the serving process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from config.history import HistorySettings
from config.model import ModelSettings, ThresholdSettings
from config.policy import PolicySettings
from proxy.accesslog import DEFAULT_GAP_S, LogRecord, ParseStats, Sessionizer, SessionRef, read_logs
from proxy.paths import PathMatch, PathPolicy
from scoring.bundle import ModelBundle
from scoring.context import EventOutcome, RequestContext
from scoring.decision import Decision, decide
from scoring.ensemble import Scorer, ScoreResult
from scoring.explain import explain
from scoring.features import FEATURE_NAMES, FEATURE_SET_VERSION, extract
from storage.history import HistoryStore
from storage.redis_conn import create_redis

__all__ = (
    "OfflinePass",
    "ReplayLine",
    "ReplayReport",
    "SessionSummary",
    "add_offline_parsers",
    "import_log",
    "replay",
    "run_import_log",
    "run_replay",
)

EXEMPT = "EXEMPT"
REJECTED = "REJECTED"
_CHALLENGE_UP = frozenset({"CHALLENGE", "REQUIRE_2FA", "BLOCK"})
_ORDER = ("ALLOW", "MONITOR", "CHALLENGE", "REQUIRE_2FA", "BLOCK", EXEMPT, REJECTED)


@dataclass(frozen=True, slots=True)
class OfflineSettings:
    """The parts of the gateway's settings an offline pass needs."""

    history: HistorySettings = field(default_factory=HistorySettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    gap_s: float = DEFAULT_GAP_S

    @classmethod
    def from_settings(cls, settings: Any, *, gap_s: float = DEFAULT_GAP_S) -> OfflineSettings:
        """Take the sections from a gateway ``Settings`` object where it has them."""
        return cls(
            history=getattr(settings, "history", None) or HistorySettings(),
            policy=getattr(settings, "policy", None) or PolicySettings(),
            model=getattr(settings, "model", None) or ModelSettings(),
            gap_s=gap_s,
        )


@dataclass(frozen=True, slots=True)
class ReplayLine:
    """One log line as the gateway would have seen it."""

    record: LogRecord
    session: SessionRef
    route: str
    decision: str
    vector: np.ndarray | None
    result: ScoreResult | None


def _thresholds(base: ThresholdSettings, match: PathMatch) -> ThresholdSettings:
    """The global ladder with the matched rule's overrides applied."""
    override = match.rule.thresholds if match.rule is not None else None
    if override is None:
        return base
    changes = {k: v for k, v in override.model_dump().items() if v is not None}
    return ThresholdSettings.model_validate(base.model_dump() | changes)


class OfflinePass:
    """Feeds records through history → features (→ scores), one at a time, in time order."""

    def __init__(
        self, store: HistoryStore, settings: OfflineSettings, scorer: Scorer | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.scorer = scorer
        self.policy = PathPolicy(settings.policy)
        self.sessions = Sessionizer(settings.gap_s)
        self._tz = settings.history.timezone
        self._ladder = scorer.thresholds if scorer is not None else settings.model.thresholds

    def context(self, record: LogRecord, ref: SessionRef, match: PathMatch) -> RequestContext:
        """The request context the gateway would have built for this line."""
        return RequestContext(
            ts=record.ts,
            method=record.method,
            path=match.normalized,
            route=match.route,
            user_id=ref.user_id,
            session_id=ref.session_id,
            client_ip=record.client_ip,
            user_agent=record.user_agent or "",
            request_bytes=0,
            sensitivity=match.sensitivity,
            authenticated=ref.user_id is not None,
        )

    async def step(self, record: LogRecord) -> ReplayLine:
        """Score (or just featurise) one record against the history before it, then record it."""
        ref = self.sessions.assign(record)
        match = self.policy.match(record.method, record.target)
        if match.rejected is not None or match.exempt:
            label = REJECTED if match.rejected is not None else EXEMPT
            return ReplayLine(record, ref, match.route, label, None, None)
        ctx = self.context(record, ref, match)
        snapshot = await self.store.read(ctx)
        vector = extract(snapshot, ctx, record.ts, self._tz)
        result, decision = None, Decision.LEARNING.value
        if self.scorer is not None:
            result = self.scorer.score(vector)
            ladder = _thresholds(self._ladder, match)
            decision = decide(result.composite, ladder, strict=match.strict).value
        score = result.composite if result is not None else 0.0
        await self.store.record(ctx, EventOutcome(record.status, record.size, 0.0, decision, score))
        return ReplayLine(record, ref, match.route, decision, vector, result)


def _store(redis_url: str | None, history: HistorySettings) -> HistoryStore:
    return HistoryStore(create_redis(redis_url), history)


async def _close_store(store: HistoryStore, *, drop_prefix: str | None = None) -> None:
    await store.drain()
    redis = store._redis  # noqa: SLF001 - the store owns the client we gave it
    if drop_prefix is not None:
        async for key in redis.scan_iter(match=drop_prefix + "*", count=1000):
            await redis.delete(key)
    await redis.aclose()


def _scratch(settings: OfflineSettings) -> OfflineSettings:
    """The same settings under a fresh key prefix, for a replay on a shared Redis."""
    prefix = f"{settings.history.key_prefix}replay-{secrets.token_hex(6)}:"
    history = settings.history.model_copy(update={"key_prefix": prefix})
    return OfflineSettings(history, settings.policy, settings.model, settings.gap_s)


# ------------------------------------------------------------------------------ import-log


@dataclass
class ImportResult:
    """What ``import-log`` did."""

    stats: ParseStats
    vectors: np.ndarray
    sessions: int
    featurize_s: float
    bundle: ModelBundle | None = None
    train_s: float = 0.0
    registered_version: int | None = None


async def featurize(
    records: Sequence[LogRecord],
    settings: OfflineSettings,
    *,
    redis_url: str | None = None,
    scratch: bool = False,
) -> tuple[np.ndarray, int]:
    """Training vectors of ``records`` (learning mode: nothing scored), and the session count.

    ``scratch``: work under a fresh key prefix of ``redis_url`` and delete it afterwards.
    """
    if scratch and redis_url is not None:
        settings = _scratch(settings)
    store = _store(redis_url, settings.history)
    rows: list[np.ndarray] = []
    try:
        run = OfflinePass(store, settings)
        for record in records:
            line = await run.step(record)
            if line.vector is not None:
                rows.append(line.vector)
    finally:
        drop = settings.history.key_prefix if scratch and redis_url is not None else None
        await _close_store(store, drop_prefix=drop)
    X = np.vstack(rows) if rows else np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    return X, run.sessions.sessions


def train(X: np.ndarray, model: ModelSettings, seed: int | None = None) -> ModelBundle:
    """A first bundle from the vectors (imports torch: offline commands only)."""
    from scoring.training import train_bundle

    return train_bundle(X, list(FEATURE_NAMES), FEATURE_SET_VERSION, model, seed=seed)


async def import_log(
    paths: Iterable[str | Path],
    settings: OfflineSettings,
    *,
    redis_url: str | None = None,
    train_model: bool = True,
    seed: int | None = None,
) -> ImportResult:
    """Build history from the logs, collect one vector per request and train a bundle."""
    records, stats = read_logs(paths)
    t0 = time.perf_counter()
    X, sessions = await featurize(records, settings, redis_url=redis_url)
    result = ImportResult(stats, X, sessions, time.perf_counter() - t0)
    if train_model:
        t1 = time.perf_counter()
        result.bundle = train(X, settings.model, seed)
        result.train_s = time.perf_counter() - t1
    return result


def save_bundle(bundle: ModelBundle, path: str | Path) -> None:
    """Write the bundle archive atomically."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(bundle.to_bytes())
    os.replace(tmp, path)


def load_bundle(path: str | Path) -> ModelBundle:
    """Read and verify a bundle archive for this gateway's feature set."""
    with open(path, "rb") as fh:
        return ModelBundle.from_bytes(fh.read(), FEATURE_SET_VERSION)


async def register(bundle: ModelBundle, database_url: str, records: Sequence[LogRecord]) -> int:
    """Save the bundle in the model registry of ``database_url`` and activate it."""
    from config.storage import DatabaseSettings
    from storage.store import open_store

    store = await open_store(DatabaseSettings(url=database_url))
    try:
        window = (
            (
                datetime.fromtimestamp(records[0].ts, UTC),
                datetime.fromtimestamp(records[-1].ts, UTC),
            )
            if records
            else (None, None)
        )
        version = await store.registry.save_version(
            bundle.to_bytes(),
            feature_set_version=bundle.feature_set_version,
            config={"source": "import-log"},
            metrics=bundle.metrics,
            window_start=window[0],
            window_end=window[1],
            sample_count=bundle.n_train,
        )
        await store.registry.activate(version.version, by="import-log")
        return version.version
    finally:
        await store.close()


# ------------------------------------------------------------------------------ replay


@dataclass
class SessionSummary:
    """A replayed session, aggregated."""

    session_id: str
    user: str | None
    client_ips: set[str] = field(default_factory=set)
    user_agent: str = ""
    requests: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    max_score: float = 0.0
    score_sum: float = 0.0
    scored: int = 0
    challenge_up: int = 0
    first_challenge_at: int | None = None
    decisions: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    worst_vector: np.ndarray | None = None

    def add(self, line: ReplayLine) -> None:
        r = line.record
        self.requests += 1
        self.first_ts = r.ts if self.requests == 1 else self.first_ts
        self.last_ts = r.ts
        self.client_ips.add(r.client_ip)
        self.user_agent = self.user_agent or (r.user_agent or "")
        self.decisions[line.decision] += 1
        self.statuses[r.status] += 1
        self.routes[f"{r.method} {line.route}"] += 1
        if line.decision in _CHALLENGE_UP:
            self.challenge_up += 1
            if self.first_challenge_at is None:
                self.first_challenge_at = self.requests
        if line.result is not None:
            self.scored += 1
            self.score_sum += line.result.composite
            if line.result.composite >= self.max_score or self.worst_vector is None:
                self.max_score, self.worst_vector = line.result.composite, line.vector

    @property
    def rank_key(self) -> tuple[float, int, int]:
        return (round(self.max_score, 4), self.challenge_up, self.requests)


@dataclass
class ReplayReport:
    """Everything ``replay`` prints."""

    stats: ParseStats
    requests: int
    decisions: Counter[str]
    sessions: dict[str, SessionSummary]
    replay_s: float
    explanations: dict[str, str]
    trained_s: float = 0.0
    top: list[SessionSummary] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.requests / self.replay_s if self.replay_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **self.stats.to_json(),
            "requests": self.requests,
            "sessions": len(self.sessions),
            "decisions": {k: self.decisions[k] for k in _ORDER if self.decisions[k]},
            "replay_seconds": round(self.replay_s, 3),
            "requests_per_second": round(self.throughput, 1),
            "train_seconds": round(self.trained_s, 3),
            "top_sessions": [
                _session_json(s, self.explanations.get(s.session_id, "")) for s in self.top
            ],
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _session_json(s: SessionSummary, why: str) -> dict[str, Any]:
    return {
        "session": s.session_id,
        "user": s.user,
        "client_ips": sorted(s.client_ips)[:5],
        "user_agent": s.user_agent[:160],
        "requests": s.requests,
        "start": _iso(s.first_ts),
        "end": _iso(s.last_ts),
        "max_score": round(s.max_score, 4),
        "mean_score": round(s.score_sum / s.scored, 4) if s.scored else None,
        "challenge_or_stronger": s.challenge_up,
        "first_challenge_at": s.first_challenge_at,
        "decisions": dict(s.decisions),
        "statuses": {str(k): v for k, v in s.statuses.items()},
        "top_routes": s.routes.most_common(5),
        "why": why,
    }


def line_json(line: ReplayLine, scorer: Scorer, *, top_k: int = 5) -> dict[str, Any]:
    """The ``--output`` object of one replayed line."""
    r, res = line.record, line.result
    out: dict[str, Any] = {
        "file": r.source,
        "line": r.line_no,
        "time": _iso(r.ts),
        "user": r.user,
        "session": line.session.session_id,
        "client_ip": r.client_ip,
        "method": r.method,
        "route": line.route,
        "status": r.status,
        "decision": line.decision,
        "composite": None,
        "iforest": None,
        "autoencoder": None,
        "top_features": [],
    }
    if res is not None and line.vector is not None:
        out.update(
            composite=round(res.composite, 5),
            iforest=round(res.iforest, 5),
            autoencoder=round(res.autoencoder, 5),
            model_agreement=round(res.model_agreement, 4),
            confidence=round(res.confidence, 4),
        )
        top = explain(scorer, line.vector, top_k=top_k).top_features
        out["top_features"] = [
            {
                "feature": f.feature,
                "contribution": round(f.contribution, 4),
                "value": round(f.value, 4),
            }
            for f in top
        ]
    return out


async def replay(
    paths: Iterable[str | Path],
    settings: OfflineSettings,
    bundle: ModelBundle,
    *,
    output: IO[str] | None = None,
    top: int = 10,
    records: tuple[list[LogRecord], ParseStats] | None = None,
    redis_url: str | None = None,
) -> ReplayReport:
    """Score every request of the logs against the history before it.

    The history starts empty: an embedded store, or with ``redis_url`` a scratch key prefix on
    that Redis (faster than the embedded store's Lua), deleted afterwards.
    """
    records_, stats = records if records is not None else read_logs(paths)
    scorer = Scorer(bundle)
    if redis_url is not None:
        settings = _scratch(settings)
    store = _store(redis_url, settings.history)
    sessions: dict[str, SessionSummary] = {}
    decisions: Counter[str] = Counter()
    t0 = time.perf_counter()
    try:
        run = OfflinePass(store, settings, scorer)
        for record in records_:
            line = await run.step(record)
            decisions[line.decision] += 1
            sid = line.session.session_id
            sessions.setdefault(sid, SessionSummary(sid, line.session.user_id)).add(line)
            if output is not None:
                output.write(json.dumps(line_json(line, scorer)) + "\n")
    finally:
        await _close_store(store, drop_prefix=settings.history.key_prefix if redis_url else None)
    elapsed = time.perf_counter() - t0
    ranked = sorted(sessions.values(), key=lambda s: s.rank_key, reverse=True)[:top]
    why = {
        s.session_id: explain(scorer, s.worst_vector).explanation
        for s in ranked
        if s.worst_vector is not None
    }
    return ReplayReport(stats, len(records_), decisions, sessions, elapsed, why, top=ranked)


# ------------------------------------------------------------------------------ printing


def format_report(report: ReplayReport) -> str:
    """The human-readable replay report."""
    n = max(report.requests, 1)
    lines = [
        f"requests {report.requests}  sessions {len(report.sessions)}  "
        f"parsed {report.stats.parsed}  malformed {report.stats.malformed}",
        f"replay {report.replay_s:.2f} s = {report.throughput:.0f} requests/s"
        + (f"  (training {report.trained_s:.1f} s)" if report.trained_s else ""),
        "decisions: "
        + "  ".join(
            f"{k} {report.decisions[k]} ({report.decisions[k] / n:.1%})"
            for k in _ORDER
            if report.decisions[k]
        ),
    ]
    for source, line_no, reason, text in report.stats.samples[:3]:
        lines.append(f"  malformed {source}:{line_no} ({reason}): {text[:100]!r}")
    lines.append(f"\nmost anomalous sessions (top {len(report.top)}):")
    for i, s in enumerate(report.top, 1):
        who = s.user or ",".join(sorted(s.client_ips)[:2])
        mix = " ".join(f"{k}:{v}" for k, v in sorted(s.decisions.items()))
        routes = ", ".join(f"{r} x{c}" for r, c in s.routes.most_common(3))
        lines += [
            f"{i:2d}. {s.session_id[:40]}  {who}  max {s.max_score:.3f}  {s.requests} req  "
            f"{_iso(s.first_ts)} → {_iso(s.last_ts)}",
            f"    UA {s.user_agent[:90]!r}",
            f"    decisions {mix}; statuses {dict(s.statuses.most_common(4))}",
            f"    routes {routes}",
            f"    why: {report.explanations.get(s.session_id, '-')}",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ CLI


def _offline_settings(args: argparse.Namespace) -> OfflineSettings:
    settings: Any = None
    if getattr(args, "config", None):
        from config.loader import load_settings

        settings = load_settings(args.config)
    base = OfflineSettings.from_settings(settings, gap_s=args.gap_minutes * 60.0)
    if getattr(args, "model_settings", None):
        with open(args.model_settings, encoding="utf-8") as fh:
            model = ModelSettings.model_validate(json.load(fh))
        base = OfflineSettings(base.history, base.policy, model, base.gap_s)
    return base


def run_import_log(args: argparse.Namespace) -> int:
    """``behaviorgate import-log``."""
    settings = _offline_settings(args)
    from scoring.training import InsufficientDataError

    try:
        result = asyncio.run(
            import_log(args.files, settings, redis_url=args.redis_url, seed=args.seed)
        )
    except InsufficientDataError as exc:
        print(f"behaviorgate: import-log: {exc}", file=sys.stderr)
        return 3
    assert result.bundle is not None
    save_bundle(result.bundle, args.out)
    summary = {
        **result.stats.to_json(),
        "vectors": len(result.vectors),
        "sessions": result.sessions,
        "featurize_seconds": round(result.featurize_s, 3),
        "requests_per_second": round(len(result.vectors) / max(result.featurize_s, 1e-9), 1),
        "train_seconds": round(result.train_s, 3),
        "bundle": str(args.out),
        "heldout_rates": result.bundle.metrics.get("heldout_rates"),
    }
    if args.database_url:
        records, _ = read_logs(args.files)
        summary["registered_version"] = asyncio.run(
            register(result.bundle, args.database_url, records)
        )
    print(json.dumps(summary, indent=2))
    return 0


def run_replay(args: argparse.Namespace) -> int:
    """``behaviorgate replay``."""
    settings = _offline_settings(args)
    parsed = read_logs(args.files)
    trained_s = 0.0
    if args.bundle:
        bundle = load_bundle(args.bundle)
    else:
        from scoring.training import InsufficientDataError

        t0 = time.perf_counter()
        try:
            X, _ = asyncio.run(
                featurize(parsed[0], settings, redis_url=args.redis_url, scratch=True)
            )
            bundle = train(X, settings.model, args.seed)
        except InsufficientDataError as exc:
            print(f"behaviorgate: replay: {exc} (pass --bundle)", file=sys.stderr)
            return 3
        trained_s = time.perf_counter() - t0
        if args.save_bundle:
            save_bundle(bundle, args.save_bundle)
    out = open(args.output, "w", encoding="utf-8") if args.output else None  # noqa: SIM115
    try:
        report = asyncio.run(
            replay(
                args.files,
                settings,
                bundle,
                output=out,
                top=args.top,
                records=parsed,
                redis_url=args.redis_url,
            )
        )
    finally:
        if out is not None:
            out.close()
    report.trained_s = trained_s
    print(json.dumps(report.to_json(), indent=2) if args.json else format_report(report))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="access logs (combined/common, .gz ok)")
    p.add_argument("--config", "-c", help="gateway YAML (history, policy and model sections)")
    p.add_argument(
        "--gap-minutes",
        type=float,
        default=DEFAULT_GAP_S / 60.0,
        help="inactivity gap that ends a session (default 30)",
    )
    p.add_argument("--model-settings", help="JSON file with ModelSettings (overrides --config)")
    p.add_argument("--seed", type=int, default=None, help="training seed")


def add_offline_parsers(subparsers: Any) -> None:
    """Register ``import-log`` and ``replay`` on a ``add_subparsers()`` object."""
    imp = subparsers.add_parser("import-log", help="build history from access logs and train")
    _common(imp)
    imp.add_argument("--out", required=True, help="where to write the model bundle")
    imp.add_argument("--redis-url", help="write the history into this Redis (default: embedded)")
    imp.add_argument(
        "--database-url",
        help="also register + activate the bundle here (postgresql://... or sqlite:///file)",
    )
    imp.set_defaults(func=run_import_log)

    rep = subparsers.add_parser("replay", help="score access logs offline at full speed")
    _common(rep)
    rep.add_argument("--bundle", help="model bundle file (default: train on the same logs first)")
    rep.add_argument("--save-bundle", help="where to keep the bundle trained on the logs")
    rep.add_argument("--output", help="write one JSON object per parsed line here (JSONL)")
    rep.add_argument("--top", type=int, default=10, help="sessions to show")
    rep.add_argument("--json", action="store_true", help="print the summary as JSON")
    rep.add_argument(
        "--redis-url",
        help="replay on this Redis under a scratch key prefix "
        "(deleted afterwards); default: embedded store",
    )
    rep.set_defaults(func=run_replay)
