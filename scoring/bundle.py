"""The model bundle: everything a replica needs to score, explain and check drift.

Serialised as an ``.npz`` archive of numeric arrays plus one JSON member, loaded with
``allow_pickle=False``: a stored bundle (a database row) cannot run code when it is read. A sha256
over every array and the metadata guards against truncation and tampering in transit, and a
bundle built for another feature-set version is refused instead of silently mis-scoring.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from config.model import ModelSettings
from scoring.autoencoder import AutoencoderWeights
from scoring.calibration import Calibration
from scoring.drift import DriftReference, Histogram
from scoring.forest import CompiledForest

__all__ = ["BUNDLE_FORMAT_VERSION", "BundleError", "ModelBundle"]

BUNDLE_FORMAT = "behaviorgate-model-bundle"
BUNDLE_FORMAT_VERSION = 1
MAX_BUNDLE_BYTES = 256 * 2**20
"""Largest archive, compressed or not, that :meth:`ModelBundle.from_bytes` will open."""

_CALIBRATIONS = ("iforest", "autoencoder", "composite")


class BundleError(ValueError):
    """A bundle that cannot be used: corrupt, tampered with, or for another feature set."""


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """One trained model version (immutable)."""

    feature_names: tuple[str, ...]
    feature_set_version: str
    forest: CompiledForest
    autoencoder: AutoencoderWeights
    calibration: dict[str, Calibration]
    weights: tuple[float, float]
    baseline: np.ndarray
    train_min: np.ndarray
    train_max: np.ndarray
    reference: DriftReference
    settings: ModelSettings
    n_train: int
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def to_bytes(self) -> bytes:
        """The archive: arrays + ``meta`` (JSON) + ``sha256`` over both."""
        arrays = self._arrays()
        arrays["meta"] = np.frombuffer(json.dumps(self._meta()).encode(), dtype=np.uint8)
        arrays["sha256"] = np.frombuffer(_digest(arrays).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(
        cls, data: bytes, expected_feature_set_version: str | None = None
    ) -> ModelBundle:
        """Load and verify an archive made by :meth:`to_bytes`.

        Raises
        ------
        BundleError
            On any corruption, a digest mismatch, an unknown format version, a pickled (object)
            member, inconsistent shapes, or a feature-set version other than the expected one.
        """
        arrays = _read_arrays(data)
        meta = _read_meta(arrays)
        version = meta.get("feature_set_version")
        if expected_feature_set_version is not None and version != expected_feature_set_version:
            raise BundleError(
                f"bundle was trained for feature set {version!r}, "
                f"this gateway computes {expected_feature_set_version!r}: retrain the model"
            )
        try:
            bundle = cls._from_parts(arrays, meta)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BundleError(f"malformed bundle: {exc}") from exc
        _check_shapes(bundle)
        return bundle

    def _arrays(self) -> dict[str, np.ndarray]:
        ae, ref = self.autoencoder, self.reference
        out = {
            "forest.feature": self.forest.feature,
            "forest.threshold": self.forest.threshold,
            "forest.leaf_value": self.forest.leaf_value,
            "ae.w1": ae.w1,
            "ae.b1": ae.b1,
            "ae.w2": ae.w2,
            "ae.b2": ae.b2,
            "ae.mean": ae.mean,
            "ae.inv_scale": ae.inv_scale,
            "baseline": self.baseline,
            "train_min": self.train_min,
            "train_max": self.train_max,
        }
        for part, hist in (("features", ref.features), ("scores", ref.scores)):
            for key in ("cuts", "counts", "sample"):
                out[f"ref.{part}.{key}"] = getattr(hist, key)
        for name in _CALIBRATIONS:
            out[f"cal.{name}.knots"] = self.calibration[name].knots
        return out

    def _meta(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "feature_names": list(self.feature_names),
            "feature_set_version": self.feature_set_version,
            "forest_normaliser": self.forest.normaliser,
            "weights": list(self.weights),
            "calibration": {
                name: {"anchor": c.anchor, "tail_scale": c.tail_scale, "log": c.log}
                for name, c in self.calibration.items()
            },
            "n_train": self.n_train,
            "settings": self.settings.model_dump(mode="json"),
            "metrics": self.metrics,
        }

    @classmethod
    def _from_parts(cls, a: dict[str, np.ndarray], meta: dict[str, Any]) -> ModelBundle:
        cal = {
            name: Calibration(
                a[f"cal.{name}.knots"], float(m["anchor"]), float(m["tail_scale"]), bool(m["log"])
            )
            for name, m in ((n, meta["calibration"][n]) for n in _CALIBRATIONS)
        }
        ref = DriftReference(
            *(
                Histogram(*(a[f"ref.{part}.{key}"] for key in ("cuts", "counts", "sample")))
                for part in ("features", "scores")
            )
        )
        wa, wb = (float(w) for w in meta["weights"])
        return cls(
            feature_names=tuple(str(n) for n in meta["feature_names"]),
            feature_set_version=str(meta["feature_set_version"]),
            forest=CompiledForest(
                a["forest.feature"],
                a["forest.threshold"],
                a["forest.leaf_value"],
                float(meta["forest_normaliser"]),
            ),
            autoencoder=AutoencoderWeights(
                *(a[f"ae.{k}"] for k in ("w1", "b1", "w2", "b2", "mean", "inv_scale"))
            ),
            calibration=cal,
            weights=(wa, wb),
            baseline=a["baseline"],
            train_min=a["train_min"],
            train_max=a["train_max"],
            reference=ref,
            settings=ModelSettings.model_validate(meta["settings"]),
            n_train=int(meta["n_train"]),
            metrics=dict(meta.get("metrics") or {}),
        )


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _read_arrays(data: bytes) -> dict[str, np.ndarray]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError("bundle too large")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            if sum(info.file_size for info in zf.infolist()) > MAX_BUNDLE_BYTES:
                raise BundleError("bundle expands beyond the size limit")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except BundleError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise BundleError(f"unreadable bundle: {exc}") from exc
    bad = [k for k, v in arrays.items() if v.dtype.kind not in "biuf"]
    if bad:
        raise BundleError(f"non-numeric members in bundle: {bad}")
    return arrays


def _read_meta(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if "meta" not in arrays or "sha256" not in arrays:
        raise BundleError("bundle lacks its metadata or digest")
    stated = arrays.pop("sha256").tobytes().decode("ascii", "replace")
    if stated != _digest(arrays):
        raise BundleError("bundle digest mismatch (corrupt or tampered)")
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle metadata is not JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise BundleError("not a BehaviorGate model bundle")
    if meta.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"unsupported bundle format version {meta.get('format_version')!r}")
    return meta


def _check_shapes(b: ModelBundle) -> None:
    """Hostile-input check: every index and shape the scorer relies on is consistent."""
    n, f = b.n_features, b.forest
    width = f.feature.shape[1] + 1 if f.feature.ndim == 2 else 0
    problems = [
        f.feature.ndim != 2 or width & (width - 1) != 0 or f.threshold.shape != f.feature.shape,
        f.leaf_value.shape != (f.feature.shape[0], width),
        f.feature.size and (f.feature.min() < 0 or f.feature.max() >= n),
        not np.isfinite(f.leaf_value).all() or not f.normaliser > 0,
        b.autoencoder.w1.ndim != 2 or b.autoencoder.w1.shape[1] != n,
        b.autoencoder.w2.shape != b.autoencoder.w1.shape[::-1],
        b.autoencoder.b1.shape != b.autoencoder.w1.shape[:1],
        any(
            v.shape != (n,) for v in (b.autoencoder.b2, b.autoencoder.mean, b.autoencoder.inv_scale)
        ),
        any(v.shape != (n,) for v in (b.baseline, b.train_min, b.train_max)),
        b.reference.features.counts.shape[0] != n,
        any(
            not c.tail_scale > 0 or c.knots.ndim != 1 or c.knots.size < 2
            for c in b.calibration.values()
        ),
    ]
    if any(problems):
        raise BundleError("bundle arrays have inconsistent shapes")
