"""Record → camelCase JSON, in the spec's field names."""

from __future__ import annotations

from typing import Any

from proxy.api.http import iso
from storage.records import (
    DecisionBucket,
    FalsePositiveReport,
    Feedback,
    ModelVersion,
    PerformanceStats,
    PredictionRecord,
    clean_json,
    finite_or_none,
)

#: Keys of a stored explanation that the spec defines (anything else stays in ``details``).
_SPEC_KEYS = ("topFeatures", "explanation", "modelAgreement", "confidence")


def prediction_summary(rec: PredictionRecord) -> dict[str, Any]:
    """A prediction in listings (no vector, no explanation)."""
    return {
        "id": rec.id,
        "timestamp": iso(rec.ts),
        "sessionId": rec.session_id,
        "userId": rec.user_id,
        "method": rec.method,
        "route": rec.route,
        "rule": rec.rule,
        "clientIp": rec.client_ip,
        "decision": rec.decision,
        "isAnomaly": bool(rec.is_anomaly),
        "anomalyScore": finite_or_none(rec.composite),
        "scores": {
            "isolationForest": finite_or_none(rec.iforest_score),
            "autoencoder": finite_or_none(rec.autoencoder_score),
        },
        "modelAgreement": finite_or_none(rec.agreement),
        "confidence": finite_or_none(rec.confidence),
        "modelVersion": rec.model_version,
        "processingTimeMs": finite_or_none(rec.processing_ms),
        "upstreamStatus": rec.upstream_status,
    }


def has_spec_explanation(stored: dict[str, Any] | None) -> bool:
    return isinstance(stored, dict) and isinstance(stored.get("topFeatures"), list)


def prediction_detail(
    rec: PredictionRecord, explanation: dict[str, Any] | None, source: str
) -> dict[str, Any]:
    """Summary plus the spec's explanation fields at the top level, and what the gateway noted."""
    out = prediction_summary(rec)
    stored = rec.explanation if isinstance(rec.explanation, dict) else {}
    spec = explanation or {}
    out["topFeatures"] = clean_json(spec.get("topFeatures", []))
    out["explanation"] = (
        spec.get("explanation") if isinstance(spec.get("explanation"), str) else None
    )
    for key in ("modelAgreement", "confidence"):
        value = finite_or_none(spec.get(key))
        if value is not None:
            out[key] = value
    out["explanationSource"] = source
    out["note"] = stored.get("note") if isinstance(stored.get("note"), str) else None
    out["enforced"] = stored.get("enforced") if isinstance(stored.get("enforced"), str) else None
    out["featureSetVersion"] = rec.feature_set_version
    return out


def feedback_json(fb: Feedback) -> dict[str, Any]:
    return {
        "id": fb.id,
        "predictionId": fb.prediction_id,
        "userId": fb.user_id,
        "isFalsePositive": fb.is_false_positive,
        "notes": fb.notes,
        "createdAt": iso(fb.created_at),
    }


def false_positive_json(report: FalsePositiveReport) -> dict[str, Any]:
    return {
        "feedback": feedback_json(report.feedback),
        "prediction": None if report.prediction is None else prediction_summary(report.prediction),
    }


def version_json(v: ModelVersion) -> dict[str, Any]:
    return {
        "version": v.version,
        "createdAt": iso(v.created_at),
        "status": v.status,
        "isActive": v.status == "active",
        "featureSetVersion": v.feature_set_version,
        "sampleCount": v.sample_count,
        "windowStart": iso(v.window_start),
        "windowEnd": iso(v.window_end),
        "activatedAt": iso(v.activated_at),
        "activatedBy": v.activated_by,
        "trainingMetrics": clean_json(v.metrics),
    }


def performance_json(p: PerformanceStats) -> dict[str, Any]:
    return {
        "totalPredictions": p.total,
        "anomalyCount": p.anomaly_count,
        "anomalyRate": p.anomaly_rate,
        "averageAnomalyScore": finite_or_none(p.avg_composite),
        "averageConfidence": finite_or_none(p.avg_confidence),
        "modelAgreement": finite_or_none(p.avg_agreement),
        "processingTimeMs": {
            "p50": finite_or_none(p.processing_ms_p50),
            "p95": finite_or_none(p.processing_ms_p95),
            "p99": finite_or_none(p.processing_ms_p99),
        },
        "feedbackCount": p.feedback_count,
        "falsePositiveCount": p.false_positive_count,
        "falsePositiveRate": p.false_positive_rate,
        "decisions": dict(p.decisions),
    }


def bucket_json(b: DecisionBucket) -> dict[str, Any]:
    return {"start": iso(b.start), "counts": dict(b.counts), "total": sum(b.counts.values())}
