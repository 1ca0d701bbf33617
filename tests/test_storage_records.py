"""Record helpers: sortable ids, text sanitising, spool encoding round trips."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.records import (
    PredictionRecord,
    bucket_fill,
    clean_json,
    clean_text,
    decode_prediction,
    dumps_json,
    encode_prediction,
    features_from_bytes,
    features_to_bytes,
    finite_or_none,
    from_us,
    id_time,
    int32_or_none,
    new_prediction_id,
    to_us,
)


class TestIds:
    def test_ids_strictly_increase_within_one_millisecond(self) -> None:
        """Ids made with the same timestamp still sort in creation order."""
        ids = [new_prediction_id(1_700_000_000.123) for _ in range(1000)]
        assert ids == sorted(ids)
        assert len(set(ids)) == 1000

    def test_ids_are_26_crockford_characters(self) -> None:
        pid = new_prediction_id()
        assert len(pid) == 26
        assert set(pid) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")

    def test_id_time_recovers_the_millisecond(self) -> None:
        pid = new_prediction_id(1_767_225_600.250)  # 2026-01-01T00:00:00.250Z
        assert id_time(pid) == datetime(2026, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)

    def test_id_time_of_garbage_is_none(self) -> None:
        assert id_time("not-an-id") is None
        assert id_time("U" * 25 + "!") is None

    def test_later_time_sorts_after(self) -> None:
        assert new_prediction_id(2_000_000_000.0) > new_prediction_id(1_000_000_000.0)


class TestSanitising:
    def test_nul_becomes_replacement_character(self) -> None:
        assert clean_text("a\x00b") == "a\ufffdb"

    def test_lone_surrogate_is_replaced(self) -> None:
        assert clean_text("x\ud800y") == "x?y"

    def test_length_is_capped(self) -> None:
        assert clean_text("é" * 600, 512) == "é" * 512

    @given(st.text())
    @settings(max_examples=200)
    def test_clean_text_is_always_postgres_safe(self, s: str) -> None:
        out = clean_text(s, 10_000)
        assert "\x00" not in out
        out.encode("utf-8")  # never raises

    def test_finite_or_none(self) -> None:
        assert finite_or_none(float("nan")) is None
        assert finite_or_none(float("inf")) is None
        assert finite_or_none("1.5") == 1.5
        assert finite_or_none(np.float32(0.25)) == 0.25
        assert finite_or_none(object()) is None

    def test_int32_bounds(self) -> None:
        assert int32_or_none(2**31 - 1) == 2**31 - 1
        assert int32_or_none(2**31) is None
        assert int32_or_none(True) is None

    def test_clean_json_nan_and_keys(self) -> None:
        doc = {"k\x00": [1.0, float("nan"), {"deep": np.float64(2.5)}], 3: np.int64(7)}
        assert clean_json(doc) == {"k\ufffd": [1.0, None, {"deep": 2.5}], "3": 7}

    def test_oversize_explanation_is_marked_truncated(self) -> None:
        assert orjson.loads(dumps_json({"x": "a" * 100}, limit=50)) == {"truncated": True}


class TestEncoding:
    def test_time_microseconds_exact(self) -> None:
        dt = datetime(2026, 3, 1, 8, 0, 0, 123_457, tzinfo=UTC)
        assert to_us(dt) == 1_772_352_000_123_457
        assert from_us(to_us(dt)) == dt

    def test_features_round_trip_keeps_nan(self) -> None:
        vec = np.array([0.5, np.nan, -1e30, 3.0], dtype=np.float32)
        back = features_from_bytes(features_to_bytes(vec))
        assert back.dtype == np.float32
        np.testing.assert_array_equal(back, vec)

    @given(
        st.lists(st.floats(allow_nan=True, width=32), max_size=60),
        st.one_of(st.none(), st.text(max_size=40)),
        st.one_of(st.none(), st.floats()),
        st.dictionaries(st.text(max_size=5), st.floats() | st.text(max_size=5), max_size=4),
    )
    @settings(max_examples=100)
    def test_spool_round_trip(self, feats, user, score, expl) -> None:
        rec = PredictionRecord(
            user_id=user,
            composite=score,
            features=np.array(feats, dtype=np.float32),
            explanation=expl,
            decision="BLOCK",
            upstream_status=502,
        )
        back = decode_prediction(encode_prediction(rec))
        assert back.id == rec.id and back.ts == rec.ts
        assert back.user_id == (None if user is None else clean_text(user))
        if score is None or not math.isfinite(score):
            assert back.composite is None
        else:
            assert back.composite == score
        np.testing.assert_array_equal(back.feature_array(), np.array(feats, dtype=np.float32))
        assert back.explanation == clean_json(expl)
        assert back.decision == "BLOCK" and back.upstream_status == 502


def test_bucket_fill_aligns_to_epoch_multiples() -> None:
    start = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    end = datetime(2026, 1, 1, 0, 3, 0, tzinfo=UTC)
    key = to_us(datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    buckets = bucket_fill(start, end, 60, {key: {"BLOCK": 2}})
    assert [b.start.minute for b in buckets] == [0, 1, 2]
    assert [b.counts for b in buckets] == [{}, {"BLOCK": 2}, {}]
