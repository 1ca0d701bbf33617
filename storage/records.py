"""Record types of the store, their id generator, text sanitising and spool encoding.

Every string that may come from a client passes through :func:`clean_text` before it is
written: Postgres rejects NUL characters in ``text``/``jsonb`` and lone surrogates cannot be
encoded as UTF-8, so both are replaced rather than allowed to poison a whole batch.
"""

from __future__ import annotations

import base64
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson

__all__ = (
    "DecisionBucket",
    "FalsePositiveReport",
    "FeatureSample",
    "Feedback",
    "Incident",
    "ModelVersion",
    "PerformanceStats",
    "PredictionRecord",
    "PREDICTION_COLUMNS",
    "aware",
    "bucket_fill",
    "clean_json",
    "clean_opt_text",
    "clean_text",
    "decode_prediction",
    "dumps_json",
    "encode_prediction",
    "features_from_bytes",
    "features_to_bytes",
    "finite_or_none",
    "from_us",
    "id_time",
    "int32_or_none",
    "new_prediction_id",
    "prediction_from_row",
    "prediction_row",
    "stack_sample",
    "to_us",
)

TEXT_LIMIT = 512
NOTES_LIMIT = 1000
EXPLANATION_LIMIT = 64 * 1024
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_INDEX = {c: i for i, c in enumerate(_CROCKFORD)}
_RAND_BITS = 80


