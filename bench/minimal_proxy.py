"""The floor any aiohttp proxy pays: one client session, hop-by-hop headers dropped, bodies streamed.

Deliberately minimal (no limits, no identity, no policy): benchmarks compare the gateway with it.
Usage: python -m bench.minimal_proxy UPSTREAM_URL PORT
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

HOP = {
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def start(_: web.Application):
        app["session"] = aiohttp.ClientSession(
            auto_decompress=False, connector=aiohttp.TCPConnector(limit=256)
        )
        yield
        await app["session"].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        data = request.content if request.body_exists else None
        async with app["session"].request(
            request.method,
            upstream + request.raw_path,
            headers=headers,
            data=data,
            allow_redirects=False,
        ) as up:
            resp = web.StreamResponse(status=up.status)
            for k, v in up.headers.items():
                if k.lower() not in HOP:
                    resp.headers.add(k, v)
            if up.content_length is not None:
                resp.content_length = up.content_length
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.cleanup_ctx.append(start)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        make_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None
    )
