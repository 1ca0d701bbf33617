"""The start-up heap is frozen out of the collector's scans, after collecting what is garbage."""

from __future__ import annotations

import gc
import weakref

from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.gctune import freeze_startup_heap
from tests.proxyharness import gateway_settings


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_freeze_collects_garbage_first_then_freezes_survivors() -> None:
    gc.unfreeze()
    cyclic = _Node()
    gone = weakref.ref(cyclic)
    kept = _Node()
    del cyclic
    frozen = freeze_startup_heap()
    assert gone() is None  # collected before the freeze, not frozen forever
    assert frozen == gc.get_freeze_count() > 0
    assert kept.me is kept
    gc.unfreeze()
    assert gc.get_freeze_count() == 0


async def _freeze_count_after_start(tmp_path, enabled: bool) -> int:
    gc.unfreeze()
    settings = gateway_settings(9, str(tmp_path), server={"gc_freeze": enabled})
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        return gc.get_freeze_count()
    finally:
        await server.close()


async def test_gateway_freezes_its_heap_once_started(tmp_path) -> None:
    assert await _freeze_count_after_start(tmp_path, True) > 10_000


async def test_gc_freeze_can_be_turned_off(tmp_path) -> None:
    assert await _freeze_count_after_start(tmp_path, False) == 0
