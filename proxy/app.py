"""Composition root: builds the aiohttp application and owns every long-lived resource."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import hdrs, web

from config.settings import Settings
from proxy.errors import json_error, json_response
from proxy.forward import Forwarder, declared_length
from proxy.websocket import is_websocket_upgrade

log = structlog.get_logger("behaviorgate")

SETTINGS = web.AppKey("settings", Settings)
FORWARDER = web.AppKey("forwarder", Forwarder)

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


def header_problem(request: web.BaseRequest, settings: Settings) -> web.Response | None:
    """431 when headers are too many or too large; 413 when the declared body is too large."""
    raw = request.raw_headers
    limits = settings.limits
    if len(raw) > limits.max_header_count:
        return json_error(431, "headers_too_many", f"more than {limits.max_header_count} header lines")
    size = sum(len(k) + len(v) + 4 for k, v in raw)
    if size > limits.max_header_bytes:
        return json_error(431, "headers_too_large", f"request headers exceed {limits.max_header_bytes} bytes")
    length = declared_length(request)
    if length is not None and limits.max_body_bytes and length > limits.max_body_bytes:
        return json_error(413, "request_too_large", f"request body exceeds {limits.max_body_bytes} bytes")
    if request.headers.getall(hdrs.CONTENT_LENGTH, []) and len(set(request.headers.getall(hdrs.CONTENT_LENGTH))) > 1:
        return json_error(400, "bad_framing", "conflicting Content-Length headers")
    return None


class Gateway:
    """The request handler; one instance per process, built from frozen settings."""

    def __init__(self, settings: Settings, forwarder: Forwarder) -> None:
        self.settings = settings
        self.forwarder = forwarder
        self._internal = settings.server.internal_prefix
        self.ready = False

    def forwarded_headers(self, request: web.BaseRequest, client_ip: str) -> dict[str, str]:
        if not self.settings.forwarding.set_x_forwarded:
            return {}
        return {
            "X-Forwarded-For": client_ip,
            "X-Forwarded-Proto": request.scheme,
            "X-Forwarded-Host": request.headers.get(hdrs.HOST, ""),
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request_id(request)
        path = request.path
        if path == self._internal or path.startswith(self._internal + "/"):
            return await self.internal(request, path[len(self._internal):])
        problem = header_problem(request, self.settings)
        if problem is not None:
            return problem
        peer = request.remote or ""
        if is_websocket_upgrade(request):
            return await self.forwarder.forward_websocket(
                request, forwarded=self.forwarded_headers(request, peer), extra_headers={"X-Request-ID": rid}
            )
        response = await self.forwarder.forward(
            request,
            forwarded=self.forwarded_headers(request, peer),
            extra_headers={"X-Request-ID": rid},
        )
        if self.settings.logging.access_log:
            log.info(
                "request",
                request_id=rid,
                method=request.method,
                path=request.raw_path[:512],
                status=response.status,
                client_ip=peer,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
            )
        return response

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


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=0, handler_args={"auto_decompress": False})
    app[SETTINGS] = settings
    forwarder = Forwarder(settings.upstream, settings.limits, settings.server)
    app[FORWARDER] = forwarder
    gateway = Gateway(settings, forwarder)

    async def resources(_: web.Application) -> AsyncIterator[None]:
        await forwarder.start()
        gateway.ready = True
        yield
        gateway.ready = False
        await forwarder.close()

    app.cleanup_ctx.append(resources)
    app.router.add_route("*", "/{tail:.*}", gateway.handle, expect_handler=_expect_handler)
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
