"""The ML anomaly API: routes under ``settings.api.prefix``, answered by the gateway itself.

Every handler goes through :class:`Api.wrap`: authentication (user / admin / API token), rate
limit, then the handler; any failure becomes a JSON error (a dependency outage is a 503, a bug
a bare 500) and never a traceback. Unknown paths and methods under the prefix get JSON 404/405
here, so nothing under the prefix can ever be forwarded upstream.
"""

from __future__ import annotations

from aiohttp import web

from proxy.api.routing import Api, Route

__all__ = ("Api", "Route", "all_routes", "setup_api")


def all_routes() -> list[Route]:
    """Every API route, in registration order (literal paths before ``{param}`` siblings)."""
    from proxy.api import (
        batch,
        dashboard,
        lifecycle_routes,
        openapi,
        performance,
        predictions,
        release,
        status,
        whatif,
    )

    return [
        *openapi.ROUTES,
        *status.ROUTES,
        *lifecycle_routes.ROUTES,
        *performance.ROUTES,
        *batch.ROUTES,
        *predictions.ROUTES,
        *whatif.ROUTES,
        *release.ROUTES,
        *dashboard.ROUTES,
    ]


def setup_api(app: web.Application) -> None:
    """Register the API routes (call before the gateway's catch-all route)."""
    from proxy.app import SETTINGS

    settings = app[SETTINGS].api
    if not settings.enabled:
        return
    api = Api(app, all_routes())
    app[Api.API_KEY] = api
    prefix = settings.prefix
    for route in api.routes:
        app.router.add_route(route.method, prefix + route.path, api.wrap(route))
    app.router.add_route("*", prefix, api.fallback)
    app.router.add_route("*", prefix + "/{tail:.*}", api.fallback)
