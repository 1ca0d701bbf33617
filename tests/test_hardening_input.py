"""Hostile input on real sockets: fuzzing, smuggling shapes, forged identity, slow clients.

Every test talks raw bytes to a gateway on a real socket in front of a recording upstream, so
"the upstream saw it" and "the gateway answered it" can be told apart exactly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.app import STORE, create_app, server_options
from storage.store import open_store
from tests.proxyharness import RecordingUpstream, gateway_settings, raw_exchange, read_response

SECRET = "hardening-secret-0123456789abcdef-xyz"  # noqa: S105 - a test key
CHALLENGE_ONLY = {"monitor": 0.0, "challenge": 0.0, "require_2fa": 1.0, "block": 1.0}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = _RSA.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def token(user: str = "amy", sid: str = "s-amy", key: str = SECRET, alg: str = "HS256") -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "sid": sid, "iat": now, "exp": now + 600}, key, algorithm=alg)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade_jwt(header: dict, claims: dict, key: bytes | None) -> str:
    """A JWT built by hand so that forbidden shapes (alg none, HMAC over a PEM) can be made."""
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = b"" if key is None else hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(sig)}"


def req(target: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: gw.test", "User-Agent: fuzz/1.0", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@pytest.fixture
async def upstream(aiohttp_server):
    rec = RecordingUpstream()
    server = await aiohttp_server(rec.app())
    rec.port = server.port  # type: ignore[attr-defined]
    return rec


@pytest.fixture
def gateway(aiohttp_server, upstream, tmp_path, bundle_bytes):
    """A gateway with an active model, HS256 tokens and a strict admin rule that challenges."""

    async def make(**overrides):
        base = {
            "identity": {"jwt": {"hs256_secret": SECRET, "algorithms": ["HS256"]}},
            "policy": {
                "rules": [
                    {
                        "name": "admin",
                        "match": "/api/admin/**",
                        "strict": True,
                        "mode": "enforce",
                        "thresholds": CHALLENGE_ONLY,
                    }
                ]
            },
            # Global shadow keeps the model's view of test traffic out of the way; the admin
            # rule enforces, so it is the one that must catch every spelling.
            "mode": "shadow",
            "server": {"body_read_timeout": 0.3, "header_read_timeout": 1.0},
            "enforcement": {"escalation": {"enabled": False}},
            "scoring": {"budget_ms": 2000},
        }
        for key, value in overrides.items():
            base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
        settings_ = gateway_settings(upstream.port, str(tmp_path), **base)
        store = await open_store(settings_.database)
        version = await store.registry.save_version(bundle_bytes, feature_set_version="bg-59.1")
        await store.registry.activate(version.version, by="test")
        await store.close()
        opts = server_options(settings_)
        opts.pop("handler_cancellation")
        return await aiohttp_server(create_app(settings_), **opts)

    return make


async def exchange_all(port: int, data: bytes, *, settle: float = 0.5) -> list:
    """Send bytes on one keep-alive connection; parse every response until it goes quiet.

    The first answer may take a while (scoring); after it, `settle` seconds of silence end it.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    responses = []
    try:
        writer.write(data)
        await writer.drain()
        while True:
            wait = 5.0 if not responses else settle
            try:
                responses.append(await asyncio.wait_for(read_response(reader), wait))
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return responses
    finally:
        writer.close()


def assert_gateway_answer_is_clean(resp, upstream_saw_it: bool) -> None:
    """No 5xx from the gateway itself, no traceback, and its own answers are JSON."""
    assert b"Traceback" not in resp.body and b'File "' not in resp.body
    if upstream_saw_it:
        return  # the recording upstream's own answer
    assert resp.status < 500, (resp.status, resp.body[:200])
    assert "application/json" in (resp.header("Content-Type") or ""), resp.head
    assert "error" in json.loads(resp.body) or resp.status < 400


# -- fuzzing -------------------------------------------------------------------------------------

_METHODS = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND"]),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_!#", min_size=1, max_size=12),
    st.binary(min_size=1, max_size=8).filter(lambda b: b" " not in b and b"\r" not in b),
)
_PATH_BYTES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"/",
                b"//",
                b"/./",
                b"/../",
                b"%2e%2E",
                b"%2F",
                b"%5C",
                b"\\",
                b"%00",
                b"%",
                b"%zz",
                b"%25",
                b";a=b",
                b"?",
                b"#",
                b"api",
                b"admin",
                b"%ff",
                b"\xff\xfe",
                b"\xc3\x28",
                b"%c0%af",
                b"*",
                b"~",
                b"\x7f",
            ]
        ),
        st.binary(min_size=1, max_size=6).filter(lambda b: not set(b) & {32, 10, 13}),
    ),
    max_size=12,
).map(lambda parts: b"/" + b"".join(parts))
_HEADER_NAME = st.one_of(
    st.text("abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789", min_size=1, max_size=20),
    st.binary(min_size=1, max_size=10).filter(lambda b: not set(b) & {10, 13, 58}),
)
_HEADER_VALUE = st.binary(max_size=80).filter(lambda b: not set(b) & {10, 13})


