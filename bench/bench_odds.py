"""ROC AUC on the ODDS outlier sets: forest, autoencoder and ensemble vs the published iForest.

Usage: python bench/bench_odds.py [--seeds 5] [--data DIR] [--only NAME ...]

Per data set and seed: (a) the standard protocol, our compiled forest fitted on all rows
(100 trees x 256 samples) and scored on all rows; (b) a full bundle from
``scoring.training.train_bundle`` (forest + autoencoder fitted on its 80 % training split,
calibrated, combined 0.6 / 0.4) scoring all rows. AUCs are averaged over the seeds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from sklearn.metrics import roc_auc_score

from config.model import IsolationForestSettings, ModelSettings
from scoring.ensemble import Scorer
from scoring.forest import compile_forest, fit_isolation_forest
from scoring.training import train_bundle

PUBLISHED = {
    "shuttle": 1.00,
    "mammography": 0.86,
    "annthyroid": 0.82,
    "satellite": 0.71,
    "pima": 0.67,
    "breastw": 0.99,
    "ionosphere": 0.85,
}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "odds"


def run_one(X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, float]:
    forest = compile_forest(fit_isolation_forest(X, IsolationForestSettings(), seed=seed))
    settings = ModelSettings.model_validate(
        {"training": {"min_samples": 2, "max_samples": max(2, len(X))}}
    )
    names = [f"x{i}" for i in range(X.shape[1])]
    scores = Scorer(train_bundle(X, names, "odds", settings, seed=seed)).score_batch(X)
    return {
        "forest": roc_auc_score(y, forest.score(X)),
        "bundle_forest": roc_auc_score(y, scores.iforest),
        "autoencoder": roc_auc_score(y, scores.autoencoder),
        "ensemble": roc_auc_score(y, scores.composite),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    cols = ("forest", "bundle_forest", "autoencoder", "ensemble")
    print(
        f"{'data set':<12} {'rows':>6} {'feat':>4} {'published':>9} "
        + " ".join(f"{c:>13}" for c in cols)
        + f" {'|forest-pub|':>12} {'s/seed':>7}"
    )
    for name, published in PUBLISHED.items():
        if args.only and name not in args.only:
            continue
        mat = loadmat(args.data / f"{name}.mat")
        X, y = np.asarray(mat["X"], dtype=np.float32), np.asarray(mat["y"]).ravel().astype(int)
        t0 = time.perf_counter()
        runs = [run_one(X, y, seed) for seed in range(args.seeds)]
        per_seed = (time.perf_counter() - t0) / args.seeds
        mean = {c: float(np.mean([r[c] for r in runs])) for c in cols}
        print(
            f"{name:<12} {len(X):>6} {X.shape[1]:>4} {published:>9.2f} "
            + " ".join(f"{mean[c]:>13.3f}" for c in cols)
            + f" {abs(mean['forest'] - published):>12.3f} {per_seed:>7.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
