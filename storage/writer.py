"""Batched, durable prediction writer: the request path enqueues, a background task writes.

``enqueue`` is synchronous and O(1): a deque append and, at most, an event set. A single
flusher task takes batches by size (``batch_size``) or age (``flush_interval``) and inserts
them through the store (COPY on Postgres). When the store is unreachable, batches are
appended to the local :class:`~storage.spool.Spool` instead; the same task replays the spool
in order once the store answers again (exactly once: inserts ignore ids already stored).
When the queue is more than half full the flusher also spools, to absorb a burst, and
replays it when traffic calms down.

Nothing is dropped silently: a record is refused only when both the queue and the spool are
full, and every refusal increments ``dropped`` and logs an error (at most once a second,
with counts). Which records are refused is the overflow policy's choice (see
:class:`config.storage.WriterSettings`). A record that the database rejects as invalid is
isolated by bisection and kept in a dead-letter spool (``<spool>.rejected``), counted in
``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from config.storage import WriterSettings
from storage.records import PredictionRecord, decode_prediction, encode_prediction
from storage.spool import Spool, SpoolFull
from storage.store import Store, StoreUnavailable

__all__ = ("PredictionWriter",)

_log = logging.getLogger(__name__)
_REPLAY_BATCHES_PER_CYCLE = 5


class PredictionWriter:
    """Bounded queue → batches → store, with a spool while the store is away.

    Call :meth:`start` inside the event loop, :meth:`enqueue` (or ``await put``) per record,
    and ``await close()`` on shutdown to drain.
    """

    def __init__(self, store: Store, settings: WriterSettings, *, spool: Spool | None = None):
        self._store = store
        self._s = settings
        self._queue: deque[PredictionRecord] = deque()
        self._limit = settings.queue_max
        reserve = int(settings.queue_max * settings.priority_reserve)
        self._priority_limit = self._limit + (
            reserve if settings.overflow_policy == "drop_allow_first" else 0
        )
        self._batch = settings.batch_size
        self._sample = settings.allow_sample_rate
        self._rand = random.random
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._spool = spool
        self._dead: Spool | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: list[PredictionRecord] = []
        self._closing = False
        self._replay_offset = 0
        self._retry_at = 0.0
        self._backoff = settings.retry_initial
        self._last_drop_log = 0.0
        self._drops_unlogged = 0
        self.db_available = True
        self.queued = 0
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.dropped = 0
        self.sampled_out = 0
        self.failed = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (replaying whatever a previous run left) and start flushing."""
        if self._spool is None:
            self._spool = await asyncio.to_thread(
                Spool, self._s.spool_path, self._s.spool_max_bytes
            )
        if self._spool.count:
            _log.warning(
                "prediction spool holds %d records from a previous run; replaying",
                self._spool.count,
            )
        self._task = asyncio.create_task(self._run(), name="prediction-writer")

    async def close(self) -> None:
        """Stop accepting, drain the queue to the store (or the spool), release the spool."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._s.close_timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self._spool_leftovers()
        if self._spool is not None:
            self._spool.close()
        if self._dead is not None:
            self._dead.close()

    # -- request path -------------------------------------------------------------------------

    def enqueue(self, record: PredictionRecord) -> bool:
        """Accept a record without waiting. False = refused (counted and logged)."""
        if self._sample < 1.0 and record.decision == "ALLOW" and self._rand() >= self._sample:
            self.sampled_out += 1
            return True
        if self._accept(record):
            return True
        return self._refuse()

    async def put(self, record: PredictionRecord) -> bool:
        """Like :meth:`enqueue`, but waits up to ``block_timeout`` for room (block_briefly)."""
        if self._sampled_accept(record):
            return True
        deadline = time.monotonic() + self._s.block_timeout
        while (left := deadline - time.monotonic()) > 0:
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), left)
            if self._accept(record):
                return True
        return self._refuse()

    def _sampled_accept(self, record: PredictionRecord) -> bool:
        """Sampling + accept, without counting a refusal (used by :meth:`put`)."""
        if self._sample < 1.0 and record.decision == "ALLOW" and self._rand() >= self._sample:
            self.sampled_out += 1
            return True
        return self._accept(record)

    def _accept(self, record: PredictionRecord) -> bool:
        q = self._queue
        n = len(q)
        if self._closing or (
            n >= self._limit and (n >= self._priority_limit or record.decision == "ALLOW")
        ):
            return False
        q.append(record)
        self.queued += 1
        if n + 1 >= self._batch and not self._wake.is_set():
            self._wake.set()
        return True

    def _refuse(self) -> bool:
        self.dropped += 1
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._last_drop_log >= 1.0:
            _log.error(
                "prediction records refused: queue (%d/%d) and spool (%d/%d bytes) exhausted, "
                "policy=%s, refused since last report=%d, total refused=%d",
                len(self._queue),
                self._limit,
                self.spool_bytes,
                self._s.spool_max_bytes,
                self._s.overflow_policy,
                self._drops_unlogged,
                self.dropped,
            )
            self._last_drop_log = now
            self._drops_unlogged = 0
        return False

    # -- observability ------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def spool_bytes(self) -> int:
        return self._spool.size if self._spool is not None else 0

    @property
    def spool_records(self) -> int:
        return self._spool.count if self._spool is not None else 0

    def stats(self) -> dict[str, Any]:
        """Counters and gauges for metrics and health endpoints."""
        return {
            "queued": self.queued,
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "sampled_out": self.sampled_out,
            "failed": self.failed,
            "queue_depth": self.queue_depth,
            "spool_bytes": self.spool_bytes,
            "spool_records": self.spool_records,
            "db_available": self.db_available,
        }

    # -- flusher ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if len(self._queue) < self._batch and not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._s.flush_interval)
            self._wake.clear()
            if not await self._cycle():
                # Neither the store nor the spool took anything: do not spin.
                await asyncio.sleep(self._backoff)
            if self._closing and not self._queue:
                if self.db_available:
                    await self._replay(limit=None)
                return

    async def _cycle(self) -> bool:
        """One pass: replay a little, then move the queue out. False = stuck (store and
        spool both refused)."""
        if self._spool_pending() and self._may_try_store() and len(self._queue) < self._batch:
            await self._replay(limit=_REPLAY_BATCHES_PER_CYCLE)
        while self._queue:
            batch = self._take()
            if self._may_try_store() and not self._overloaded():
                if await self._write(batch):
                    self.written += len(batch)
                    self._done(batch)
                    continue
            if not await self._to_spool(batch):
                return False
        return True

    def _take(self) -> list[PredictionRecord]:
        q = self._queue
        n = min(self._batch, len(q))
        self._inflight = [q.popleft() for _ in range(n)]
        return self._inflight

    def _done(self, _batch: Sequence[PredictionRecord]) -> None:
        self._inflight = []
        self._room.set()

    def _overloaded(self) -> bool:
        return len(self._queue) > self._limit // 2 and not self._closing

    def _may_try_store(self) -> bool:
        return self.db_available or time.monotonic() >= self._retry_at

    def _spool_pending(self) -> bool:
        return self._spool is not None and self._spool.size > self._replay_offset

    async def _write(self, batch: Sequence[PredictionRecord]) -> bool:
        """Insert; False if the store is unreachable. Invalid records go to the dead letter."""
        try:
            await self._store.insert_predictions(batch)
        except (StoreUnavailable, OSError, TimeoutError) as exc:
            # OSError covers ConnectionError from stores that do not translate their errors.
            self._mark_down(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a bad record must not jam the queue
            if len(batch) == 1:
                await self._dead_letter(batch, exc)
                return True
            mid = len(batch) // 2
            return await self._write(batch[:mid]) and await self._write(batch[mid:])
        self._mark_up()
        return True

    def _mark_down(self, exc: BaseException) -> None:
        if self.db_available:
            _log.warning("prediction store unreachable, spooling: %s", exc)
        else:
            self._backoff = min(self._backoff * 2, self._s.retry_max)
        self.db_available = False
        self._retry_at = time.monotonic() + self._backoff

    def _mark_up(self) -> None:
        if not self.db_available:
            _log.warning("prediction store reachable again; replaying the spool")
        self.db_available = True
        self._backoff = self._s.retry_initial

    async def _to_spool(self, batch: list[PredictionRecord]) -> bool:
        assert self._spool is not None
        payloads = [encode_prediction(r) for r in batch]
        try:
            await asyncio.to_thread(self._spool.append, payloads)
        except (SpoolFull, OSError) as exc:
            _log.error("prediction spool cannot take %d records: %s", len(batch), exc)
            self._queue.extendleft(reversed(batch))
            self._inflight = []
            return False
        self.spooled += len(batch)
        self._done(batch)
        return True

    async def _replay(self, limit: int | None) -> None:
        """Write spooled batches from the resume offset; clear the spool once all are in."""
        spool = self._spool
        if spool is None or not self._spool_pending():
            return
        it = spool.batches(self._batch, self._replay_offset)
        done = 0
        while limit is None or done < limit:
            item = await asyncio.to_thread(next, it, None)
            if item is None:
                break
            payloads, end = item
            records = await self._decode(payloads)
            if not await self._write(records):
                return
            self.replayed += len(records)
            self._replay_offset = end
            done += 1
        if self._replay_offset >= spool.size:
            await asyncio.to_thread(spool.clear)
            self._replay_offset = 0

    async def _decode(self, payloads: list[bytes]) -> list[PredictionRecord]:
        records = []
        for p in payloads:
            try:
                records.append(decode_prediction(p))
            except Exception as exc:  # noqa: BLE001 - checksummed yet undecodable: keep aside
                await self._dead_letter_raw([p], exc)
        return records

    async def _dead_letter(self, batch: Sequence[PredictionRecord], exc: BaseException) -> None:
        await self._dead_letter_raw([encode_prediction(r) for r in batch], exc)

    async def _dead_letter_raw(self, payloads: list[bytes], exc: BaseException) -> None:
        if self._dead is None:
            base = self._spool.path if self._spool is not None else self._s.spool_path
            path = f"{base}.rejected"
            self._dead = await asyncio.to_thread(Spool, path, 2**62)
        await asyncio.to_thread(self._dead.append, payloads)
        self.failed += len(payloads)
        _log.error(
            "%d prediction record(s) rejected by the store, kept in %s: %r",
            len(payloads),
            self._dead.path,
            exc,
        )

    async def _spool_leftovers(self) -> None:
        """After a timed-out drain: whatever is still in memory goes to the spool."""
        left = self._inflight + list(self._queue)
        self._inflight = []
        self._queue.clear()
        if left and self._spool is not None:
            try:
                await asyncio.to_thread(self._spool.append, [encode_prediction(r) for r in left])
                self.spooled += len(left)
            except (SpoolFull, OSError) as exc:
                self.dropped += len(left)
                _log.error(
                    "shutdown: %d prediction records lost, spool unavailable: %s", len(left), exc
                )
