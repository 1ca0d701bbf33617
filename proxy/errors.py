"""JSON answers the gateway gives itself: one shape for every error, never a traceback."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

JSON_TYPE = "application/json"


def json_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type=JSON_TYPE, headers=headers
    )


def json_error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """`{"success": false, "error": {"code", "message"}}`: a stable code, a human message."""
    return json_response(
        status, {"success": False, "error": {"code": code, "message": message, **extra}}, headers
    )
