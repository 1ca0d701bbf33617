"""import-log and replay end to end on a slice of the shared almhuette log, with a small model."""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from config.history import HistorySettings
from config.model import ModelSettings
from proxy.accesslog import read_logs
from proxy.offline import (
    OfflineSettings,
    add_offline_parsers,
    featurize,
    import_log,
    load_bundle,
    replay,
    save_bundle,
)
from scoring.features import FEATURE_NAMES, INDEX

DATA = Path(__file__).parent / "data"
ALM = DATA / "accesslog-almhuette-head300.log"  # 300 lines, 11 sessions (see test_proxy_accesslog)
EDGE = DATA / "accesslog-edge.log"  # 5 parsed lines, 5 malformed
SMALL_MODEL = {
    "training": {"min_samples": 100},
    "isolation_forest": {"n_trees": 20, "sample_size": 64},
    "autoencoder": {"epochs": 3, "batch_size": 64},
}
LADDER = {"ALLOW", "MONITOR", "CHALLENGE", "REQUIRE_2FA", "BLOCK"}


def _settings(**history: object) -> OfflineSettings:
    return OfflineSettings(
        history=HistorySettings(**history), model=ModelSettings.model_validate(SMALL_MODEL)
    )


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    result = asyncio.run(import_log([ALM], _settings(), seed=1))
    assert result.bundle is not None
    path = tmp_path_factory.mktemp("bundle") / "alm.bundle"
    save_bundle(result.bundle, path)
    return path


async def test_import_log_counts_and_bundle(tmp_path: Path) -> None:
    result = await import_log([ALM], _settings(), seed=1)
    assert (result.stats.parsed, result.stats.malformed) == (300, 0)
    assert result.vectors.shape == (300, len(FEATURE_NAMES))
    assert result.sessions == 11
    assert result.bundle is not None and result.bundle.feature_names == FEATURE_NAMES
    save_bundle(result.bundle, tmp_path / "b")
    assert load_bundle(tmp_path / "b").n_train == result.bundle.n_train


async def test_each_request_sees_only_the_history_before_it() -> None:
    """session_event_count of a request = earlier requests of its session (grouped by hand)."""
    records, _ = read_logs([ALM])
    X, _ = await featurize(records, _settings())
    seen: dict[tuple[str, str], int] = defaultdict(int)
    expected = []
    for r in records:  # same identity, and no 30-minute gap in the first 300 lines' sessions
        key = (r.client_ip, r.user_agent or "")
        expected.append(min(seen[key], 200))
        seen[key] += 1
    assert X[:, INDEX["session_event_count"]].tolist() == expected
    first = [i for i, e in enumerate(expected) if e == 0]
    assert len(first) == 11 and (X[first, INDEX["secs_since_last"]] == 86_400.0).all()


async def test_replay_writes_one_object_per_parsed_line(bundle_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with open(out, "w", encoding="utf-8") as fh:
        report = await replay([ALM], _settings(), load_bundle(bundle_file), output=fh, top=3)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == report.requests == 300
    assert [r["line"] for r in rows] == list(range(1, 301))  # the slice is in time order
    assert {r["decision"] for r in rows} <= LADDER
    assert Counter(r["decision"] for r in rows) == report.decisions
    assert len(report.sessions) == 11 and len({r["session"] for r in rows}) == 11
    for r in rows:
        assert 0.0 <= r["composite"] <= 1.0 and r["iforest"] is not None
        assert len(r["top_features"]) <= 5
    assert [s.max_score for s in report.top] == sorted(
        (s.max_score for s in report.top), reverse=True
    )
    assert report.top[0].max_score == pytest.approx(max(r["composite"] for r in rows), abs=1e-5)


async def test_replay_tolerates_malformed_lines(bundle_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "edge.jsonl"
    with open(out, "w", encoding="utf-8") as fh:
        report = await replay([EDGE], _settings(), load_bundle(bundle_file), output=fh)
    assert (report.stats.parsed, report.stats.malformed) == (5, 5)
    assert len(out.read_text().splitlines()) == 5
    assert len(report.sessions) == 4


async def test_real_redis_history_gives_the_same_vectors(redis_url: str, redis_prefix: str) -> None:
    records, _ = read_logs([ALM])
    embedded, _ = await featurize(records[:120], _settings())
    real, _ = await featurize(
        records[:120], _settings(key_prefix=redis_prefix), redis_url=redis_url
    )
    np.testing.assert_array_equal(embedded, real)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_offline_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_import_register_and_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.json"
    model.write_text(json.dumps(SMALL_MODEL))
    bundle, out, db = tmp_path / "b.bundle", tmp_path / "o.jsonl", tmp_path / "r.sqlite3"
    assert (
        _cli(
            [
                "import-log",
                str(ALM),
                "--out",
                str(bundle),
                "--model-settings",
                str(model),
                "--seed",
                "2",
                "--database-url",
                f"sqlite:///{db}",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert (summary["parsed"], summary["vectors"], summary["sessions"]) == (300, 300, 11)
    assert summary["registered_version"] == 1
    assert (
        _cli(
            [
                "replay",
                str(ALM),
                str(EDGE),
                "--bundle",
                str(bundle),
                "--output",
                str(out),
                "--top",
                "2",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert (report["parsed"], report["malformed"], report["requests"]) == (305, 5, 305)
    assert len(out.read_text().splitlines()) == 305 and len(report["top_sessions"]) == 2
    assert report["top_sessions"][0]["why"]


def test_cli_replay_without_enough_data_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(["replay", str(EDGE)]) == 3
    assert "insufficient training data: 5 of 1000" in capsys.readouterr().err


async def test_replay_on_real_redis_matches_embedded_and_cleans_up(
    bundle_file: Path, redis_url: str, redis_prefix: str
) -> None:
    import redis.asyncio as aioredis

    bundle = load_bundle(bundle_file)
    settings = _settings(key_prefix=redis_prefix)
    embedded = await replay([ALM], settings, bundle)
    real = await replay([ALM], settings, bundle, redis_url=redis_url)
    assert real.decisions == embedded.decisions
    assert [s.session_id for s in real.top] == [s.session_id for s in embedded.top]
    client = aioredis.from_url(redis_url)
    try:
        assert [k async for k in client.scan_iter(match=redis_prefix + "*")] == []
    finally:
        await client.aclose()
