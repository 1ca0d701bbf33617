"""The API's route table and request wrapper: auth, rate limit, JSON errors, 404/405."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from proxy.api.auth import ApiAuth, Caller, require_admin, require_user
from proxy.api.http import ApiError
from proxy.api.ratelimit import RateLimiter
from proxy.errors import json_response
from storage.store import StoreUnavailable

log = structlog.get_logger("behaviorgate.api")

Access = Literal["public", "any", "user", "admin"]
Limit = Literal["feedback", "admin"] | None
Handler = Callable[[web.Request, Caller | None], Awaitable[Any]]
_NO_STORE = {"Cache-Control": "no-store"}
_DEPENDENCY = (StoreUnavailable, RedisError, ConnectionError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Route:
    """One API route: ``path`` is relative to the prefix, with ``{name}`` segments."""

    method: str
    path: str
    handler: Handler
    access: Access
    limit: Limit = None


class Api:
    """Per-application API state: authenticator, rate limiters, route table."""

    API_KEY: web.AppKey[Api]

    def __init__(self, app: web.Application, routes: list[Route]) -> None:
        from proxy.app import SETTINGS

        self.settings = app[SETTINGS].api
        self.routes = routes
        self._auth: ApiAuth | None = None
        self.limits = {
            "feedback": RateLimiter(self.settings.feedback_per_minute),
            "admin": RateLimiter(self.settings.admin_per_minute),
        }
        self._patterns = [(_pattern(r.path), r.method) for r in routes]

    def auth(self, request: web.Request) -> ApiAuth:
        if self._auth is None:
            from proxy.app import PIPELINE

            pipeline = request.app.get(PIPELINE)
            if pipeline is None:
                raise ApiError(503, "starting", "the gateway is starting")
            self._auth = ApiAuth(self.settings, pipeline.identity)
        return self._auth

    def check(self, request: web.Request, route: Route) -> Caller | None:
        """Authenticate and rate-limit one request for ``route``."""
        if route.access == "public":
            return None
        caller = self.auth(request).caller(request)
        if route.access == "user":
            require_user(caller)
        elif route.access == "admin":
            require_admin(caller)
        kind = route.limit or ("admin" if caller.is_admin and route.access == "admin" else None)
        if kind is not None:
            wait = self.limits[kind].retry_after(f"{kind}:{caller.actor}")
            if wait:
                raise ApiError(
                    429,
                    "rate_limited",
                    "too many requests; retry later",
                    headers={"Retry-After": str(wait)},
                    retryAfterSeconds=wait,
                )
        return caller

    def wrap(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                caller = self.check(request, route)
                result = await route.handler(request, caller)
            except ApiError as exc:
                return json_response(exc.status, exc.body(), {**_NO_STORE, **(exc.headers or {})})
            except _DEPENDENCY as exc:
                log.warning("api_dependency_error", route=route.path, error=type(exc).__name__)
                return _error(
                    503,
                    "dependency_unavailable",
                    "a backing store is unavailable; retry shortly",
                    {"Retry-After": "2"},
                )
            except Exception as exc:  # noqa: BLE001 - never a traceback to the client
                log.error(
                    "api_error", route=route.path, error=type(exc).__name__, detail=str(exc)[:200]
                )
                return _error(500, "internal_error", "the request could not be completed")
            if isinstance(result, web.StreamResponse):
                return result
            status, body = result if isinstance(result, tuple) else (200, result)
            return json_response(status, {"success": True, **body}, _NO_STORE)

        return handle

    async def fallback(self, request: web.Request) -> web.Response:
        """JSON 404 for unknown paths under the prefix, 405 (with Allow) for a wrong method."""
        prefix = self.settings.prefix
        sub = request.path[len(prefix) :] if request.path.startswith(prefix) else request.path
        allowed = sorted({m for rx, m in self._patterns if rx.match(sub)})
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            return _error(
                405,
                "method_not_allowed",
                "method not allowed on this route",
                {"Allow": ", ".join(allowed)},
            )
        return _error(404, "not_found", "no such API route")


def _pattern(path: str) -> re.Pattern[str]:
    parts = ("[^/]+" if seg.startswith("{") else re.escape(seg) for seg in path.split("/"))
    return re.compile("^" + "/".join(parts) + "$")


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(
        status,
        {"success": False, "error": {"code": code, "message": message}},
        {**_NO_STORE, **(headers or {})},
    )


Api.API_KEY = web.AppKey("api", Api)
