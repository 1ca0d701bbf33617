"""Training: a feature matrix -> a :class:`ModelBundle` with its metrics.

Rows are split once: ``1 - validation_split`` of them fit the forest, the autoencoder and every
calibration; the rest drive early stopping and then serve as a held-out check (the share of them
scoring >= each threshold should be close to the designed rates). Run it in its own process so
the gateway never imports torch nor shares a core with training::

    python -m scoring.training IN.npz OUT.bundle [--settings model.json] [--seed N]

``IN.npz`` holds ``X`` (rows x features), ``feature_names`` (strings) and ``feature_set_version``
(a 0-d string); it is read with ``allow_pickle=False``. The metrics are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np

from config.model import ModelSettings
from scoring.ae_train import train_autoencoder
from scoring.bundle import ModelBundle
from scoring.calibration import Calibration, fit_calibration
from scoring.drift import build_reference
from scoring.ensemble import Scorer
from scoring.forest import compile_forest, fit_isolation_forest

__all__ = ["InsufficientDataError", "main", "train_bundle"]

_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


class InsufficientDataError(ValueError):
    """Fewer usable rows than ``training.min_samples``."""

    def __init__(self, have: int, need: int) -> None:
        super().__init__(f"insufficient training data: {have} of {need} samples")
        self.have, self.need = have, need


def train_bundle(
    X: np.ndarray,
    feature_names: list[str],
    feature_set_version: str,
    settings: ModelSettings | None = None,
    *,
    seed: int | None = None,
) -> ModelBundle:
    """Train both models, calibrate them and package everything as a bundle.

    Rows with a non-finite value are dropped (counted in the metrics); at most
    ``training.max_samples`` rows are used (uniform, seeded). ``seed`` overrides both models'.
    """
    s = settings or ModelSettings()
    seed = s.isolation_forest.seed if seed is None else seed
    t0 = time.perf_counter()
    X, n_input, n_dropped = _usable_rows(X, len(feature_names), s, seed)
    train, val = _split(X, s.autoencoder.validation_split, seed)
    timings: dict[str, float] = {}
    with _timer(timings, "forest"):
        model = fit_isolation_forest(train, s.isolation_forest, seed=seed)
        forest = compile_forest(model, s.isolation_forest.max_depth)
    with _timer(timings, "autoencoder"):
        ae = train_autoencoder(train, val, s.autoencoder, seed=seed)
    with _timer(timings, "calibration"):
        cal, weights, comp_train = _calibrate(forest.score(train), ae.weights.error(train), s)
        reference = build_reference(
            train,
            comp_train,
            bins=s.drift.bins,
            sample_size=s.drift.reference_sample_size,
            seed=seed,
        )
    bundle = ModelBundle(
        feature_names=tuple(feature_names),
        feature_set_version=feature_set_version,
        forest=forest,
        autoencoder=ae.weights,
        calibration=cal,
        weights=weights,
        baseline=np.median(train, axis=0).astype(np.float32),
        train_min=train.min(axis=0).astype(np.float64),
        train_max=train.max(axis=0).astype(np.float64),
        reference=reference,
        settings=s,
        n_train=len(train),
    )
    timings["total"] = time.perf_counter() - t0
    metrics = _metrics(
        Scorer(bundle),
        train,
        val,
        comp_train,
        ae,
        model,
        timings,
        n_input=n_input,
        n_dropped=n_dropped,
    )
    return replace(bundle, metrics=metrics)


def _usable_rows(
    X: np.ndarray, n_features: int, s: ModelSettings, seed: int
) -> tuple[np.ndarray, int, int]:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"X must be (rows, {n_features}), got {X.shape}")
    finite = np.isfinite(X).all(axis=1)
    usable = X[finite]
    if len(usable) < s.training.min_samples:
        raise InsufficientDataError(len(usable), s.training.min_samples)
    if len(usable) > s.training.max_samples:
        keep = np.random.default_rng(seed).choice(
            len(usable), s.training.max_samples, replace=False
        )
        usable = usable[np.sort(keep)]
    return usable, len(X), int((~finite).sum())


def _split(X: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed + 1).permutation(len(X))
    n_val = min(len(X) - 1, max(1, int(round(len(X) * share))))
    return X[np.sort(order[n_val:])], X[np.sort(order[:n_val])]


def _calibrate(
    raw_forest: np.ndarray, raw_ae: np.ndarray, s: ModelSettings
) -> tuple[dict[str, Calibration], tuple[float, float], np.ndarray]:
    """Per-model maps, the composite's map on their weighted mix, and training composites."""
    kw = {
        "contamination": s.isolation_forest.contamination,
        "anchor": s.thresholds.monitor,
        "tail_ratio": s.calibration.tail_ratio,
        "n_knots": s.calibration.knots,
    }
    cal_f = fit_calibration(raw_forest, **kw)
    cal_a = fit_calibration(raw_ae, log=True, **kw)
    total = s.ensemble.isolation_forest + s.ensemble.autoencoder
    wf, wa = s.ensemble.isolation_forest / total, s.ensemble.autoencoder / total
    mixed = wf * cal_f(raw_forest) + wa * cal_a(raw_ae)
    cal = {"iforest": cal_f, "autoencoder": cal_a, "composite": fit_calibration(mixed, **kw)}
    return cal, (wf, wa), cal["composite"](mixed)


