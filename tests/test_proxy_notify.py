"""Webhooks: signature a receiver can check, retries with backoff, nothing on the request path."""

import asyncio
import hashlib
import hmac
import json

from aiohttp import web

from config.enforcement import NotifySettings
from proxy.notify import Notifier, sign, verify

SECRET = "0123456789abcdef-secret"


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, body) == f"t=1700000000,v1={expected}"
    assert verify(SECRET, sign(SECRET, 1700000000, body), body, now=1700000010)
    assert not verify(SECRET, sign(SECRET, 1700000000, body), body + b" ", now=1700000010)
    assert not verify(SECRET, sign(SECRET, 1700000000, body), body, now=1700009999)  # stale
    assert not verify("another-secret-0000", sign(SECRET, 1700000000, body), body, now=1700000000)
    assert not verify(SECRET, "garbage", body)


async def test_delivery_retries_until_the_receiver_accepts(aiohttp_server):
    calls: list[tuple[bytes, str]] = []
    done = asyncio.Event()

    async def receiver(request: web.Request) -> web.Response:
        body = await request.read()
        calls.append((body, request.headers["X-BehaviorGate-Signature"]))
        if len(calls) < 3:
            return web.Response(status=503)
        done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receiver)
    server = await aiohttp_server(app)
    settings = NotifySettings(
        webhooks=[
            {"url": f"http://127.0.0.1:{server.port}/hook", "secret": SECRET, "events": ["block"]}
        ],
        backoff_initial_seconds=0.05,
        max_attempts=5,
    )
    notifier = Notifier(settings)
    await notifier.start()
    try:
        notifier.notify("block", {"sessionId": "s1"})
        notifier.notify("drift", {"ignored": True})  # not subscribed
        await asyncio.wait_for(done.wait(), 10)
        assert len(calls) == 3 and notifier.delivered == 1
        body, signature = calls[-1]
        assert json.loads(body)["event"] == "block" and json.loads(body)["sessionId"] == "s1"
        assert verify(SECRET, signature, body)
    finally:
        await notifier.close()


async def test_gives_up_after_max_attempts(aiohttp_server, unused_tcp_port):
    settings = NotifySettings(
        webhooks=[{"url": f"http://127.0.0.1:{unused_tcp_port}/x", "secret": SECRET}],
        backoff_initial_seconds=0.01,
        max_attempts=3,
    )
    notifier = Notifier(settings)
    await notifier.start()
    try:
        notifier.notify("block", {})
        for _ in range(200):
            if notifier.failed:
                break
            await asyncio.sleep(0.02)
        assert notifier.failed == 1 and notifier.delivered == 0
    finally:
        await notifier.close()
