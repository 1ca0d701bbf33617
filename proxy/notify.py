"""Signed webhook delivery with retries, off the request path.

Each delivery is a JSON POST with `X-BehaviorGate-Signature: t=<unix>,v1=<hex>`, where
hex = HMAC-SHA256(secret, f"{t}.{body}"). Receivers recompute it and reject stale timestamps,
so a captured notification cannot be replayed later.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog

from config.enforcement import NotifySettings, WebhookSettings

log = structlog.get_logger("behaviorgate.notify")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: str, header: str, body: bytes, *, now: float | None = None, tolerance: float = 300
) -> bool:
    """What a receiver does; used by the tests and offered to integrators."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), f"t={ts},v1={parts.get('v1', '')}")


@dataclass(slots=True)
class _Delivery:
    hook: WebhookSettings
    event: str
    body: bytes
    attempt: int = 0


class Notifier:
    def __init__(self, settings: NotifySettings) -> None:
        self._settings = settings
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(maxsize=settings.queue_max)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.failed = 0

    async def start(self) -> None:
        if not self._settings.webhooks:
            return
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout_seconds)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._task = asyncio.create_task(self._run(), name="behaviorgate-notifier")

    async def close(self) -> None:
        for task in [self._task, *self._retries]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._session is not None:
            await self._session.close()

    def notify(self, event: str, payload: dict[str, Any]) -> None:
        """Queue a notification for every webhook subscribed to `event`; never blocks."""
        body = orjson.dumps({"event": event, "sentAt": time.time(), **payload})
        for hook in self._settings.webhooks:
            if event not in hook.events:
                continue
            try:
                self._queue.put_nowait(_Delivery(hook, event, body))
            except asyncio.QueueFull:
                self.failed += 1
                log.error("webhook_queue_full", kind=event, url=str(hook.url))

    async def _run(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._attempt(delivery)
            except Exception:  # a bug in one delivery must not stop all the others
                log.exception("webhook_delivery_crashed", kind=delivery.event)

    async def _attempt(self, d: _Delivery) -> None:
        assert self._session is not None
        d.attempt += 1
        headers = {
            "Content-Type": "application/json",
            "X-BehaviorGate-Event": d.event,
            "X-BehaviorGate-Signature": sign(d.hook.secret, int(time.time()), d.body),
        }
        try:
            async with self._session.post(str(d.hook.url), data=d.body, headers=headers) as resp:
                ok = 200 <= resp.status < 300
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok, status = False, type(exc).__name__
        if ok:
            self.delivered += 1
            return
        if d.attempt >= self._settings.max_attempts:
            self.failed += 1
            log.error(
                "webhook_gave_up",
                kind=d.event,
                url=str(d.hook.url),
                attempts=d.attempt,
                last=status,
            )
            return
        delay = min(
            self._settings.backoff_initial_seconds * 2 ** (d.attempt - 1),
            self._settings.backoff_max_seconds,
        )
        log.warning(
            "webhook_retry",
            kind=d.event,
            url=str(d.hook.url),
            attempt=d.attempt,
            delay=delay,
            last=status,
        )
        task = asyncio.create_task(self._later(d, delay))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _later(self, d: _Delivery, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._attempt(d)
