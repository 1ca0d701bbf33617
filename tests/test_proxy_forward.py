"""Forwarding on real sockets: what the upstream receives and what the client gets back."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.app import METRICS, create_app, server_options
from tests.proxyharness import RecordingUpstream, gateway_settings, raw_exchange, read_response


@pytest.fixture
async def upstream(aiohttp_server):
    rec = RecordingUpstream()
    server = await aiohttp_server(rec.app())
    rec.port = server.port  # type: ignore[attr-defined]
    return rec


@pytest.fixture
def gateway(aiohttp_server, upstream, tmp_path):
    async def make(upstream_port: int | None = None, **overrides):
        settings = gateway_settings(upstream_port or upstream.port, str(tmp_path), **overrides)
        opts = server_options(settings)
        opts.pop("handler_cancellation")
        return await aiohttp_server(create_app(settings), **opts)

    return make


def req(target: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: gw.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def test_request_target_goes_upstream_byte_for_byte(upstream, gateway):
    gw = await gateway()
    target = "/a%2Fb/%25x/./y//z;p=1?b=2&a=1&a=0&c=+&d=%2B&e"
    resp = await raw_exchange(gw.port, req(target))
    assert resp.status == 200
    assert upstream.seen[-1].raw_path == target


async def test_repeated_headers_spelled_differently_all_arrive(upstream, gateway):
    """aiohttp's client would collapse "n" and "N" into one line; all three must arrive."""
    gw = await gateway()
    await raw_exchange(gw.port, req("/h", "n: 0", "N: 0", "n: 1"))
    got = [(k.lower(), v) for k, v in upstream.seen[-1].raw_headers if k.lower() == b"n"]
    assert got == [(b"n", b"0"), (b"n", b"0"), (b"n", b"1")]


async def test_repeated_request_headers_keep_order_and_lines(upstream, gateway):
    gw = await gateway()
    await raw_exchange(
        gw.port, req("/h", "X-Multi: one", "Accept: a", "X-Multi: two", "X-Multi: three")
    )
    assert upstream.seen[-1].header_values("X-Multi") == ["one", "two", "three"]


async def test_repeated_response_headers_reach_client_as_separate_lines(upstream, gateway):
    async def cookies(_: web.Request, __) -> web.StreamResponse:
        resp = web.Response(text="c")
        resp.headers.add("Set-Cookie", "a=1; Path=/")
        resp.headers.add("Set-Cookie", "b=2; Path=/, c=3")
        resp.headers.add("Vary", "Accept")
        return resp

    upstream.behaviour = cookies
    gw = await gateway()
    resp = await raw_exchange(gw.port, req("/c"))
    assert resp.all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/, c=3"]


async def test_hop_by_hop_and_connection_listed_headers_are_removed(upstream, gateway):
    gw = await gateway()
    await raw_exchange(
        gw.port,
        req(
            "/hop",
            "Connection: keep-alive, X-Secret-Hop",
            "X-Secret-Hop: 1",
            "Keep-Alive: timeout=5",
            "TE: trailers",
            "Trailer: X-T",
            "Upgrade: h2c",
            "Proxy-Authorization: Basic Zm9vOmJhcg==",
            "Proxy-Foo: x",
            "X-Kept: yes",
        ),
    )
    seen = upstream.seen[-1]
    for name in (
        "X-Secret-Hop",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Upgrade",
        "Proxy-Authorization",
        "Proxy-Foo",
    ):
        assert seen.header_values(name) == [], name
    assert seen.header_values("X-Kept") == ["yes"]


async def test_response_hop_by_hop_headers_are_removed(upstream, gateway):
    async def hop(_: web.Request, __) -> web.StreamResponse:
        return web.Response(
            text="x",
            headers={"Keep-Alive": "timeout=1", "Connection": "X-Up", "X-Up": "1", "X-Ok": "1"},
        )

    upstream.behaviour = hop
    gw = await gateway()
    resp = await raw_exchange(gw.port, req("/r"))
    assert resp.header("Keep-Alive") is None and resp.header("X-Up") is None
    assert resp.header("X-Ok") == "1"


