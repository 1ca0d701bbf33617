"""Test harness: a recording upstream, a gateway on a real socket, and a raw-bytes HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from config.loader import load_settings
from config.settings import Settings


@dataclass
class Seen:
    method: str
    raw_path: str
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        low = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.raw_headers if k.lower() == low]


@dataclass
class RecordingUpstream:
    """An upstream that records what it received; `behaviour` may override the answer."""

    seen: list[Seen] = field(default_factory=list)
    behaviour: Callable[[web.Request, Seen], Awaitable[web.StreamResponse]] | None = None
    read_body: bool = True

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read() if self.read_body else b""
        seen = Seen(request.method, request.raw_path, list(request.raw_headers), body)
        self.seen.append(seen)
        if self.behaviour is not None:
            return await self.behaviour(request, seen)
        return web.json_response({"ok": True, "path": request.raw_path})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30, handler_args={"auto_decompress": False})
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


def gateway_settings(upstream_port: int, data_dir: str, **overrides: Any) -> Settings:
    """Settings for a test gateway: embedded stores under `data_dir` unless overridden."""
    base: dict[str, Any] = {
        "upstream": {"url": f"http://127.0.0.1:{upstream_port}"},
        "data_dir": data_dir,
        "database": {"sqlite_path": f"{data_dir}/bg.sqlite3"},
        "writer": {"spool_path": f"{data_dir}/predictions.spool", "flush_interval": 0.05},
        "logging": {"access_log": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_settings(environ={}, overrides=base)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


async def read_response(reader: asyncio.StreamReader, *, head_request: bool = False) -> RawResponse:
    """Parse one HTTP/1.1 response from raw bytes, honouring exactly the framing it declares."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
    resp = RawResponse(status, headers, b"", head)  # type: ignore[arg-type]
    if head_request or status in (204, 304) or 100 <= status < 200:
        return resp
    te = (resp.header("Transfer-Encoding") or "").lower()
    if te == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        resp.body = bytes(body)
    elif resp.header("Content-Length") is not None:
        resp.body = await reader.readexactly(int(resp.header("Content-Length") or 0))
    else:
        resp.body = await reader.read()
    return resp


async def raw_exchange(
    port: int, data: bytes, *, head_request: bool = False, timeout: float = 10
) -> RawResponse:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader, head_request=head_request), timeout)
    finally:
        writer.close()
