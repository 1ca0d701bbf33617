"""Start-up in stages: a failing stage unwinds the ones already open, and its error is the one
reported whatever their clean-up does."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from proxy.app import StartupError, _staged


def _stage(name: str, trail: list[str], *, fail_open: bool = False, fail_close: bool = False):
    async def ctx(_app):
        if fail_open:
            raise ConnectionRefusedError(f"{name} refused")
        trail.append(f"open {name}")
        yield
        trail.append(f"close {name}")
        if fail_close:
            raise RuntimeError(f"{name} close failed")

    return ctx


async def test_failed_stage_unwinds_earlier_ones_and_is_the_error_reported():
    trail: list[str] = []
    ctx = _staged(
        [
            ("a", _stage("a", trail)),
            ("b", _stage("b", trail, fail_close=True)),
            ("c", _stage("c", trail, fail_open=True)),
            ("d", _stage("d", trail)),
        ]
    )
    with capture_logs() as events, pytest.raises(StartupError) as info:
        await anext(ctx(None))
    assert str(info.value) == "c: ConnectionRefusedError: c refused" and info.value.stage == "c"
    assert trail == ["open a", "open b", "close b", "close a"]  # reverse order, d never opened
    assert [(e["event"], e["stage"]) for e in events] == [("stage_close_failed", "b")]


async def test_normal_shutdown_closes_every_stage_even_after_a_failing_close():
    trail: list[str] = []
    ctx = _staged(
        [
            ("a", _stage("a", trail)),
            ("b", _stage("b", trail, fail_close=True)),
            ("c", _stage("c", trail)),
        ]
    )
    steps = ctx(None)
    await anext(steps)
    with capture_logs() as events:
        assert await anext(steps, "done") == "done"
    assert trail == ["open a", "open b", "open c", "close c", "close b", "close a"]
    assert [e["error"] for e in events] == ["RuntimeError: b close failed"]


async def test_cancelled_start_up_unwinds_what_is_open():
    trail: list[str] = []
    started = asyncio.Event()

    async def slow(_app):
        started.set()
        await asyncio.sleep(60)
        yield

    ctx = _staged([("a", _stage("a", trail)), ("slow", slow), ("c", _stage("c", trail))])
    task = asyncio.ensure_future(anext(ctx(None)))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trail == ["open a", "close a"]
