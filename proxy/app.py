"""Composition root: builds the aiohttp application and owns every long-lived resource."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import hdrs, web
from redis.asyncio import Redis

from config.settings import Settings
from proxy.api import setup_api
from proxy.errors import json_error, json_response
from proxy.forward import Forwarder, declared_length
from proxy.gctune import freeze_startup_heap
from proxy.identity import IdentityResolver
from proxy.lifecycle import LIFECYCLE, lifecycle_ctx
from proxy.metrics import Metrics
from proxy.models import ModelHolder
from proxy.notify import Notifier
from proxy.paths import PathPolicy
from proxy.pipeline import Pipeline, log_refused
from proxy.serverproto import install_header_deadline
from storage.history import HistoryStore
from storage.redis_conn import create_redis
from storage.store import Store, open_store
from storage.writer import PredictionWriter

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
HISTORY = web.AppKey("history", HistoryStore)
STORE = web.AppKey("store", Store)
WRITER = web.AppKey("writer", PredictionWriter)
MODELS = web.AppKey("models", ModelHolder)
PIPELINE = web.AppKey("pipeline", Pipeline)

_Stage = Callable[[web.Application], AsyncIterator[None]]


class StartupError(Exception):
    """A resource the gateway needs could not be opened; the message names which and why."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        name = type(cause).__name__
        super().__init__(f"{stage}: {name}: {detail}" if detail else f"{stage}: {name}")
        self.stage = stage


async def _close_stage(stage: str, steps: AsyncIterator[None]) -> None:
    """Run one stage's clean-up; its failure is logged so the other stages still close."""
    try:
        await anext(steps, None)
    except Exception as exc:
        structlog.get_logger("behaviorgate").error(
            "stage_close_failed", stage=stage, error=f"{type(exc).__name__}: {exc}"[:300]
        )


def _staged(stages: list[tuple[str, _Stage]]) -> _Stage:
    """One cleanup context running `stages` in order: a stage that fails to start unwinds the ones
    already started (in reverse) and fails start-up with a `StartupError` naming it, so the
    process exits instead of leaving sessions or store threads open."""

    async def gateway_ctx(app: web.Application) -> AsyncIterator[None]:
        stack = contextlib.AsyncExitStack()
        for stage, ctx in stages:
            steps = ctx(app)
            try:
                await anext(steps)
            except BaseException as exc:  # cancelled (SIGTERM while starting) unwinds too
                await stack.aclose()  # stages close alone: a failing close is logged, not raised
                if isinstance(exc, Exception):
                    raise StartupError(stage, exc) from exc
                raise
            # Resumed, not thrown into: the stage's own code after its `yield` is its clean-up,
            # as in aiohttp's cleanup contexts.
            stack.push_async_callback(_close_stage, stage, steps)
        try:
            yield
        finally:
            await stack.aclose()

    return gateway_ctx


_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


_RID_PREFIX = secrets.token_hex(8)
_rid_counter = itertools.count(1)


def request_id(request: web.BaseRequest) -> str:
    """The client's X-Request-ID when it is a sane token, otherwise a fresh one.

    Fresh ids are a random per-process prefix plus a counter: unique without a syscall per request.
    """
    incoming = request.headers.get("X-Request-ID")
    if incoming and _REQUEST_ID_OK.match(incoming):
        return incoming
    return f"{_RID_PREFIX}{next(_rid_counter):08x}"


def _utf8_headers(raw: tuple[tuple[bytes, bytes], ...]) -> bool:
    try:
        for _, value in raw:
            value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def header_problem(request: web.BaseRequest, settings: Settings) -> tuple[int, str, str] | None:
    """(status, code, message): 431 when headers are too many or too large, 413 when the
    declared body is too large, 400 for header bytes or framing that cannot be forwarded."""
    raw = request.raw_headers
    limits = settings.limits
    if len(raw) > limits.max_header_count:
        return (431, "headers_too_many", f"more than {limits.max_header_count} header lines")
    size = sum(len(k) + len(v) + 4 for k, v in raw)
    if not all(v.isascii() for _, v in raw) and not _utf8_headers(raw):
        # Forwarding re-encodes header lines as UTF-8: other bytes could not go upstream unchanged.
        return (400, "invalid_header_encoding", "header values must be ASCII or UTF-8")
    if size > limits.max_header_bytes:
        return (431, "headers_too_large", f"request headers exceed {limits.max_header_bytes} bytes")
    length = declared_length(request)
    if length is not None and limits.max_body_bytes and length > limits.max_body_bytes:
        return (413, "request_too_large", f"request body exceeds {limits.max_body_bytes} bytes")
    if (
        request.headers.getall(hdrs.CONTENT_LENGTH, [])
        and len(set(request.headers.getall(hdrs.CONTENT_LENGTH))) > 1
    ):
        return (400, "bad_framing", "conflicting Content-Length headers")
    return None


