"""Relay one HTTP exchange to the upstream and back, streaming both bodies.

What the upstream receives is what the client sent, less hop-by-hop headers and client-forged
gateway headers: the request-target byte for byte, repeated headers as separate lines in order,
bodies and Content-Encoding untouched. Failures before the upstream answered become 502/504 JSON
answers; failures after the response started abort the client connection, so a truncated body can
never look complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, istr
from yarl import URL

from config.gateway import LimitsSettings, ServerSettings, UpstreamSettings
from proxy.errors import json_error
from proxy.websocket import relay_websocket

# RFC 9110 §7.6.1 plus the de-facto ones; names listed in Connection are removed too.
HOP_BY_HOP = frozenset(
    istr(h)
    for h in (
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    )
)
GATEWAY_HEADER_PREFIX = "x-behaviorgate-"
# Set by the gateway from what it knows; a client's copy is never passed on as-is.
FORWARDED_HEADERS = frozenset(
    istr(h)
    for h in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip")
)
# The gateway already answered 100-continue itself, the upstream must not be asked again.
REQUEST_ONLY_DROPPED = frozenset({istr("expect"), istr("host"), istr("content-length")})
SMALL_BODY = 64 * 1024


class BodyTooLarge(Exception):
    """The client sent more body bytes than the configured limit."""


class SlowBody(Exception):
    """The client paused longer than the body read deadline."""


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _is_dropped(name: str, listed: set[str]) -> bool:
    lower = name.lower()
    return lower in HOP_BY_HOP or lower.startswith("proxy-") or lower in listed


def upstream_request_headers(
    raw_headers: Iterable[tuple[str, str]],
    *,
    forwarded: Mapping[str, str],
    extra: Mapping[str, str],
    preserve_host: bool,
    drop: frozenset[str] = frozenset(),
) -> CIMultiDict[str]:
    """Client headers as they go upstream, order and repetition kept, `drop` (lower-case) gone."""
    pairs = list(raw_headers)
    listed = _connection_tokens(pairs)
    out: CIMultiDict[str] = CIMultiDict()
    # aiohttp's client merges repeated names only when they are spelled alike ("n" then "N"
    # would leave one line), so every repeat is sent with its name's first spelling.
    spelling: dict[str, str] = {}
    for name, value in pairs:
        lower = name.lower()
        if (
            _is_dropped(lower, listed)
            or lower.startswith(GATEWAY_HEADER_PREFIX)
            or lower in FORWARDED_HEADERS
            or lower in REQUEST_ONLY_DROPPED
            or lower in drop
        ):
            continue
        out.add(spelling.setdefault(lower, name), value)
    if preserve_host:
        for name, value in pairs:
            if name.lower() == "host":
                out["Host"] = value
                break
    for name, value in forwarded.items():
        out[name] = value
    for name, value in extra.items():
        out[name] = value
    return out


def client_response_headers(raw_headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """Upstream response headers as they go to the client, order and repetition kept."""
    pairs = list(raw_headers)
    listed = _connection_tokens(pairs)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in pairs:
        if not _is_dropped(name, listed):
            out.add(name, value)
    return out


def _decode_raw(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    # aiohttp writes header lines as UTF-8, so UTF-8 is the decoding that round-trips exactly.
    # Requests whose header bytes are not UTF-8 are refused earlier (`header_problem`).
    return [
        (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for k, v in raw
    ]


def declared_length(request: web.BaseRequest) -> int | None:
    value = request.headers.get(hdrs.CONTENT_LENGTH)
    if value is None or not value.isdigit():
        return None
    return int(value)


class Forwarder:
    """Owns the pooled upstream client session; one per process."""

    def __init__(
        self, upstream: UpstreamSettings, limits: LimitsSettings, server: ServerSettings
    ) -> None:
        self._upstream = upstream
        self._limits = limits
        self._server = server
        url = URL(str(upstream.url))
        self._base = f"{url.scheme}://{url.raw_authority}"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._upstream.pool_size,
            limit_per_host=self._upstream.pool_size,
            ttl_dns_cache=60,
        )
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._upstream.connect_timeout,
            sock_connect=self._upstream.connect_timeout,
            sock_read=self._upstream.read_timeout,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def target_url(self, raw_path: str) -> URL:
        # encoded=True: yarl must not re-quote; the upstream sees the client's bytes.
        return URL(self._base + raw_path, encoded=True)

    async def _body(
        self, request: web.BaseRequest, failure: list[Exception]
    ) -> AsyncIterator[bytes]:
        # aiohttp wraps exceptions raised inside a body generator, so the cause is also
        # recorded in `failure` for `forward` to answer with the right status.
        limit = self._limits.max_body_bytes
        deadline = self._server.body_read_timeout
        seen = 0
        while True:
            try:
                chunk = await asyncio.wait_for(request.content.readany(), deadline)
            except TimeoutError:
                failure.append(SlowBody())
                raise failure[-1] from None
            if not chunk:
                return
            seen += len(chunk)
            if limit and seen > limit:
                failure.append(BodyTooLarge())
                raise failure[-1]
            yield chunk

    def _upstream_headers(
        self,
        request: web.BaseRequest,
        forwarded: Mapping[str, str],
        extra: Mapping[str, str],
        drop: frozenset[str],
    ) -> CIMultiDict[str]:
        return upstream_request_headers(
            _decode_raw(request.raw_headers),
            forwarded=forwarded,
            extra=extra,
            preserve_host=self._upstream.preserve_host,
            drop=drop,
        )

    async def forward_websocket(
        self,
        request: web.Request,
        *,
        forwarded: Mapping[str, str],
        extra_headers: Mapping[str, str],
        drop: frozenset[str] = frozenset(),
    ) -> web.StreamResponse:
        assert self._session is not None, "Forwarder.start() was not awaited"
        headers = self._upstream_headers(request, forwarded, extra_headers, drop)
        return await relay_websocket(
            request, self._session, self.target_url(request.raw_path), headers
        )

    async def forward(
        self,
        request: web.BaseRequest,
        *,
        forwarded: Mapping[str, str],
        extra_headers: Mapping[str, str],
        response_headers: Mapping[str, str] | None = None,
        drop: frozenset[str] = frozenset(),
    ) -> web.StreamResponse:
        assert self._session is not None, "Forwarder.start() was not awaited"
        headers = self._upstream_headers(request, forwarded, extra_headers, drop)
        length = declared_length(request)
        data = None
        failure: list[Exception] = []
        if request.body_exists:
            data = self._body(request, failure)
            if length is not None:
                headers[hdrs.CONTENT_LENGTH] = str(length)
        try:
            async with asyncio.timeout(self._upstream.total_timeout):
                upstream = await self._session.request(
                    request.method,
                    self.target_url(request.raw_path),
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    compress=None,
                    chunked=None,
                    read_until_eof=True,
                )
        except (TimeoutError, aiohttp.ClientError, OSError, BodyTooLarge, SlowBody) as exc:
            return self._failure_response(failure[0] if failure else exc)
        try:
            return await self._relay_response(request, upstream, response_headers)
        finally:
            upstream.release()

    @staticmethod
    def _failure_response(exc: BaseException) -> web.Response:
        if isinstance(exc, BodyTooLarge):
            return json_error(413, "request_too_large", "request body exceeds the configured limit")
        if isinstance(exc, SlowBody):
            return json_error(408, "request_timeout", "request body arrived too slowly")
        if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
            return json_error(504, "upstream_timeout", "the upstream did not answer in time")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return json_error(502, "upstream_unreachable", "the upstream refused the connection")
        return json_error(
            502,
            "upstream_bad_response",
            "the upstream dropped the connection or answered invalidly",
        )

    async def _relay_response(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        response_headers: Mapping[str, str] | None,
    ) -> web.StreamResponse:
        headers = client_response_headers(_decode_raw(upstream.raw_headers))
        if response_headers:
            headers.update(response_headers)
        bodyless = (
            request.method == "HEAD" or upstream.status in (204, 304) or upstream.status < 200
        )
        length = upstream.content_length
        if not bodyless and length is not None and length <= SMALL_BODY:
            # Small bodies go out in one write with their headers (one syscall, not three).
            try:
                body = await upstream.content.readexactly(length)
            except (aiohttp.ClientError, asyncio.IncompleteReadError, TimeoutError, OSError):
                return json_error(
                    502, "upstream_bad_response", "the upstream response was cut short"
                )
            small = web.Response(status=upstream.status, reason=upstream.reason, body=body)
            small.headers.extend(headers)
            return small
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(headers)
        await response.prepare(request)
        if bodyless:
            await response.write_eof()
            return response
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError):
            # Headers are gone already: cut the connection so the client sees a truncated message.
            upstream.close()
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response
