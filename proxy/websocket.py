"""WebSocket relay: the one upgrade the gateway passes through, message for message, both ways."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
from aiohttp import WSMsgType, hdrs, web
from yarl import URL

from proxy.errors import json_error

# Negotiated separately on each leg by aiohttp itself.
_WS_OWN_HEADERS = frozenset(
    h.lower()
    for h in (
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    )
)


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    connection = request.headers.get(hdrs.CONNECTION, "").lower()
    return (
        request.method == "GET"
        and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        and "upgrade" in {t.strip() for t in connection.split(",")}
    )


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for msg in source:
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
    if not sink.closed:
        code = source.close_code or aiohttp.WSCloseCode.OK
        await sink.close(code=code)


async def relay_websocket(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: URL,
    upstream_headers: Mapping[str, str],
) -> web.StreamResponse:
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    headers = {k: v for k, v in upstream_headers.items() if k.lower() not in _WS_OWN_HEADERS}
    try:
        upstream = await session.ws_connect(
            url, headers=headers, protocols=protocols, autoping=True
        )
    except aiohttp.WSServerHandshakeError as exc:
        return json_error(
            502, "upstream_refused_websocket", f"the upstream refused the upgrade ({exc.status})"
        )
    except (aiohttp.ClientError, TimeoutError, OSError):
        return json_error(502, "upstream_unreachable", "the upstream refused the connection")
    client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else ())
    try:
        await client.prepare(request)
        tasks = [
            asyncio.create_task(_pump(client, upstream)),
            asyncio.create_task(_pump(upstream, client)),
        ]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await upstream.close()
        if not client.closed:
            await client.close()
    return client
