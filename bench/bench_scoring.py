"""Scoring speed and explanation fidelity, beside scikit-learn + torch measured in the same run.

Usage: python bench/bench_scoring.py [--rows 100000] [--million]

Synthetic 59-feature traffic (a 6-factor latent structure plus noise, one constant feature).
Prints: training time; us per scored row (vector -> calibrated composite + decision) and per
64-row batch, beside scikit-learn ``score_samples`` + a torch forward on the same inputs;
us per explanation; the share of anomalies whose composite falls when their top-3 features are
reset to the baseline.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from config.model import ModelSettings
from scoring.ae_train import build_network
from scoring.decision import decide
from scoring.ensemble import Scorer
from scoring.explain import explain, fidelity
from scoring.forest import fit_isolation_forest
from scoring.training import train_bundle

N_FEATURES = 59


def traffic(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(0).normal(size=(6, N_FEATURES))
    X = rng.normal(size=(n, 6)) @ mix + 0.3 * rng.normal(size=(n, N_FEATURES))
    X[:, 58] = 1.0
    return X.astype(np.float32)


def anomalies(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = traffic(n, seed)
    for row in X:
        cols = rng.choice(N_FEATURES - 1, size=rng.integers(1, 4), replace=False)
        row[cols] += rng.choice([-1, 1], len(cols)) * rng.uniform(4, 12, len(cols))
    return X


def per_call_us(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(5):  # best of 5 rounds: the box is shared, take the least disturbed
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeat * 1e6)
    return best


def train(n: int, settings: ModelSettings):
    X = traffic(n, 1)
    t0 = time.perf_counter()
    bundle = train_bundle(X, [f"f{i}" for i in range(N_FEATURES)], "bench", settings)
    return bundle, time.perf_counter() - t0


def reference_path(bundle, X: np.ndarray):
    """scikit-learn score_samples + torch forward: the naive serving path."""
    model = fit_isolation_forest(X, bundle.settings.isolation_forest)
    ae = bundle.autoencoder
    net = build_network(ae.n_features, ae.w1.shape[0]).eval()
    torch.set_num_threads(1)

    def one(x: np.ndarray) -> None:
        model.score_samples(x.reshape(len(x) if x.ndim == 2 else 1, -1))
        with torch.no_grad():
            z = torch.from_numpy(ae.standardise(x).astype(np.float32))
            ((net(z) - z) ** 2).mean(dim=-1)

    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--million",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also time training on 1M rows",
    )
    args = parser.parse_args()
    settings = ModelSettings.model_validate({"training": {"max_samples": 1_000_000}})
    bundle, seconds = train(args.rows, settings)
    m = bundle.metrics
    print(
        f"training {args.rows} rows: {seconds:.1f} s (forest {m['durations_s']['forest']:.1f} s, "
        f"autoencoder {m['durations_s']['autoencoder']:.1f} s over "
        f"{m['autoencoder']['epochs_run']} epochs); held-out rates {m['heldout_rates']}"
    )
    scorer = Scorer(bundle)
    test = traffic(2000, 7)
    x, batch = test[0], test[:64]

    def ours_one() -> None:
        decide(scorer.score(x).composite, scorer.thresholds)

    def ours_batch() -> None:
        for c in scorer.score_batch(batch).composite:
            decide(float(c), scorer.thresholds)

    naive = reference_path(bundle, traffic(5000, 3))
    one_us, batch_us = per_call_us(ours_one, 2000), per_call_us(ours_batch, 200)
    ref_one, ref_batch = per_call_us(lambda: naive(x), 20), per_call_us(lambda: naive(batch), 20)
    print(
        f"one row : ours {one_us:8.1f} us   sklearn+torch {ref_one:9.1f} us   "
        f"x{ref_one / one_us:.0f}"
    )
    print(
        f"64 rows : ours {batch_us:8.1f} us   sklearn+torch {ref_batch:9.1f} us   "
        f"x{ref_batch / batch_us:.0f}   ({batch_us / 64:.1f} us/row)"
    )
    bad = anomalies(400, 11)
    flagged = bad[scorer.score_batch(bad).composite >= scorer.thresholds.monitor]
    print(f"explanation: {per_call_us(lambda: explain(scorer, flagged[0]), 500):.1f} us")
    print(
        f"fidelity: top-3 reset lowers the composite for {fidelity(scorer, flagged):.1%} of "
        f"{len(flagged)} flagged anomalies (of {len(bad)} planted)"
    )
    if args.million:
        _, seconds = train(1_000_000, settings)
        print(f"training 1000000 rows: {seconds:.1f} s")


if __name__ == "__main__":
    main()