def _bytes(v: str | bytes) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


@FUZZ
@given(
    method=_METHODS,
    path=_PATH_BYTES,
    headers=st.lists(st.tuples(_HEADER_NAME, _HEADER_VALUE), max_size=6),
)
async def test_fuzzed_request_heads_never_5xx_nor_traceback(
    upstream, gateway, method, path, headers
):
    gw = getattr(upstream, "gw", None) or await gateway(mode="shadow")
    upstream.gw = gw
    lines = [_bytes(method) + b" " + path + b" HTTP/1.1", b"Host: gw.test"]
    lines += [_bytes(k) + b": " + v for k, v in headers]
    before = len(upstream.seen)
    responses = await exchange_all(gw.port, b"\r\n".join(lines) + b"\r\n\r\n", settle=0.1)
    assert len(upstream.seen) - before <= 1
    assert len(responses) <= 1
    for resp in responses:
        assert_gateway_answer_is_clean(resp, len(upstream.seen) > before)


_CHUNK_SIZE = st.one_of(
    st.integers(0, 40).map(lambda n: f"{n:x}".encode()),
    st.sampled_from(
        [
            b"zz",
            b"-1",
            b"ffffffffffffffffffff",
            b"0x5",
            b" 5",
            b"5 ",
            b"5;ext=1",
            b'5;ext="q"',
            b"",
            b"+5",
            b"1_0",
        ]
    ),
)


@FUZZ
@given(
    chunks=st.lists(st.tuples(_CHUNK_SIZE, st.binary(max_size=40)), max_size=5),
    terminate=st.booleans(),
)
@example(chunks=[(b"3", b"abc"), (b"a", b"0123456789"), (b"1", b"\r")], terminate=True)
@example(chunks=[(b"9", b"\x00\x00"), (b"0", b"\x00\x00")], terminate=False)
async def test_fuzzed_chunked_bodies(upstream, gateway, chunks, terminate):
    gw = getattr(upstream, "gw", None) or await gateway(mode="shadow")
    upstream.gw = gw
    body = b"".join(size + b"\r\n" + data + b"\r\n" for size, data in chunks)
    if terminate:
        body += b"0\r\n\r\n"
    data = req("/upload", "Transfer-Encoding: chunked", method="POST", body=body)
    before = len(upstream.seen)
    responses = await exchange_all(gw.port, data, settle=0.1)
    assert len(upstream.seen) - before <= 1
    for resp in responses:
        assert_gateway_answer_is_clean(resp, len(upstream.seen) > before)
    if len(upstream.seen) > before and responses and responses[0].status == 200:
        sent = upstream.seen[-1].body
        well_formed = terminate and all(d and size == f"{len(d):x}".encode() for size, d in chunks)
        if well_formed:
            assert sent == b"".join(d for _, d in chunks)
        else:
            # A declared size may run over the generated CRLFs and the next size lines (they are
            # then body bytes), but nothing beyond what the client sent can reach the upstream.
            assert len(sent) <= len(body)


@FUZZ
@given(
    tok=st.one_of(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.=", max_size=300),
        st.binary(max_size=200).map(lambda b: ".".join(b64(b[i::3]) for i in range(3))),
        st.integers(1000, 40_000).map(lambda n: "eyJ" + "A" * n + ".e30.x"),
    )
)
async def test_fuzzed_tokens_are_clean_401s(upstream, gateway, tok):
    gw = getattr(upstream, "gw", None) or await gateway()
    upstream.gw = gw
    before = len(upstream.seen)
    resp = await raw_exchange(gw.port, req("/api/items", f"Authorization: Bearer {tok}"))
    assert len(upstream.seen) == before, "an unverifiable token reached the upstream"
    assert resp.status in (400, 401, 431), resp.status
    assert_gateway_answer_is_clean(resp, False)