class _timer:  # noqa: N801 - used like a function
    def __init__(self, into: dict[str, float], key: str) -> None:
        self.into, self.key = into, key

    def __enter__(self) -> None:
        self.t = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.into[self.key] = time.perf_counter() - self.t


def _metrics(
    scorer: Scorer,
    train: np.ndarray,
    val: np.ndarray,
    comp_train: np.ndarray,
    ae: Any,
    model: Any,
    timings: dict[str, float],
    *,
    n_input: int,
    n_dropped: int,
) -> dict[str, Any]:
    b, t = scorer.bundle, scorer.thresholds
    held = scorer.score_batch(val)
    zero_var = [
        n for n, inv in zip(b.feature_names, b.autoencoder.inv_scale, strict=True) if inv == 0
    ]
    return {
        "rows": {
            "input": n_input,
            "dropped_nonfinite": n_dropped,
            "train": len(train),
            "validation": len(val),
        },
        "n_features": b.n_features,
        "zero_variance_features": zero_var,
        "durations_s": {k: round(v, 4) for k, v in timings.items()},
        "forest": {
            "n_trees": b.forest.n_trees,
            "max_samples": int(model.max_samples_),
            "sklearn_depth": max(e.tree_.max_depth for e in model.estimators_),
            "compiled_depth": b.forest.depth,
        },
        "autoencoder": {
            "train_loss": ae.train_loss,
            "val_loss": ae.val_loss,
            "best_epoch": ae.best_epoch,
            "epochs_run": len(ae.train_loss),
            "stopped_early": ae.stopped_early,
        },
        "score_quantiles": {str(q): float(np.quantile(comp_train, q)) for q in _QUANTILES},
        "training_rates": _rates(comp_train, t.ladder()),
        "heldout_rates": _rates(held.composite, t.ladder()),
        "heldout_anomaly_rate": float(np.mean(held.composite >= t.monitor)),
        "baseline_composite": scorer.score(b.baseline).composite,
    }


def _rates(scores: np.ndarray, ladder: tuple[float, ...]) -> dict[str, float]:
    return {f"{level:.2f}": float(np.mean(scores >= level)) for level in ladder}


def _load_input(path: str) -> tuple[np.ndarray, list[str], str]:
    with np.load(path, allow_pickle=False) as npz:
        return (
            np.asarray(npz["X"]),
            [str(n) for n in npz["feature_names"]],
            str(npz["feature_set_version"]),
        )


def main(argv: list[str] | None = None) -> int:
    """CLI: train from IN.npz, write OUT.bundle atomically, print the metrics as JSON."""
    parser = argparse.ArgumentParser(prog="python -m scoring.training", description=__doc__)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--settings", help="JSON file with ModelSettings")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    settings = ModelSettings()
    if args.settings:
        with open(args.settings, encoding="utf-8") as fh:
            settings = ModelSettings.model_validate(json.load(fh))
    X, names, version = _load_input(args.input)
    try:
        bundle = train_bundle(X, names, version, settings, seed=args.seed)
    except InsufficientDataError as exc:
        print(json.dumps({"error": str(exc), "have": exc.have, "need": exc.need}))
        return 3
    tmp = f"{args.output}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(bundle.to_bytes())
    os.replace(tmp, args.output)
    print(json.dumps(bundle.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
