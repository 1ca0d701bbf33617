"""The active model of this replica, swapped in place when the registry says so.

A swap replaces one reference: a request that already picked up the old scorer finishes with it,
the next one gets the new one, and none is dropped or sees a half-loaded model.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog

from scoring.bundle import BundleError, ModelBundle
from scoring.ensemble import Scorer
from scoring.features import FEATURE_SET_VERSION
from storage.store import ModelRegistry

log = structlog.get_logger("behaviorgate.models")


@dataclass(frozen=True, slots=True)
class ActiveModel:
    version: int
    scorer: Scorer
    bundle: ModelBundle


class ModelHolder:
    def __init__(self, registry: ModelRegistry, poll_interval: float | None = None) -> None:
        self._registry = registry
        self._poll = poll_interval
        self.current: ActiveModel | None = None
        self._task: asyncio.Task[None] | None = None
        self.swaps = 0
        self.last_error: str | None = None

    @property
    def version(self) -> int | None:
        return None if self.current is None else self.current.version

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._follow(), name="behaviorgate-model-follow")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self) -> None:
        """Load the registry's active version if it is not the one in use."""
        active = await self._registry.active_version()
        if active is None:
            self.current = None
            return
        if self.current is not None and self.current.version == active.version:
            return
        if active.bundle is None:
            active = await self._registry.get_version(active.version)
        await self._load(active.version, active.bundle)

    def install(self, version: int, bundle: ModelBundle) -> None:
        self.current = ActiveModel(version, Scorer(bundle), bundle)
        self.swaps += 1
        log.info("model_active", version=version, n_train=bundle.n_train)

    async def _load(self, version: int, data: bytes | None) -> None:
        if data is None:
            return
        try:
            # Decoding a bundle is a few ms of numpy work: off the event loop.
            bundle = await asyncio.to_thread(ModelBundle.from_bytes, data, FEATURE_SET_VERSION)
        except BundleError as exc:
            self.last_error = f"version {version}: {exc}"
            log.error("model_refused", version=version, error=str(exc))
            return
        self.install(version, bundle)

    async def _follow(self) -> None:
        while True:
            try:
                async with contextlib.aclosing(self._registry.watch(self._poll)) as versions:
                    async for _ in versions:
                        await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep following through database outages
                log.warning("model_follow_error", error=type(exc).__name__)
                await asyncio.sleep(5)