async def test_forbidden_token_shapes_are_refused(upstream, gateway):
    gw = await gateway()
    now = int(time.time())
    claims = {"sub": "mallory", "sid": "s-m", "iat": now, "exp": now + 600}
    cases = {
        "alg none": handmade_jwt({"alg": "none", "typ": "JWT"}, claims, None),
        "alg None": handmade_jwt({"alg": "None"}, claims, None),
        "wrong secret": token("mallory", key="not-the-secret-0123456789abcdef-0123"),
        "expired": jwt.encode({**claims, "exp": now - 3600}, SECRET, algorithm="HS256"),
        "HS512 not allowed": jwt.encode(claims, SECRET * 2, "HS512"),
    }
    for name, tok in cases.items():
        resp = await raw_exchange(gw.port, req("/api/items", f"Authorization: Bearer {tok}"))
        assert resp.status == 401, name
        assert_gateway_answer_is_clean(resp, False)
    assert upstream.seen == []
    ok = await raw_exchange(gw.port, req("/api/items", f"Authorization: Bearer {token()}"))
    assert ok.status == 200 and len(upstream.seen) == 1  # the control goes through


async def test_hs_rs_confusion_is_refused(upstream, gateway):
    """A token HMAC-signed with the RS256 public key must not verify."""
    gw = await gateway(
        identity={"jwt": {"public_key_pem": RSA_PUBLIC_PEM.decode(), "algorithms": ["RS256"]}}
    )
    now = int(time.time())
    claims = {"sub": "mallory", "sid": "s-m", "iat": now, "exp": now + 600}
    forged = handmade_jwt({"alg": "HS256", "typ": "JWT"}, claims, RSA_PUBLIC_PEM)
    resp = await raw_exchange(gw.port, req("/api/items", f"Authorization: Bearer {forged}"))
    assert resp.status == 401 and upstream.seen == []
    real = jwt.encode(claims, _RSA, algorithm="RS256")
    ok = await raw_exchange(gw.port, req("/api/items", f"Authorization: Bearer {real}"))
    assert ok.status == 200 and len(upstream.seen) == 1


