"""Request parsing and error answers shared by every API route.

Every client-supplied value is hostile: bodies are read up to a byte cap, JSON must be an
object, and each bad parameter becomes a 400 that names the field (never a traceback).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from config.api import ApiSettings

#: An integer query value: optional minus, 1 to 12 ASCII digits.
INTEGER = re.compile(r"-?[0-9]{1,12}")


class ApiError(Exception):
    """An answer other than success: status, stable code, human message, optional field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.headers, self.extra = field, headers, extra

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"success": False, "error": error, **self.extra}


def bad(field: str, message: str) -> ApiError:
    """A 400 naming the offending field."""
    return ApiError(400, "invalid_parameter", f"{field}: {message}", field=field)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, read up to ``limit`` bytes (413 beyond, 400 if not an object)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiError(413, "request_too_large", f"request body exceeds {limit} bytes")
    data = bytearray()
    while True:
        chunk = await request.content.read(min(65_536, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ApiError(413, "request_too_large", f"request body exceeds {limit} bytes")
    if not data.strip():
        return {}
    try:
        doc = orjson.loads(bytes(data))
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON", field="body") from None
    if not isinstance(doc, dict):
        raise bad("body", "must be a JSON object")
    return doc


def query_int(request: web.Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """An integer query parameter within [lo, hi] (400 naming it otherwise)."""
    values = request.query.getall(name, [])
    if not values:
        return default
    if len(values) > 1:
        raise bad(name, "given more than once")
    raw = values[0].strip()
    if not INTEGER.fullmatch(raw):  # ASCII digits only: str.isdigit() accepts "²", int() does not
        raise bad(name, "must be an integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise bad(name, f"must be between {lo} and {hi}")
    return value


def query_str(request: web.Request, name: str, max_len: int = 128) -> str | None:
    values = request.query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise bad(name, "given more than once")
    if not values[0] or len(values[0]) > max_len:
        raise bad(name, f"must be 1 to {max_len} characters")
    return values[0]


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    hours: int


def window(request: web.Request, settings: ApiSettings, default_hours: int = 24) -> Window:
    """The ``hours`` query parameter as a half-open window ending now."""
    hours = query_int(request, "hours", default_hours, 1, settings.max_window_hours)
    assert hours is not None
    end = datetime.now(UTC) + timedelta(microseconds=1)
    return Window(end - timedelta(hours=hours), end, hours)


def page_limit(request: web.Request, settings: ApiSettings) -> int:
    limit = query_int(request, "limit", settings.page_size, 1, settings.max_page_size)
    assert limit is not None
    return limit


def body_str(
    doc: dict[str, Any], name: str, *, required: bool = True, max_len: int = 256
) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise bad(name, "is required")
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise bad(name, f"must be a string of 1 to {max_len} characters")
    return value


def body_bool(doc: dict[str, Any], name: str, default: bool | None = None) -> bool:
    value = doc.get(name, default)
    if not isinstance(value, bool):
        raise bad(name, "must be a boolean" if name in doc else "is required")
    return value


def body_number(doc: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad(name, "must be a number")
    if not lo <= value <= hi:
        raise bad(name, f"must be between {lo} and {hi}")
    return float(value)


def only_keys(doc: dict[str, Any], allowed: set[str], where: str = "body") -> None:
    """Reject unknown keys: a typo must not be silently ignored."""
    for key in doc:
        if key not in allowed:
            raise bad(
                f"{where}.{key}"[:200] if where != "body" else str(key)[:200], "unknown field"
            )


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, as the spec's examples show."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")
