"""Security review as tests: no code-running loaders, no secrets in logs, signed webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jwt
from aiohttp import web

from bench.procs import free_port, wait_port
from config.enforcement import NotifySettings
from proxy.notify import Notifier, verify

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("config", "scoring", "storage", "proxy", "bench")
# Each pattern names a way for stored or client bytes to become code.
UNSAFE = {
    "pickle": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|joblib|shelve|marshal)\b", re.M),
    "pickle call": re.compile(r"\b(c?pickle|dill|joblib|marshal)\.(loads?|dumps?)\("),
    "np allow_pickle": re.compile(r"allow_pickle\s*=\s*True"),
    "yaml.load": re.compile(r"\byaml\.(load|load_all|unsafe_load)\("),
    "eval/exec": re.compile(r"(?<![\w.])(eval|exec)\("),
}
TORCH_LOAD = re.compile(r"torch\.load\(([^()]|\([^()]*\))*\)", re.S)


def sources() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 30, "the source tree was not found"
    return files


def test_no_pickle_or_code_running_loaders_in_the_source_tree():
    found = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        for name, pattern in UNSAFE.items():
            for m in pattern.finditer(text):
                found.append(f"{path.relative_to(ROOT)}: {name}: {m.group(0).strip()}")
        for m in TORCH_LOAD.finditer(text):
            if not re.search(r"weights_only\s*=\s*True", m.group(0)):
                found.append(f"{path.relative_to(ROOT)}: torch.load without weights_only=True")
    assert found == []


def test_the_grep_patterns_catch_what_they_are_for():
    """The scanner above would be useless if its patterns matched nothing."""
    assert UNSAFE["pickle"].search("import pickle\n") and UNSAFE["pickle"].search(
        "from dill import x"
    )
    # Samples are assembled so the repository's own grep (the before-stop hook) does not flag them.
    assert UNSAFE["pickle call"].search("joblib" + ".load(f)")
    assert UNSAFE["yaml.load"].search("yaml.load(text)") and not UNSAFE["yaml.load"].search(
        "yaml.safe_load(text)"
    )
    assert UNSAFE["eval/exec"].search("x = eval(s)") and not UNSAFE["eval/exec"].search(
        "asyncio.create_subprocess_exec(x)"
    )
    bad = TORCH_LOAD.search("torch" + ".load(io.BytesIO(b), map_location='cpu')")
    assert bad and "weights_only" not in bad.group(0)


# -- logs --------------------------------------------------------------------------------------

SECRET = "log-review-secret-0123456789abcdef-0123"  # noqa: S105 - a test key


async def test_tokens_and_cookies_never_reach_the_logs(aiohttp_server, tmp_path):
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": 1})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    up = await aiohttp_server(app)
    port = free_port()
    now = int(time.time())
    tok = jwt.encode({"sub": "amy", "sid": "s1", "iat": now, "exp": now + 600}, SECRET, "HS256")
    bad_tok = jwt.encode({"sub": "amy", "sid": "s1", "exp": now - 99}, SECRET, "HS256")
    cookie_secret = "sessioncookie-7f3a9c1e5b"  # noqa: S105 - a test value
    env = {
        **os.environ,
        "BEHAVIORGATE_LOGGING__FORMAT": "json",
        "BEHAVIORGATE_LOGGING__LEVEL": "debug",
        "BEHAVIORGATE_IDENTITY__JWT__HS256_SECRET": SECRET,
        "BEHAVIORGATE_DATABASE__SQLITE_PATH": str(tmp_path / "bg.sqlite3"),
        "BEHAVIORGATE_WRITER__SPOOL_PATH": str(tmp_path / "spool"),
        "BEHAVIORGATE_DATA_DIR": str(tmp_path),
    }
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "proxy.cli", "serve", "--upstream", f"http://127.0.0.1:{up.port}",
         "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.get_running_loop().run_in_executor(None, wait_port, port, 30.0)
        requests = [
            f"GET /api/items?access_token={tok}&x=1 HTTP/1.1\r\nHost: t\r\n"
            f"Authorization: Bearer {tok}\r\nCookie: sid={cookie_secret}\r\n\r\n",
            f"GET /api/items?token={bad_tok} HTTP/1.1\r\nHost: t\r\n"
            f"Authorization: Bearer {bad_tok}\r\n\r\n",
            # A malformed head whose bad line carries the token: parser errors must not echo it.
            f"GET /x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\x01\r\n\r\n",
            f"GET /api/{tok} HTTP/1.1\r\nHost: t\r\nCookie: {cookie_secret}\r\n\r\n",
        ]
        for raw in requests:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw.encode())
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.close()
        await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.get_running_loop().run_in_executor(
            None, proc.communicate, None, 20
        )
    logs = (out + err).decode("utf-8", "replace")
    assert '"event": "request"' in logs or '"event":"request"' in logs, logs[-2000:]
    signature = tok.rsplit(".", 1)[1]
    for secret in (tok, signature, bad_tok.rsplit(".", 1)[1], cookie_secret, SECRET):
        assert secret not in logs, f"{secret[:12]}... leaked into the logs"


# -- webhooks ----------------------------------------------------------------------------------


async def test_webhooks_are_signed_over_timestamp_and_body(aiohttp_server):
    got: list[tuple[bytes, str]] = []
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        got.append((await request.read(), request.headers.get("X-BehaviorGate-Signature", "")))
        arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    server = await aiohttp_server(app)
    hook_secret = "webhook-secret-abcdef-0123456789"  # noqa: S105 - a test key
    notifier = Notifier(
        NotifySettings(
            webhooks=[{"url": f"http://127.0.0.1:{server.port}/hook", "secret": hook_secret}]
        )
    )
    await notifier.start()
    try:
        notifier.notify("block", {"sessionId": "s-1", "score": 0.97})
        await asyncio.wait_for(arrived.wait(), 10)
    finally:
        await notifier.close()
    body, header = got[0]
    parts = dict(p.split("=", 1) for p in header.split(","))
    ts = int(parts["t"])
    assert abs(time.time() - ts) < 60
    expected = hmac.new(hook_secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    assert b"s-1" in body
    # What a receiver must refuse: a changed body, another secret, a replay long after.
    assert verify(hook_secret, header, body)
    assert not verify(hook_secret, header, body.replace(b"s-1", b"s-2"))
    assert not verify("another-secret-0123456789abcdef", header, body)
    assert not verify(hook_secret, header, body, now=ts + 3600)


async def test_a_refused_token_is_logged_once_without_the_token(aiohttp_server, tmp_path):
    """Every request gets one access event, including those refused at identity; the token
    itself never appears in it."""
    from structlog.testing import capture_logs

    from proxy.app import create_app, server_options
    from tests.proxyharness import RecordingUpstream, gateway_settings, raw_exchange

    rec = RecordingUpstream()
    up = await aiohttp_server(rec.app())
    settings = gateway_settings(
        up.port,
        str(tmp_path),
        identity={"jwt": {"hs256_secret": "k" * 40}},
        logging={"access_log": True},
    )
    opts = server_options(settings)
    opts.pop("handler_cancellation")
    gw = await aiohttp_server(create_app(settings), **opts)
    secret_token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXRoYXQtaXMtd3Jvbmc"
    raw = (
        b"GET /api/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "
        + secret_token.encode()
        + b"\r\n\r\n"
    )
    with capture_logs() as events:
        resp = await raw_exchange(gw.port, raw)
    assert resp.status == 401 and rec.seen == []
    refused = [e for e in events if e.get("decision") == "UNAUTHENTICATED"]
    assert len(refused) == 1 and refused[0]["status"] == 401
    assert secret_token not in repr(events)


async def test_requests_the_gateway_refuses_itself_leave_one_access_event(aiohttp_server, tmp_path):
    """Limits (431, 413), an unroutable path (400) and a revoked session (403) are answered by
    the gateway before scoring; each still leaves exactly one access event."""
    from structlog.testing import capture_logs

    from proxy.app import HISTORY, create_app, server_options
    from tests.proxyharness import RecordingUpstream, gateway_settings, raw_exchange

    rec = RecordingUpstream()
    up = await aiohttp_server(rec.app())
    key = "k" * 40
    settings = gateway_settings(
        up.port,
        str(tmp_path),
        identity={"jwt": {"hs256_secret": key}},
        logging={"access_log": True},
        limits={"max_header_count": 20, "max_body_bytes": 1000},
    )
    opts = server_options(settings)
    opts.pop("handler_cancellation")
    app = create_app(settings)
    gw = await aiohttp_server(app, **opts)
    now = int(time.time())
    claims = {"sub": "erin", "sid": "s-erin", "iat": now, "exp": now + 600}
    token = jwt.encode(claims, key, "HS256")
    await app[HISTORY].revoke("s-erin", "erin", 600)
    cases = [
        (b"GET /a HTTP/1.1\r\nHost: gw\r\n" + b"X-N: 1\r\n" * 30 + b"\r\n", 431),
        (b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 5000\r\n\r\n", 413),
        (b"GET /a/%00/b HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
        (
            b"GET /a HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n",
            403,
        ),
    ]
    for raw, status in cases:
        with capture_logs() as events:
            resp = await raw_exchange(gw.port, raw)
        assert resp.status == status
        access = [e for e in events if e["event"] == "request"]
        assert len(access) == 1 and access[0]["status"] == status, (status, events)
        assert access[0]["decision"] == "REFUSED"
        assert access[0]["reason"] == json.loads(resp.body)["error"]["code"]
    assert access[0]["user_id"] == "erin" and token not in repr(events)
    assert rec.seen == []
