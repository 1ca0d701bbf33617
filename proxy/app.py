"""Composition root: builds the aiohttp application and owns every long-lived resource."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import traceback
from collections.abc import AsyncIterator

import structlog
from aiohttp import hdrs, web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server
from redis.asyncio import Redis

from config.settings import Settings
from proxy.api import setup_api
from proxy.errors import json_error, json_response
from proxy.forward import Forwarder, declared_length
from proxy.identity import IdentityResolver
from proxy.lifecycle import lifecycle_ctx
from proxy.metrics import Metrics
from proxy.models import ModelHolder
from proxy.notify import Notifier
from proxy.paths import PathPolicy
from proxy.pipeline import Pipeline
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

_log = structlog.get_logger("behaviorgate")
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


def header_problem(request: web.BaseRequest, settings: Settings) -> web.Response | None:
    """431 when headers are too many or too large; 413 when the declared body is too large."""
    raw = request.raw_headers
    limits = settings.limits
    if len(raw) > limits.max_header_count:
        return json_error(
            431, "headers_too_many", f"more than {limits.max_header_count} header lines"
        )
    size = sum(len(k) + len(v) + 4 for k, v in raw)
    if not all(v.isascii() for _, v in raw) and not _utf8_headers(raw):
        # Forwarding re-encodes header lines as UTF-8: other bytes could not go upstream unchanged.
        return json_error(400, "invalid_header_encoding", "header values must be ASCII or UTF-8")
    if size > limits.max_header_bytes:
        return json_error(
            431, "headers_too_large", f"request headers exceed {limits.max_header_bytes} bytes"
        )
    length = declared_length(request)
    if length is not None and limits.max_body_bytes and length > limits.max_body_bytes:
        return json_error(
            413, "request_too_large", f"request body exceeds {limits.max_body_bytes} bytes"
        )
    if (
        request.headers.getall(hdrs.CONTENT_LENGTH, [])
        and len(set(request.headers.getall(hdrs.CONTENT_LENGTH))) > 1
    ):
        return json_error(400, "bad_framing", "conflicting Content-Length headers")
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
            return problem
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
    forwarder = Forwarder(settings.upstream, settings.limits, settings.server)
    notifier = Notifier(settings.enforcement.notify)

    async def upstream_ctx(_: web.Application) -> AsyncIterator[None]:
        await forwarder.start()
        yield
        await forwarder.close()

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        client = redis if redis is not None else create_redis(settings.redis.url)
        history = HistoryStore(client, settings.history)
        await history.load_scripts()
        app[HISTORY] = history
        yield
        await history.drain()
        if redis is None:
            await client.aclose()

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        store = await open_store(settings.database)
        app[STORE] = store
        writer_settings = settings.writer
        worker = os.environ.get("BEHAVIORGATE_WORKER_INDEX")
        if worker is not None:  # one spool per worker process: a spool has exactly one writer
            writer_settings = writer_settings.model_copy(
                update={"spool_path": f"{writer_settings.spool_path}.w{int(worker)}"}
            )
        writer = PredictionWriter(store, writer_settings)
        await writer.start()
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
        app[MODELS] = holder
        metrics.gauge_from(
            "behaviorgate_active_model_version",
            "Active model version (0 = learning).",
            lambda: holder.version or 0,
        )
        yield
        await holder.close()
        await writer.close()
        await store.close()

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
        gateway.pipeline = pipeline
        gateway.ready = True
        yield
        gateway.ready = False
        await pipeline.drain()
        await notifier.close()

    app.cleanup_ctx.extend([upstream_ctx, redis_ctx, store_ctx, lifecycle_ctx, pipeline_ctx])
    setup_api(app)
    app.router.add_route("*", "/{tail:.*}", gateway.handle, expect_handler=_expect_handler)
    _install_header_deadline(app, settings.server.header_read_timeout)
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


# -- header read deadline --------------------------------------------------------------------------
# aiohttp bounds an idle connection (keepalive_timeout) but not a client that trickles its request
# head one byte at a time. The handler below arms one timer when a connection opens, or when bytes
# of a new request arrive on an idle keep-alive connection, and cancels it once the parser has a
# whole request head. A request whose head arrives in one read never creates a timer at all.

_HEADER_TIMEOUT_BODY = (
    b'{"success":false,"error":{"code":"header_timeout",'
    b'"message":"request headers arrived too slowly"}}'
)
_HEADER_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
    % (len(_HEADER_TIMEOUT_BODY), _HEADER_TIMEOUT_BODY)
)


class HeaderDeadlineHandler(RequestHandler):
    """aiohttp's protocol plus a deadline on each request head, and JSON for parse errors."""

    __slots__ = ("_header_timeout", "_header_timer", "_header_bytes")

    def __init__(self, manager: Server, *, header_read_timeout: float, **kwargs: object) -> None:
        super().__init__(manager, **kwargs)  # type: ignore[arg-type]
        self._header_timeout = header_read_timeout
        self._header_timer: object | None = None
        self._header_bytes = False

    def connection_made(self, transport: object) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        idle = not (self._request_in_progress or self._messages or self._upgraded)
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._cancel_header_timer()
        elif idle and data:
            if self._header_timer is None:
                self._arm_header_timer()
            self._header_bytes = True

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's own answers (malformed requests) in the gateway's JSON shape.

        aiohttp's version logs the parser's message, which quotes the offending header line
        (a bearer token, a cookie): only the error's type and where it was raised are logged here.
        """
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot answer the error")
        frame = exc.__traceback__ and traceback.extract_tb(exc.__traceback__)[-1]
        _log.warning(
            "request_refused" if status < 500 else "handler_failed",
            status=status,
            error=type(exc).__name__ if exc else None,
            where=f"{frame.filename}:{frame.lineno}" if frame else None,
            client_ip=request.remote,
        )
        if isinstance(exc, LineTooLong):  # beyond the parser cap (server_options)
            response = json_error(431, "line_too_long", "a request or header line is too long")
        elif status < 500:
            response = json_error(status, "bad_request", "malformed HTTP request")
        else:
            response = json_error(status, "internal_error", "the gateway could not answer")
        response.force_close()
        return response

    def _arm_header_timer(self) -> None:
        self._header_bytes = False
        self._header_timer = self._loop.call_later(self._header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        timer, self._header_timer = self._header_timer, None
        if timer is not None:
            timer.cancel()  # type: ignore[attr-defined]

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self._request_in_progress or self._messages or self.transport is None:
            return
        if self._header_bytes:  # a started request gets an answer; an unused connection just closes
            self.transport.write(_HEADER_TIMEOUT_RESPONSE)
        self.force_close()


class HeaderDeadlineServer(Server):
    """aiohttp's low-level server, building `HeaderDeadlineHandler` protocols."""

    def __init__(self, *args: object, header_read_timeout: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._header_timeout = header_read_timeout

    def __call__(self) -> RequestHandler:
        return HeaderDeadlineHandler(
            self, loop=self._loop, header_read_timeout=self._header_timeout, **self._kwargs
        )


def _install_header_deadline(app: web.Application, timeout: float) -> None:
    """Make every runner of `app` (run_app, AppRunner, test servers) use the deadline protocol."""
    make_server = app._make_handler

    def make_handler(**kwargs: object) -> Server:
        base = make_server(**kwargs)  # type: ignore[arg-type]
        return HeaderDeadlineServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            header_read_timeout=timeout,
            **base._kwargs,
        )

    object.__setattr__(app, "_make_handler", make_handler)
