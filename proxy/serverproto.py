"""The gateway's HTTP protocol: aiohttp's, plus a deadline on each request head and JSON errors.

aiohttp bounds an idle connection (keepalive_timeout) but not a client that trickles its request
head one byte at a time. The handler below arms one timer when a connection opens, or when bytes
of a new request arrive on an idle keep-alive connection, and cancels it once the parser has a
whole request head. A request whose head arrives in one read never creates a timer at all.

This reaches into private attributes of aiohttp's RequestHandler/Server (checked against aiohttp
3.14); tests/test_hardening_input.py exercises it and must be re-run on every aiohttp upgrade.
"""

from __future__ import annotations

import traceback

import structlog
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from proxy.errors import json_error

_log = structlog.get_logger("behaviorgate")

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
        if isinstance(exc, LineTooLong):  # beyond the parser cap (server_options)
            response = json_error(431, "line_too_long", "a request or header line is too long")
        elif status < 500:
            response = json_error(status, "bad_request", "malformed HTTP request")
        else:
            response = json_error(status, "internal_error", "the gateway could not answer")
        _log.warning(
            "request_refused" if status < 500 else "handler_failed",
            status=response.status,
            error=type(exc).__name__ if exc else None,
            where=f"{frame.filename}:{frame.lineno}" if frame else None,
            client_ip=request.remote,
        )
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


def install_header_deadline(app: web.Application, timeout: float) -> None:
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