class Gateway:
    """The catch-all handler: gateway endpoints, then limits, then the scoring pipeline."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._internal = settings.server.internal_prefix
        self.pipeline: Pipeline | None = None
        self.ready = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == self._internal or path.startswith(self._internal + "/"):
            return await self.internal(request, path[len(self._internal) :])
        problem = header_problem(request, self.settings)
        if problem is not None:
            status, code, message = problem
            started = time.perf_counter()
            peer = request.remote or ""
            ip = self.pipeline.identity.client_ip(peer, request.headers) if self.pipeline else peer
            log_refused(
                self.settings, request, request_id(request), status, code, started, client_ip=ip
            )
            return json_error(status, code, message)
        if self.pipeline is None:
            return json_error(503, "starting", "the gateway is starting")
        return await self.pipeline.handle(request, request_id(request))

    async def internal(self, request: web.Request, sub: str) -> web.Response:
        if sub == "/healthz":
            return json_response(200, {"status": "ok", "pid": os.getpid()})
        if sub == "/readyz":
            status = 200 if self.ready else 503
            return json_response(status, {"ready": self.ready})
        return json_error(404, "not_found", "no such gateway endpoint")


async def _expect_handler(request: web.Request) -> web.StreamResponse | None:
    """Refuse an oversize upload before the client sends it (413 instead of 100 Continue)."""
    settings = request.app[SETTINGS]
    length = declared_length(request)
    limit = settings.limits.max_body_bytes
    if length is not None and limit and length > limit:
        return json_error(413, "request_too_large", f"request body exceeds {limit} bytes")
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        return json_error(417, "expectation_failed", "only 'Expect: 100-continue' is supported")
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


def create_app(settings: Settings, *, redis: Redis | None = None) -> web.Application:
    """The gateway application; every resource opens in `cleanup_ctx` order and closes in reverse.

    `redis` lets tests and the demo share one embedded store between several components.
    """
    app = web.Application(client_max_size=0, handler_args={"auto_decompress": False})
    app[SETTINGS] = settings
    gateway = Gateway(settings)
    metrics = Metrics()
    app[METRICS] = metrics
    # Built now so that bad key material or rules fail start-up, not the first request.
    policy = PathPolicy(settings.policy)
    resolver = IdentityResolver(settings.identity)
    if not resolver.verifies_tokens:
        structlog.get_logger("behaviorgate").warning(
            "no_jwt_key",
            detail="no JWT key configured (identity.jwt.*, BEHAVIORGATE_JWT_SECRET): bearer tokens"
            " are ignored and traffic is identified by client IP + user agent",
        )
    forwarder = Forwarder(settings.upstream, settings.limits, settings.server)
    notifier = Notifier(settings.enforcement.notify)

    async def upstream_ctx(_: web.Application) -> AsyncIterator[None]:
        await forwarder.start()
        yield
        await forwarder.close()

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            client = redis
            if client is None:
                client = create_redis(settings.redis.url, socket_timeout=settings.redis.timeout)
                stack.push_async_callback(client.aclose)
            history = HistoryStore(client, settings.history)
            await history.load_scripts()
            app[HISTORY] = history
            stack.push_async_callback(history.drain)
            yield

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            store = await open_store(settings.database)
            stack.push_async_callback(store.close)
            app[STORE] = store
            writer_settings = settings.writer
            worker = os.environ.get("BEHAVIORGATE_WORKER_INDEX")
            if worker is not None:  # one spool per worker process: a spool has exactly one writer
                writer_settings = writer_settings.model_copy(
                    update={"spool_path": f"{writer_settings.spool_path}.w{int(worker)}"}
                )
            writer = PredictionWriter(store, writer_settings)
            await writer.start()
            stack.push_async_callback(writer.close)
            app[WRITER] = writer
            metrics.gauge_from(
                "behaviorgate_writer_queue_depth",
                "Records waiting for the database.",
                lambda: writer.queue_depth,
            )
            metrics.gauge_from(
                "behaviorgate_writer_spool_bytes",
                "Bytes in the local spool.",
                lambda: writer.spool_bytes,
            )
            metrics.gauge_from(
                "behaviorgate_writer_dropped_total",
                "Records refused (queue and spool full).",
                lambda: writer.dropped,
            )
            holder = ModelHolder(store.registry, settings.database.registry_poll_interval)
            await holder.start()
            stack.push_async_callback(holder.close)
            app[MODELS] = holder
            metrics.gauge_from(
                "behaviorgate_active_model_version",
                "Active model version (0 = learning).",
                lambda: holder.version or 0,
            )
            yield

    async def pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
        await notifier.start()
        pipeline = Pipeline(
            settings,
            forwarder=forwarder,
            policy=policy,
            identity=resolver,
            history=app[HISTORY],
            models=app[MODELS],
            writer=app[WRITER],
            store=app[STORE],
            notifier=notifier,
            metrics=metrics,
        )
        app[PIPELINE] = pipeline
        lifecycle = app[LIFECYCLE]
        metrics.gauge_from(
            "behaviorgate_drift_score",
            "Latest overall drift score seen by this replica (0 before the first check).",
            lambda: lifecycle.status()["driftMetrics"]["driftScore"] or 0.0,
        )
        gateway.pipeline = pipeline
        if settings.server.gc_freeze:
            freeze_startup_heap()
        gateway.ready = True
        yield
        gateway.ready = False
        await pipeline.drain()
        await notifier.close()

    app.cleanup_ctx.append(
        _staged(
            [
                ("upstream client", upstream_ctx),
                ("redis", redis_ctx),
                ("database", store_ctx),
                ("model lifecycle", lifecycle_ctx),
                ("pipeline", pipeline_ctx),
            ]
        )
    )
    setup_api(app)
    app.router.add_route("*", "/{tail:.*}", gateway.handle, expect_handler=_expect_handler)
    install_header_deadline(app, settings.server.header_read_timeout)
    return app


def server_options(settings: Settings) -> dict[str, int | float | bool]:
    """Options for aiohttp's request parser and protocol, shared by the CLI and the tests.

    The parser's own caps sit just above ours so that an oversize request reaches
    `header_problem` and gets a JSON 431 instead of aiohttp's plain-text 400.
    """
    cap = max(2 * settings.limits.max_header_bytes, 8190)
    return {
        "max_field_size": cap,
        "max_line_size": cap,
        "max_headers": max(2 * settings.limits.max_header_count, 128),
        "handler_cancellation": True,
        "keepalive_timeout": settings.server.keepalive_timeout,
    }