# -- request smuggling ---------------------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n"
SMUGGLING = {
    "CL and TE": b"POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE and CL": b"POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 48\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "two CL": b"POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\nContent-Length: "
    + str(len(SMUGGLED)).encode()
    + b"\r\n\r\n"
    + SMUGGLED,
    "CL list": b"POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0, "
    + str(len(SMUGGLED)).encode()
    + b"\r\n\r\n"
    + SMUGGLED,
    "chunked, identity": b"POST /s HTTP/1.1\r\nHost: gw.test\r\n"
    b"Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "identity, chunked twice": b"POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked"
    b"\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "obs-fold TE": b"POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: "
    + str(len(SMUGGLED) + 5).encode()
    + b"\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "space before colon": b"POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding : chunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "xchunked": b"POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: xchunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "bare LF": b"POST /s HTTP/1.1\nHost: gw.test\nContent-Length: 5\nTransfer-Encoding: "
    b"chunked\n\n0\n\n" + SMUGGLED,
    "chunk extension with LF": b"POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: "
    b"chunked\r\n\r\n5;a=\n0\r\n\r\n" + SMUGGLED,
    "negative CL": b"POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: -1\r\n\r\n" + SMUGGLED,
    "plus CL": b"POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: +0\r\n\r\n" + SMUGGLED,
    "TE in HTTP/1.0": b"POST /s HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 5\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("shape", sorted(SMUGGLING))
async def test_smuggling_shapes_never_become_two_upstream_requests(upstream, gateway, shape):
    gw = await gateway(mode="shadow")
    responses = await exchange_all(gw.port, SMUGGLING[shape])
    paths = [s.raw_path for s in upstream.seen]
    assert "/smuggled" not in paths, (shape, paths, [r.status for r in responses])
    assert len(paths) <= 1
    for resp in responses:
        assert_gateway_answer_is_clean(resp, bool(paths))


async def test_chunk_extensions_are_framing_not_body(upstream, gateway):
    gw = await gateway(mode="shadow")
    body = b"5;name=val\r\nhello\r\n6;x\r\n world\r\n0\r\n\r\n"
    resp = await raw_exchange(
        gw.port, req("/u", "Transfer-Encoding: chunked", method="POST", body=body)
    )
    assert resp.status == 200
    assert [s.body for s in upstream.seen] == [b"hello world"]


async def test_honest_pipelining_still_works(upstream, gateway):
    """The control for the smuggling test: two requests sent as two are forwarded as two."""
    gw = await gateway(mode="shadow")
    responses = await exchange_all(gw.port, req("/one") + req("/two"))
    assert [r.status for r in responses] == [200, 200]
    assert [s.raw_path for s in upstream.seen] == ["/one", "/two"]


# -- forged identity and client-sent gateway headers --------------------------------------------

FORGED = (
    "X-Forwarded-For: 6.6.6.6, 7.7.7.7",
    "Forwarded: for=8.8.8.8;proto=https",
    "X-Real-IP: 9.9.9.9",
    "X-Auth-User: root",
)


async def _recorded_ip(gw, upstream, *headers: str) -> tuple[str, str | None]:
    tok = token()
    resp = await raw_exchange(gw.port, req("/api/items", f"Authorization: Bearer {tok}", *headers))
    assert resp.status == 200
    pid = upstream.seen[-1].header_values("X-BehaviorGate-Prediction-Id")[0]
    for _ in range(100):
        record = await gw.app[STORE].get_prediction(pid)
        if record is not None:
            return record.client_ip, record.user_id
        await asyncio.sleep(0.05)
    raise AssertionError("prediction never stored")


async def test_forged_forwarding_headers_from_untrusted_peer_are_ignored(upstream, gateway):
    gw = await gateway(identity={"trusted_header": {"user_header": "X-Auth-User"}})
    ip, user = await _recorded_ip(gw, upstream, *FORGED)
    assert (ip, user) == ("127.0.0.1", "amy")
    seen = upstream.seen[-1]
    assert seen.header_values("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.header_values("X-Real-IP") == [] and seen.header_values("Forwarded") == []
    assert seen.header_values("X-Auth-User") == []


async def test_forwarding_headers_from_a_trusted_peer_are_used(upstream, gateway):
    """Control: the same headers from a configured proxy do change the client IP."""
    gw = await gateway(identity={"trusted_proxies": ["127.0.0.1/32"]})
    ip, _ = await _recorded_ip(gw, upstream, "X-Forwarded-For: 6.6.6.6")
    assert ip == "6.6.6.6"


@FUZZ
@given(
    name=st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).flatmap(
        lambda suffix: st.sampled_from(
            ["x-behaviorgate-", "X-BehaviorGate-", "X-BEHAVIORGATE-"]
        ).map(lambda p: p + suffix)
    ),
    value=st.text("abcdefghijklmnopqrstuvwxyz0123456789 .", max_size=20),
)
async def test_client_sent_gateway_headers_never_reach_upstream(upstream, gateway, name, value):
    gw = getattr(upstream, "gw", None) or await gateway(mode="shadow")
    upstream.gw = gw
    resp = await raw_exchange(gw.port, req("/x", f"{name}: {value}"))
    assert resp.status == 200
    for key, got in upstream.seen[-1].raw_headers:
        if key.lower() == name.lower().encode():
            # Only the gateway's own value (decision/prediction id) may carry this name.
            assert got.decode() != value or value in ("LEARNING", "ALLOW", "MONITOR")


# -- normalisation tricks against a strict rule --------------------------------------------------


def _spell_segment(seg: str, draw) -> str:
    out = []
    for ch in seg:
        how = draw(st.sampled_from(["raw", "raw", "upper", "lower"]))
        code = f"{ord(ch):02x}"
        out.append(ch if how == "raw" else "%" + (code.upper() if how == "upper" else code))
    text = "".join(out)
    if draw(st.booleans()):
        text += ";" + draw(st.sampled_from(["x", "jsessionid=1", "a=b;c"]))
    return text


@st.composite
def admin_spelling(draw) -> str:
    parts = []
    for seg in ("api", "admin", "users"):
        for _ in range(draw(st.integers(0, 2))):
            parts.append(draw(st.sampled_from([".", "%2e", "%2E", "", "zz/..", "zz/%2e%2e"])))
        parts.append(_spell_segment(seg, draw))
    sep = draw(st.sampled_from(["/", "/", "//", "/%2F"[:1]]))
    path = "/" + sep.join(parts).lstrip("/")
    if draw(st.booleans()):
        path = path.replace("/", "%2F", 1) if path.count("/") > 2 else path
    return path + draw(st.sampled_from(["", "?a=1", "/", "/.", "#frag"]))


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=admin_spelling())
async def test_every_spelling_of_a_strict_path_is_caught(upstream, gateway, path):
    gw = getattr(upstream, "gw", None) or await gateway()
    upstream.gw = gw
    before = len(upstream.seen)
    resp = await raw_exchange(gw.port, req(path, f"Authorization: Bearer {token()}"))
    # 400 (refused path), 401 (challenge) or 403 (strict block, then the revoked session).
    caught = resp.status == 400 or (
        resp.status in (401, 403) and json.loads(resp.body)["error"]["code"] != "invalid_token"
    )
    assert caught and len(upstream.seen) == before, (path, resp.status, resp.body[:200])


