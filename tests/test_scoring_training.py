"""Training: metrics, calibrated rates on held-out rows, hygiene, the separate-process CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest

from config.model import ModelSettings
from scoring.bundle import ModelBundle
from scoring.training import InsufficientDataError, train_bundle

SETTINGS = ModelSettings.model_validate(
    {
        "autoencoder": {"epochs": 4, "batch_size": 128, "encoding_dim": 4},
        "training": {"min_samples": 500, "max_samples": 5000},
    }
)
NAMES = [f"f{i}" for i in range(10)]


def _data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) @ rng.normal(size=(4, 10)) + 0.3 * rng.normal(size=(n, 10))
    X[:, 9] = 7.0  # zero variance
    return X.astype(np.float32)


@pytest.fixture(scope="module")
def bundle():
    X = _data(6000)
    X[:3, 2] = np.nan
    return train_bundle(X, NAMES, "fs-1", SETTINGS, seed=5)


def test_metrics_report_sizes_durations_and_curves(bundle) -> None:
    m = bundle.metrics
    assert m["rows"] == {"input": 6000, "dropped_nonfinite": 3, "train": 4000, "validation": 1000}
    assert m["zero_variance_features"] == ["f9"]
    assert set(m["durations_s"]) == {"forest", "autoencoder", "calibration", "total"}
    assert len(m["autoencoder"]["val_loss"]) == m["autoencoder"]["epochs_run"] <= 4
    assert m["forest"] == {
        "n_trees": 100,
        "max_samples": 256,
        "sklearn_depth": 8,
        "compiled_depth": 8,
    }
    q = [m["score_quantiles"][k] for k in ("0.5", "0.9", "0.95", "0.99", "0.999")]
    assert q == sorted(q)


def test_rates_follow_the_calibration_design(bundle) -> None:
    train, held = bundle.metrics["training_rates"], bundle.metrics["heldout_rates"]
    assert train["0.65"] == pytest.approx(0.05, abs=0.005)
    assert held["0.65"] == pytest.approx(0.05, abs=0.02)
    for rates in (train, held):
        assert rates["0.65"] > rates["0.70"] > rates["0.80"] >= rates["0.90"]
    assert bundle.metrics["heldout_anomaly_rate"] == held["0.65"]


def test_insufficient_data_message() -> None:
    with pytest.raises(InsufficientDataError, match="insufficient training data: 10 of 500"):
        train_bundle(_data(10), NAMES, "fs-1", SETTINGS)


def test_cap_samples_uniformly() -> None:
    small = SETTINGS.model_copy(
        update={"training": SETTINGS.training.model_copy(update={"max_samples": 600})}
    )
    b = train_bundle(_data(2000), NAMES, "fs-1", small)
    assert b.metrics["rows"]["train"] + b.metrics["rows"]["validation"] == 600


def test_cli_trains_in_a_separate_process(tmp_path) -> None:
    src, out, cfg = tmp_path / "in.npz", tmp_path / "out.bundle", tmp_path / "s.json"
    np.savez(src, X=_data(800), feature_names=np.array(NAMES), feature_set_version=np.array("fs-9"))
    cfg.write_text(json.dumps(SETTINGS.model_dump(mode="json")))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scoring.training",
            str(src),
            str(out),  # noqa: S603
            "--settings",
            str(cfg),
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    metrics = json.loads(proc.stdout)
    loaded = ModelBundle.from_bytes(out.read_bytes(), expected_feature_set_version="fs-9")
    assert loaded.metrics == metrics and loaded.n_features == 10


def test_cli_reports_insufficient_data(tmp_path) -> None:
    src = tmp_path / "in.npz"
    np.savez(src, X=_data(20), feature_names=np.array(NAMES), feature_set_version=np.array("v"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scoring.training",
            str(src),  # noqa: S603
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    assert json.loads(proc.stdout)["error"] == "insufficient training data: 20 of 1000 samples"
