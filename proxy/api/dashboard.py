"""The monitoring dashboard: one static page and its two assets, served under the API prefix.

The page itself carries no data and needs no credentials; every number it shows comes from the
admin API, called by the browser with the admin token the operator types in. Everything it
renders is attacker-influenced (paths, user ids, notes), so the page builds its DOM with
``textContent`` only and is served with a strict Content-Security-Policy (no inline script, no
third-party origin): a stored ``<script>`` can neither be parsed into markup nor run.
"""

from __future__ import annotations

import html
from functools import lru_cache
from importlib import resources

from aiohttp import web

from proxy.api import deps
from proxy.api.auth import Caller
from proxy.api.http import not_found
from proxy.api.routing import Route

#: Assets a browser may fetch, with their content types. Nothing else is ever read from disk.
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
#: Only same-origin script, style and fetch; no inline code, no frames, no forms elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
_PREFIX_MARK = "{{prefix}}"


@lru_cache(maxsize=8)
def static_bytes(name: str) -> bytes:
    """A file shipped in ``proxy/static`` (package data, so it works from a wheel too)."""
    return resources.files("proxy").joinpath("static", name).read_bytes()


def page_html(prefix: str) -> bytes:
    """The page with the configured API prefix filled in (HTML-escaped: it lands in attributes)."""
    text = static_bytes("dashboard.html").decode("utf-8")
    return text.replace(_PREFIX_MARK, html.escape(prefix, quote=True)).encode("utf-8")


async def get_page(request: web.Request, _: Caller | None) -> web.Response:
    body = page_html(deps.settings(request).api.prefix)
    return web.Response(
        body=body,
        headers={"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS},
    )


async def get_asset(request: web.Request, _: Caller | None) -> web.Response:
    name = request.match_info["asset"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise not_found("dashboard asset")
    return web.Response(
        body=static_bytes(name), headers={"Content-Type": content_type, **SECURITY_HEADERS}
    )


ROUTES = [
    Route("GET", "/dashboard", get_page, "public"),
    Route("GET", "/dashboard/{asset}", get_asset, "public"),
]