async def test_a_non_strict_path_is_forwarded(upstream, gateway):
    """Control for the property above: the rule does not simply catch everything."""
    gw = await gateway()
    resp = await raw_exchange(
        gw.port, req("/api/administrators", f"Authorization: Bearer {token()}")
    )
    assert resp.status == 200 and upstream.seen[-1].raw_path == "/api/administrators"


# -- slow clients and oversize input -------------------------------------------------------------


async def _trickle(port: int, pieces: list[bytes], gap: float) -> tuple[bytes, float]:
    """Send `pieces` `gap` apart while reading; return what came back and when it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    got = bytearray()
    closed_at: list[float] = []

    async def read_all() -> None:
        try:
            while data := await reader.read(65536):
                got.extend(data)
        except ConnectionError:
            pass
        closed_at.append(time.monotonic() - started)

    reading = asyncio.create_task(read_all())
    try:
        for piece in pieces:
            if reading.done():
                break
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(gap)
    except ConnectionError:
        pass
    await asyncio.wait_for(reading, 5)
    writer.close()
    return bytes(got), closed_at[0]


async def test_header_read_deadline_cuts_a_slowloris(upstream, gateway):
    gw = await gateway(mode="shadow", server={"header_read_timeout": 0.5})
    pieces = [b"GET /slow HTTP/1.1\r\n"] + [b"X-A: %d\r\n" % i for i in range(30)]
    got, elapsed = await _trickle(gw.port, pieces, 0.1)
    assert got.startswith(b"HTTP/1.1 408 ")
    assert json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "header_timeout"
    assert elapsed < 3.6  # cut at ~0.5 s, not after the 30 lines (3 s) or the keep-alive (75 s)
    assert upstream.seen == []


async def test_header_read_deadline_closes_a_silent_connection(gateway):
    gw = await gateway(mode="shadow", server={"header_read_timeout": 0.4})
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert time.monotonic() - started < 2
    writer.close()


async def test_header_deadline_spares_slow_bodies_and_idle_keepalive(upstream, gateway):
    gw = await gateway(mode="shadow", server={"header_read_timeout": 0.4, "body_read_timeout": 2.0})
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(req("/first"))
        assert (await asyncio.wait_for(read_response(reader), 5)).status == 200
        await asyncio.sleep(0.8)  # idle keep-alive longer than the header deadline: still open
        writer.write(req("/body", "Content-Length: 6", method="POST"))
        for piece in (b"ab", b"cd", b"ef"):  # a body slower than the header deadline, in total
            await asyncio.sleep(0.3)
            writer.write(piece)
        resp = await asyncio.wait_for(read_response(reader), 5)
        assert resp.status == 200
        assert [s.body for s in upstream.seen] == [b"", b"abcdef"]
        writer.write(b"GET /third HTTP/1.1\r\n")  # then a slow next head on the same connection
        await asyncio.sleep(0.8)
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest.startswith(b"HTTP/1.1 408 ")
    finally:
        writer.close()


async def test_body_read_deadline_answers_408(upstream, gateway):
    gw = await gateway(mode="shadow", server={"body_read_timeout": 0.4})
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    started = time.monotonic()
    try:
        writer.write(req("/b", "Content-Length: 10", method="POST", body=b"abc"))
        resp = await asyncio.wait_for(read_response(reader), 5)
    finally:
        writer.close()
    assert resp.status == 408 and json.loads(resp.body)["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < 3
    assert upstream.seen == []  # the upstream never got a truncated body as a complete one


async def test_header_line_beyond_parser_cap_is_json_431(upstream, gateway):
    from structlog.testing import capture_logs

    gw = await gateway(mode="shadow", limits={"max_header_bytes": 2048})
    with capture_logs() as events:
        resp = await raw_exchange(gw.port, req("/h", "X-Big: " + "a" * 20_000))
    assert resp.status == 431
    # The log says what the client was answered, and never quotes the line itself.
    refused = [e for e in events if e["event"] == "request_refused"]
    assert [e["status"] for e in refused] == [431] and "aaaa" not in repr(events)
    assert_gateway_answer_is_clean(resp, False)
    resp = await raw_exchange(gw.port, req("/h", *[f"X-{i}: {'b' * 100}" for i in range(30)]))
    assert resp.status == 431 and upstream.seen == []


async def test_malformed_request_line_is_json_400(upstream, gateway):
    gw = await gateway(mode="shadow")
    resp = await raw_exchange(gw.port, b"GET /a b c d HTTP/9.9\r\nHost: x\r\n\r\n")
    assert resp.status == 400
    assert json.loads(resp.body)["error"]["code"] == "bad_request"
    assert upstream.seen == []