class _IdGenerator:
    """ULID-like ids: 48-bit millisecond time + 80 random bits, 26 Crockford characters.

    Ids sort by their embedded time as plain strings; within one process, ids made in the
    same millisecond are strictly increasing (the random part is incremented), so ids from
    a non-decreasing clock never go backwards. The embedded time is always the one given.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def new(self, ts: float | None = None) -> str:
        ms = int((time.time() if ts is None else ts) * 1000)
        rand = int.from_bytes(os.urandom(10), "big")
        value = (ms << _RAND_BITS) | rand
        with self._lock:
            # Same millisecond as the previous id: continue from it so order is kept.
            if ms == self._last >> _RAND_BITS and value <= self._last:
                value = self._last + 1
            self._last = value
        return _encode128(value)


def _encode128(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


_GENERATOR = _IdGenerator()


def new_prediction_id(ts: float | None = None) -> str:
    """A new sortable unique id; ``ts`` (epoch seconds) fixes its time part."""
    return _GENERATOR.new(ts)


def id_time(record_id: str) -> datetime | None:
    """The creation time embedded in an id from :func:`new_prediction_id` (None if malformed)."""
    if len(record_id) != 26:
        return None
    value = 0
    for ch in record_id:
        digit = _CROCKFORD_INDEX.get(ch)
        if digit is None:
            return None
        value = (value << 5) | digit
    ms = value >> _RAND_BITS
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(dt: datetime) -> int:
    """Exact integer microseconds since the epoch (a naive datetime is taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    """Inverse of :func:`to_us`, an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


@dataclass(slots=True, kw_only=True)
class PredictionRecord:
    """One scored request, as written to the audit trail and used as training data."""

    id: str = ""
    ts: datetime = field(default_factory=_utcnow)
    session_id: str | None = None
    user_id: str | None = None
    method: str = ""
    route: str = ""
    rule: str | None = None
    client_ip: str | None = None
    features: np.ndarray | Sequence[float] = ()
    iforest_score: float | None = None
    autoencoder_score: float | None = None
    composite: float | None = None
    decision: str = "ALLOW"
    is_anomaly: bool = False
    explanation: dict[str, Any] | None = None
    model_version: int | None = None
    feature_set_version: str = ""
    processing_ms: float | None = None
    upstream_status: int | None = None
    confidence: float | None = None
    agreement: float | None = None

    def __post_init__(self) -> None:
        # The id embeds the record's own time, so lookups by id can find its partition.
        if not self.id:
            self.id = new_prediction_id(self.ts.timestamp())

    def feature_array(self) -> np.ndarray:
        """The feature vector as a float32 array."""
        return np.asarray(self.features, dtype=np.float32).reshape(-1)


@dataclass(slots=True, kw_only=True)
class Feedback:
    """A user's or admin's verdict on one prediction (latest per prediction and user)."""

    id: int
    prediction_id: str
    user_id: str
    is_false_positive: bool
    notes: str
    created_at: datetime


@dataclass(slots=True, kw_only=True)
class FalsePositiveReport:
    """A false-positive feedback row with the prediction it is about (None once expired)."""

    feedback: Feedback
    prediction: PredictionRecord | None


@dataclass(slots=True, kw_only=True)
class Incident:
    """A BLOCK event and its handling state (open → acknowledged → resolved/released)."""

    id: int | None = None
    created_at: datetime = field(default_factory=_utcnow)
    updated_at: datetime | None = None
    status: str = "open"
    prediction_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    client_ip: str | None = None
    route: str | None = None
    rule: str | None = None
    composite: float | None = None
    reason: str = ""
    actor: str | None = None
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class ModelVersion:
    """A model bundle in the registry. ``bundle`` is None when a listing left it out."""

    version: int
    created_at: datetime
    feature_set_version: str
    bundle: bytes | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    window_start: datetime | None
    window_end: datetime | None
    sample_count: int
    status: str
    activated_at: datetime | None = None
    activated_by: str | None = None


@dataclass(slots=True, kw_only=True)
class DecisionBucket:
    """Decision counts in the time bucket starting at ``start``."""

    start: datetime
    counts: dict[str, int]


@dataclass(slots=True, kw_only=True)
class PerformanceStats:
    """Aggregates over a window. Rates are in [0, 1]; averages are None on an empty window.

    ``false_positive_rate`` = anomalous predictions whose latest feedback says false positive,
    divided by anomalous predictions in the window.
    """

    total: int
    anomaly_count: int
    anomaly_rate: float
    avg_composite: float | None
    avg_confidence: float | None
    avg_agreement: float | None
    processing_ms_p50: float | None
    processing_ms_p95: float | None
    processing_ms_p99: float | None
    feedback_count: int
    false_positive_count: int
    false_positive_rate: float
    decisions: dict[str, int]


@dataclass(slots=True, kw_only=True)
class FeatureSample:
    """Feature vectors (n × d float32) with their ids and composite scores (NaN when unknown)."""

    ids: list[str]
    features: np.ndarray
    composites: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


# --- sanitising ------------------------------------------------------------------------------


def clean_text(value: object, limit: int = TEXT_LIMIT) -> str:
    """A string safe for Postgres text: no NUL, valid UTF-8, at most ``limit`` characters."""
    s = value if isinstance(value, str) else str(value)
    if len(s) > limit:
        s = s[:limit]
    if s.isascii():
        return s.replace("\x00", "\ufffd") if "\x00" in s else s
    if "\x00" in s:
        s = s.replace("\x00", "\ufffd")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "replace").decode("utf-8")
    return s


def clean_opt_text(value: object, limit: int = TEXT_LIMIT) -> str | None:
    """:func:`clean_text`, keeping None as None."""
    return None if value is None else clean_text(value, limit)


def finite_or_none(value: object) -> float | None:
    """A float, or None for None/NaN/±inf/unconvertible (SQL aggregates must not see NaN)."""
    if value is None:
        return None
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def clean_json(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy: clean strings and keys, non-finite floats → None, bounded depth."""
    if depth > 20:
        return None
    if isinstance(value, str):
        return clean_text(value, EXPLANATION_LIMIT)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float | np.floating):
        return finite_or_none(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {clean_text(k): clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [clean_json(v, depth + 1) for v in value]
    return clean_text(value)


def dumps_json(value: Any, limit: int = EXPLANATION_LIMIT) -> str | None:
    """Serialise a cleaned value; oversize documents become a small truncation marker."""
    if value is None:
        return None
    text = orjson.dumps(clean_json(value)).decode("utf-8")
    if len(text) > limit:
        return '{"truncated": true}'
    return text


def features_to_bytes(features: np.ndarray | Sequence[float]) -> bytes:
    """Little-endian float32 bytes (NaN preserved) of a feature vector."""
    return np.asarray(features, dtype="<f4").reshape(-1).tobytes()


def features_from_bytes(raw: bytes | None) -> np.ndarray:
    """The float32 vector stored by :func:`features_to_bytes` (trailing odd bytes ignored)."""
    if not raw:
        return np.zeros(0, dtype=np.float32)
    usable = len(raw) - len(raw) % 4
    return np.frombuffer(raw[:usable], dtype="<f4").astype(np.float32)


# --- spool encoding --------------------------------------------------------------------------

_TEXT_FIELDS = ("session_id", "user_id", "rule", "client_ip")
_FLOAT_FIELDS = (
    "iforest_score",
    "autoencoder_score",
    "composite",
    "processing_ms",
    "confidence",
    "agreement",
)


def encode_prediction(rec: PredictionRecord) -> bytes:
    """Compact JSON bytes of a record for the spool (floats cleaned, features base64)."""
    doc: dict[str, Any] = {
        "id": rec.id,
        "ts": to_us(rec.ts),
        "method": clean_text(rec.method, 16),
        "route": clean_text(rec.route),
        "decision": clean_text(rec.decision, 32),
        "is_anomaly": bool(rec.is_anomaly),
        "explanation": clean_json(rec.explanation),
        "model_version": rec.model_version,
        "feature_set_version": clean_text(rec.feature_set_version, 64),
        "upstream_status": rec.upstream_status,
        "features": base64.b64encode(features_to_bytes(rec.features)).decode("ascii"),
    }
    for name in _TEXT_FIELDS:
        doc[name] = clean_opt_text(getattr(rec, name))
    for name in _FLOAT_FIELDS:
        doc[name] = finite_or_none(getattr(rec, name))
    return orjson.dumps(doc)


def decode_prediction(raw: bytes) -> PredictionRecord:
    """Inverse of :func:`encode_prediction`."""
    doc = orjson.loads(raw)
    ts = from_us(doc.pop("ts"))
    features = features_from_bytes(base64.b64decode(doc.pop("features")))
    return PredictionRecord(ts=ts, features=features, **doc)


# --- row mapping (shared by both SQL backends) -------------------------------------------------

PREDICTION_COLUMNS = (
    "id",
    "ts",
    "session_id",
    "user_id",
    "method",
    "route",
    "rule",
    "client_ip",
    "features",
    "iforest_score",
    "autoencoder_score",
    "composite",
    "decision",
    "is_anomaly",
    "explanation",
    "model_version",
    "feature_set_version",
    "processing_ms",
    "upstream_status",
    "confidence",
    "agreement",
)
_INT32 = 2**31 - 1


def int32_or_none(value: object) -> int | None:
    """An int fitting a 32-bit column, else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        i = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None
    return i if -_INT32 <= i <= _INT32 else None


def aware(dt: datetime) -> datetime:
    """``dt`` with a timezone (naive values are taken as UTC)."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def prediction_row(rec: PredictionRecord) -> tuple[Any, ...]:
    """The sanitised column values of a record, in :data:`PREDICTION_COLUMNS` order."""
    return (
        clean_text(rec.id, 64),
        aware(rec.ts),
        clean_opt_text(rec.session_id),
        clean_opt_text(rec.user_id),
        clean_text(rec.method, 16),
        clean_text(rec.route),
        clean_opt_text(rec.rule),
        clean_opt_text(rec.client_ip, 64),
        features_to_bytes(rec.features),
        finite_or_none(rec.iforest_score),
        finite_or_none(rec.autoencoder_score),
        finite_or_none(rec.composite),
        clean_text(rec.decision, 32),
        bool(rec.is_anomaly),
        dumps_json(rec.explanation),
        int32_or_none(rec.model_version),
        clean_text(rec.feature_set_version, 64),
        finite_or_none(rec.processing_ms),
        int32_or_none(rec.upstream_status),
        finite_or_none(rec.confidence),
        finite_or_none(rec.agreement),
    )


def prediction_from_row(row: Any, ts: datetime) -> PredictionRecord:
    """A record from a database row (mapping by column name) and its decoded time."""
    explanation = row["explanation"]
    return PredictionRecord(
        id=row["id"],
        ts=ts,
        session_id=row["session_id"],
        user_id=row["user_id"],
        method=row["method"],
        route=row["route"],
        rule=row["rule"],
        client_ip=row["client_ip"],
        features=features_from_bytes(row["features"]),
        iforest_score=row["iforest_score"],
        autoencoder_score=row["autoencoder_score"],
        composite=row["composite"],
        decision=row["decision"],
        is_anomaly=bool(row["is_anomaly"]),
        explanation=orjson.loads(explanation) if explanation is not None else None,
        model_version=row["model_version"],
        feature_set_version=row["feature_set_version"],
        processing_ms=row["processing_ms"],
        upstream_status=row["upstream_status"],
        confidence=row["confidence"],
        agreement=row["agreement"],
    )


def stack_sample(
    ids: list[str], blobs: list[bytes], composites: list[float | None]
) -> FeatureSample:
    """A :class:`FeatureSample` from raw rows; all vectors must have the same length."""
    if not ids:
        return FeatureSample(
            ids=[], features=np.zeros((0, 0), np.float32), composites=np.zeros(0, np.float64)
        )
    vectors = [features_from_bytes(b) for b in blobs]
    widths = {v.shape[0] for v in vectors}
    if len(widths) != 1:
        raise ValueError(
            f"feature vectors of different lengths {sorted(widths)}: filter by feature_set_version"
        )
    comp = np.array([np.nan if c is None else c for c in composites], dtype=np.float64)
    return FeatureSample(ids=ids, features=np.vstack(vectors), composites=comp)


def bucket_fill(
    start: datetime, end: datetime, bucket_seconds: int, found: dict[int, dict[str, int]]
) -> list[DecisionBucket]:
    """Every bucket (epoch-aligned) overlapping [start, end), zero-filled where empty."""
    if bucket_seconds <= 0:
        raise ValueError("bucket_seconds must be positive")
    step = bucket_seconds * 1_000_000
    first = to_us(start) // step * step
    last = to_us(end)
    if (last - first) // step > 10_000:
        raise ValueError("too many buckets (more than 10,000): use a larger bucket")
    out = []
    b = first
    while b < last:
        out.append(DecisionBucket(start=from_us(b), counts=dict(found.get(b, {}))))
        b += step
    return out