async def test_client_gateway_headers_are_stripped_and_forwarded_for_is_ours(upstream, gateway):
    gw = await gateway()
    await raw_exchange(
        gw.port,
        req(
            "/x",
            "X-BehaviorGate-Decision: ALLOW",
            "x-behaviorgate-score: 0",
            "X-Forwarded-For: 6.6.6.6",
            "X-Real-IP: 6.6.6.6",
            "Forwarded: for=6.6.6.6",
            "X-Forwarded-Proto: https",
        ),
    )
    seen = upstream.seen[-1]
    # No model yet: the gateway's own decision (LEARNING), no score; the client's copies are gone.
    assert seen.header_values("X-BehaviorGate-Score") == []
    assert seen.header_values("X-BehaviorGate-Decision") == ["LEARNING"]
    assert seen.header_values("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.header_values("X-Forwarded-Proto") == ["http"]
    assert seen.header_values("X-Forwarded-Host") == ["gw.test"]
    assert seen.header_values("X-Real-IP") == [] and seen.header_values("Forwarded") == []


async def test_request_id_is_kept_or_generated(upstream, gateway):
    gw = await gateway()
    await raw_exchange(gw.port, req("/r", "X-Request-ID: abc-123"))
    assert upstream.seen[-1].header_values("X-Request-ID") == ["abc-123"]
    await raw_exchange(gw.port, req("/r", "X-Request-ID: <script>"))
    generated = upstream.seen[-1].header_values("X-Request-ID")
    assert len(generated) == 1 and generated[0] != "<script>" and len(generated[0]) == 24


async def test_content_encoding_passes_through_untouched(upstream, gateway):
    payload = gzip.compress(b"hello " * 1000)

    async def gz(_: web.Request, __) -> web.StreamResponse:
        return web.Response(
            body=payload, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        )

    upstream.behaviour = gz
    gw = await gateway()
    resp = await raw_exchange(gw.port, req("/gz", "Accept-Encoding: gzip"))
    assert resp.header("Content-Encoding") == "gzip"
    assert resp.body == payload
    # and a gzip request body is not inflated on the way up
    body = gzip.compress(b'{"a": 1}')
    await raw_exchange(
        gw.port,
        req(
            "/up",
            "Content-Encoding: gzip",
            f"Content-Length: {len(body)}",
            method="POST",
            body=body,
        ),
    )
    assert upstream.seen[-1].body == body
    assert upstream.seen[-1].header_values("Accept-Encoding") == []


async def test_chunked_request_body_forwarded_with_one_framing(upstream, gateway):
    gw = await gateway()
    chunks = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    resp = await raw_exchange(
        gw.port, req("/u", "Transfer-Encoding: chunked", method="POST", body=chunks)
    )
    assert resp.status == 200
    seen = upstream.seen[-1]
    assert seen.body == b"hello world"
    framing = seen.header_values("Transfer-Encoding") + seen.header_values("Content-Length")
    assert len(framing) == 1


async def test_download_is_streamed_not_buffered(upstream, gateway):
    release = asyncio.Event()

    async def slow_stream(request: web.Request, __) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first-chunk")
        await asyncio.wait_for(release.wait(), 10)
        await resp.write(b"second-chunk")
        await resp.write_eof()
        return resp

    upstream.behaviour = slow_stream
    gw = await gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(req("/stream"))
    await reader.readuntil(b"\r\n\r\n")
    # The first chunk arrives while the upstream is still holding the rest back.
    first = await asyncio.wait_for(reader.readuntil(b"first-chunk"), 5)
    assert first.endswith(b"first-chunk")
    release.set()
    rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    assert b"second-chunk" in rest
    writer.close()


async def test_upload_is_streamed_not_buffered(upstream, gateway):
    got_first = asyncio.Event()

    async def reader_app(request: web.Request, __) -> web.StreamResponse:
        first = await request.content.readexactly(5)
        got_first.set()
        rest = await request.content.read()
        return web.Response(text=(first + rest).decode())

    upstream.read_body = False
    upstream.behaviour = reader_app
    gw = await gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(req("/up", "Content-Length: 10", method="POST", body=b"12345"))
    await writer.drain()
    # The upstream sees the first half before the client has sent the second.
    await asyncio.wait_for(got_first.wait(), 5)
    writer.write(b"67890")
    await writer.drain()
    resp = await asyncio.wait_for(read_response(reader), 5)
    assert resp.body == b"1234567890"
    writer.close()


@pytest.mark.parametrize("status", [204, 304])
async def test_bodyless_statuses_keep_connection_alive(upstream, gateway, status):
    async def empty(_: web.Request, __) -> web.StreamResponse:
        return web.Response(status=status)

    upstream.behaviour = empty
    gw = await gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    for _ in range(2):
        writer.write(req("/e"))
        resp = await asyncio.wait_for(read_response(reader), 5)
        assert resp.status == status and resp.body == b""
        assert resp.header("Transfer-Encoding") is None
    writer.close()


async def test_head_has_no_body_and_keeps_alive(upstream, gateway):
    async def sized(request: web.Request, __) -> web.StreamResponse:
        return web.Response(body=b"x" * 100)

    upstream.behaviour = sized
    gw = await gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(req("/h", method="HEAD"))
    head = await asyncio.wait_for(read_response(reader, head_request=True), 5)
    assert head.status == 200 and head.header("Content-Length") == "100"
    writer.write(req("/h"))
    resp = await asyncio.wait_for(read_response(reader), 5)
    assert resp.body == b"x" * 100  # the HEAD left no stray bytes on the connection
    writer.close()


async def test_expect_100_continue(upstream, gateway):
    gw = await gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(req("/e", "Content-Length: 4", "Expect: 100-continue", method="PUT"))
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(b"data")
    resp = await asyncio.wait_for(read_response(reader), 5)
    assert resp.status == 200 and upstream.seen[-1].body == b"data"
    assert upstream.seen[-1].header_values("Expect") == []
    writer.close()


async def test_oversize_body_refused_from_headers_before_reading(upstream, gateway):
    gw = await gateway(limits={"max_body_bytes": 1000})
    resp = await raw_exchange(
        gw.port, req("/big", "Content-Length: 1001", "Expect: 100-continue", method="POST")
    )
    assert resp.status == 413 and not resp.head.startswith(b"HTTP/1.1 100")
    assert json.loads(resp.body)["error"]["code"] == "request_too_large"
    resp = await raw_exchange(gw.port, req("/big", "Content-Length: 5000", method="POST"))
    assert resp.status == 413
    assert upstream.seen == []


async def test_oversize_chunked_body_is_cut_at_the_limit(upstream, gateway):
    gw = await gateway(limits={"max_body_bytes": 1000})
    body = b"".join(b"%x\r\n%s\r\n" % (500, b"a" * 500) for _ in range(4)) + b"0\r\n\r\n"
    resp = await raw_exchange(
        gw.port, req("/big", "Transfer-Encoding: chunked", method="POST", body=body)
    )
    assert resp.status == 413
    assert all(len(s.body) <= 1000 for s in upstream.seen)


async def test_too_many_or_too_large_headers_get_431(upstream, gateway):
    gw = await gateway(limits={"max_header_count": 20, "max_header_bytes": 2048})
    many = [f"X-H{i}: v" for i in range(30)]
    resp = await raw_exchange(gw.port, req("/h", *many))
    assert resp.status == 431
    resp = await raw_exchange(gw.port, req("/h", "X-Big: " + "a" * 3000))
    assert resp.status == 431
    assert json.loads(resp.body)["error"]["code"] == "headers_too_large"
    assert upstream.seen == []


async def test_upstream_refused_is_502_json(gateway, unused_tcp_port):
    gw = await gateway(upstream_port=unused_tcp_port)
    resp = await raw_exchange(gw.port, req("/x"))
    assert resp.status == 502
    assert json.loads(resp.body)["error"]["code"] == "upstream_unreachable"


async def test_upstream_timeout_is_504_json(upstream, gateway):
    async def stall(_: web.Request, __) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(text="late")

    upstream.behaviour = stall
    gw = await gateway(upstream={"read_timeout": 0.3})
    resp = await raw_exchange(gw.port, req("/slow"))
    assert resp.status == 504
    assert json.loads(resp.body)["error"]["code"] == "upstream_timeout"


async def test_upstream_garbage_is_502_json(gateway):
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await gateway(upstream_port=port)
        resp = await raw_exchange(gw.port, req("/g"))
        assert resp.status == 502
        assert "Traceback" not in resp.body.decode()
    finally:
        server.close()


@pytest.mark.parametrize("declared", [100, 1_000_000])
async def test_upstream_reset_mid_body_is_never_a_complete_answer(gateway, declared):
    """A small body is read whole first (→ 502); a streamed one cuts the client connection."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\npartial" % declared)
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await gateway(upstream_port=port)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(req("/r"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if declared == 100:
            assert head.startswith(b"HTTP/1.1 502")
        else:
            assert b"Content-Length: 1000000" in head
            rest = await asyncio.wait_for(reader.read(), 5)  # EOF long before the declared length
            assert len(rest) < declared
        writer.close()
    finally:
        server.close()


async def test_client_disconnect_mid_download_releases_upstream(upstream, gateway):
    upstream_done = asyncio.Event()

    async def endless(request: web.Request, __) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            for _ in range(10_000):
                await resp.write(b"x" * 65536)
                await asyncio.sleep(0.001)
        except (ConnectionError, asyncio.CancelledError):
            upstream_done.set()
            raise
        return resp

    upstream.behaviour = endless
    gw = await gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(req("/endless"))
    await reader.readexactly(100_000)
    writer.transport.abort()
    await asyncio.wait_for(upstream_done.wait(), 10)


async def test_gateway_endpoints_are_answered_not_forwarded(upstream, gateway):
    gw = await gateway()
    resp = await raw_exchange(gw.port, req("/_behaviorgate/healthz"))
    assert resp.status == 200 and json.loads(resp.body)["status"] == "ok"
    resp = await raw_exchange(gw.port, req("/_behaviorgate/readyz"))
    assert resp.status == 200
    resp = await raw_exchange(gw.port, req("/_behaviorgate/other"))
    assert resp.status == 404
    assert upstream.seen == []


async def test_conflicting_framing_is_refused(upstream, gateway):
    gw = await gateway()
    both = req(
        "/s", "Content-Length: 5", "Transfer-Encoding: chunked", method="POST", body=b"0\r\n\r\n"
    )
    resp = await raw_exchange(gw.port, both)
    assert resp.status == 400
    dup = req("/s", "Content-Length: 5", "Content-Length: 6", method="POST", body=b"123456")
    resp = await raw_exchange(gw.port, dup)
    assert resp.status == 400
    assert upstream.seen == []


async def test_websocket_upgrade_is_relayed_both_ways(upstream, gateway):
    async def ws_echo(request: web.Request, __) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("v2.proto",))
        await ws.prepare(request)
        await ws.send_str("hello from upstream " + request.headers.get("X-Trace", ""))
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == web.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    upstream.read_body = False
    upstream.behaviour = ws_echo
    gw = await gateway()
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"http://127.0.0.1:{gw.port}/ws",
            protocols=("v1.proto", "v2.proto"),
            headers={"X-Trace": "t1"},
        ) as ws:
            assert ws.protocol == "v2.proto"
            assert (await ws.receive_str(timeout=5)) == "hello from upstream t1"
            await ws.send_str("ping")
            assert (await ws.receive_str(timeout=5)) == "echo:ping"
            await ws.send_bytes(b"\x00\x01\x02")
            assert (await ws.receive_bytes(timeout=5)) == b"\x02\x01\x00"
    assert upstream.seen[-1].raw_path == "/ws"


async def test_utf8_header_values_reach_upstream_byte_for_byte(upstream, gateway):
    gw = await gateway()
    raw = req("/u").replace(b"\r\n\r\n", b"\r\nX-Name: caf\xc3\xa9 \xe2\x9c\x93\r\n\r\n")
    assert (await raw_exchange(gw.port, raw)).status == 200
    assert [v for k, v in upstream.seen[-1].raw_headers if k == b"X-Name"] == [
        b"caf\xc3\xa9 \xe2\x9c\x93"
    ]


async def test_non_utf8_header_bytes_are_refused_not_altered(upstream, gateway):
    gw = await gateway()
    raw = req("/u").replace(b"\r\n\r\n", b"\r\nX-Name: caf\xe9\r\n\r\n")
    resp = await raw_exchange(gw.port, raw)
    assert (
        resp.status == 400 and json.loads(resp.body)["error"]["code"] == "invalid_header_encoding"
    )
    assert upstream.seen == []


_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_RESERVED = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "forwarded",
    "x-real-ip",
    "x-request-id",
}


@given(
    headers=st.lists(
        st.tuples(
            st.text(_TOKEN_CHARS, min_size=1, max_size=20).filter(
                lambda n: (
                    n.lower() not in _RESERVED
                    and not n.lower().startswith(("x-behaviorgate-", "proxy-", "x-forwarded-"))
                )
            ),
            # visible ASCII and UTF-8 text, no leading/trailing blanks (HTTP trims those)
            st.text(
                st.characters(
                    min_codepoint=0x21,
                    max_codepoint=0x2FFF,
                    exclude_categories=("Cs", "Cc", "Zl", "Zp"),
                ),
                min_size=1,
                max_size=40,
            ),
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_header_lines_round_trip_in_order(upstream, gateway, headers):
    # Function-scoped fixtures are shared by all examples: one gateway serves them all.
    if not hasattr(upstream, "gateway_server"):
        upstream.gateway_server = await gateway()
    gw = upstream.gateway_server
    lines = b"".join(f"{n}: ".encode() + v.encode() + b"\r\n" for n, v in headers)
    raw = req("/rt").replace(b"\r\n\r\n", b"\r\n" + lines + b"\r\n")
    resp = await raw_exchange(gw.port, raw)
    assert resp.status == 200
    sent = [(n.lower().encode(), v.encode()) for n, v in headers]
    names = {n for n, _ in sent}
    got = [(k.lower(), v) for k, v in upstream.seen[-1].raw_headers if k.lower() in names]
    assert got == sent


async def test_upstream_time_is_observed_per_forwarded_request(upstream, gateway):
    """behaviorgate_upstream_seconds counts each forwarded request once, and at least the time the
    upstream took (it sleeps 50 ms here)."""

    async def slow(_request: web.Request, _seen) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        return web.json_response({"ok": True})

    upstream.behaviour = slow
    gw = await gateway()
    hist = gw.app[METRICS].upstream_seconds
    for _ in range(2):
        assert (await raw_exchange(gw.port, req("/slow"))).status == 200
    samples = {s.name: s.value for s in hist.collect()[0].samples if not s.labels.get("le")}
    assert samples["behaviorgate_upstream_seconds_count"] == 2
    assert samples["behaviorgate_upstream_seconds_sum"] >= 0.1
