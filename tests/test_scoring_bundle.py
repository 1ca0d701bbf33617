"""Model bundle: round trip, refusal of other feature sets, tampering and pickles."""

import dataclasses
import io
import zipfile

import numpy as np
import pytest

from config.model import ModelSettings
from scoring.bundle import BundleError, ModelBundle
from scoring.ensemble import Scorer
from scoring.forest import CompiledForest
from scoring.training import train_bundle

SETTINGS = ModelSettings.model_validate(
    {
        "autoencoder": {"epochs": 3, "batch_size": 64, "encoding_dim": 3},
        "training": {"min_samples": 100},
        "drift": {"reference_sample_size": 200},
    }
)


@pytest.fixture(scope="module")
def bundle():
    X = np.random.default_rng(0).normal(size=(800, 6)).astype(np.float32)
    return train_bundle(X, [f"f{i}" for i in range(6)], "fs-1", SETTINGS)


def test_round_trip_scores_identically(bundle) -> None:
    loaded = ModelBundle.from_bytes(bundle.to_bytes(), expected_feature_set_version="fs-1")
    rows = np.random.default_rng(1).normal(scale=3, size=(50, 6))
    a, b = Scorer(bundle).score_batch(rows), Scorer(loaded).score_batch(rows)
    np.testing.assert_array_equal(a.composite, b.composite)
    assert loaded.feature_names == bundle.feature_names
    assert loaded.settings == bundle.settings and loaded.metrics == bundle.metrics
    ref_a, ref_b = loaded.reference.features, bundle.reference.features
    np.testing.assert_array_equal(ref_a.sample, ref_b.sample)


def test_other_feature_set_version_is_refused(bundle) -> None:
    with pytest.raises(BundleError, match="'fs-1'.*'fs-2'"):
        ModelBundle.from_bytes(bundle.to_bytes(), expected_feature_set_version="fs-2")


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def test_pickled_object_member_is_refused(bundle) -> None:
    members = _members(bundle.to_bytes())
    members["evil.npy"] = _npy(np.array([{"payload": 1}], dtype=object))
    with pytest.raises(BundleError, match="unreadable"):
        ModelBundle.from_bytes(_zip(members))


def test_tampered_array_is_refused(bundle) -> None:
    members = _members(bundle.to_bytes())
    members["baseline.npy"] = _npy(np.zeros(6, dtype=np.float32))
    with pytest.raises(BundleError, match="digest"):
        ModelBundle.from_bytes(_zip(members))


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04garbage"])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(BundleError):
        ModelBundle.from_bytes(data)


def test_out_of_range_feature_index_is_refused(bundle) -> None:
    f = bundle.forest
    bad = f.feature.copy()
    bad[0, 0] = 99
    evil = dataclasses.replace(
        bundle, forest=CompiledForest(bad, f.threshold, f.leaf_value, f.normaliser)
    )
    with pytest.raises(BundleError, match="shapes"):
        ModelBundle.from_bytes(evil.to_bytes())


def test_archive_holds_only_numeric_arrays_and_json(bundle) -> None:
    with np.load(io.BytesIO(bundle.to_bytes()), allow_pickle=False) as npz:
        assert all(npz[name].dtype.kind in "biuf" for name in npz.files)
