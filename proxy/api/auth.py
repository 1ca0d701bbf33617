"""Who is calling the API: the proxied-traffic identity, or an admin API token.

Users are identified exactly like proxied requests (same JWT keys, trusted headers, trusted
proxies). Admins are users holding an admin role, or callers presenting a configured API token.
Tokens are kept only as SHA-256 digests and every digest is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from config.api import ApiSettings
from proxy.api.http import ApiError
from proxy.identity import IdentityError, IdentityResolver


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated API caller. ``actor`` names it in audit records (never a secret)."""

    user_id: str | None
    session_id: str
    is_admin: bool
    actor: str
    anonymous: bool = False


def token_hash(token: str) -> str:
    """The digest under which an API token is configured (``sha256(token)`` in hex)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def configured_hashes(settings: ApiSettings, environ: Mapping[str, str]) -> tuple[bytes, ...]:
    """Digests from the settings plus those of tokens in ``settings.admin_tokens_env``."""
    hashes = list(settings.admin_token_hashes)
    raw = environ.get(settings.admin_tokens_env, "")
    hashes += [token_hash(t.strip()) for t in raw.split(",") if t.strip()]
    return tuple(bytes.fromhex(h) for h in dict.fromkeys(hashes))


class ApiAuth:
    def __init__(
        self,
        settings: ApiSettings,
        resolver: IdentityResolver,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._hashes = configured_hashes(settings, os.environ if environ is None else environ)
        self._resolver = resolver

    def _token_match(self, headers: Mapping[str, str]) -> bytes | None:
        """The matching configured digest, or None. Every digest is compared, in constant time."""
        if not self._hashes:
            return None
        values = headers.getall("Authorization", []) if hasattr(headers, "getall") else []
        if len(values) != 1:
            return None
        scheme, _, credentials = values[0].strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return None
        digest = hashlib.sha256(credentials.strip().encode("utf-8", "surrogatepass")).digest()
        found = None
        for h in self._hashes:
            if hmac.compare_digest(digest, h):
                found = h
        return found

    def caller(self, request: web.Request) -> Caller:
        """Authenticate ``request`` (401 ApiError when its credentials are not accepted)."""
        matched = self._token_match(request.headers)
        if matched is not None:
            label = "token:" + matched.hex()[:12]
            return Caller(None, label, True, label)
        peer = request.remote or ""
        ip = self._resolver.client_ip(peer, request.headers)
        try:
            ident = self._resolver.resolve(request.headers, peer, ip)
        except IdentityError as exc:
            reason, message = exc.reason, "the request's credentials were not accepted"
            if reason == "malformed_token":
                # Often a mistyped API token, not a broken JWT: say both were tried (whether or
                # not API tokens are configured, so the answer does not tell).
                reason = "invalid_token"
                message = "the bearer token is neither a configured API token nor a valid JWT"
            raise ApiError(
                401, reason, message, headers={"WWW-Authenticate": 'Bearer realm="behaviorgate"'}
            ) from None
        anonymous = ident.source == "anonymous"
        actor = (
            f"user:{ident.user_id}" if ident.user_id is not None else "session:" + ident.session_id
        )
        return Caller(ident.user_id, ident.session_id, ident.is_admin, actor, anonymous)


def require_user(caller: Caller) -> Caller:
    """A signed-in user or admin (anonymous pseudo-sessions are refused with 401)."""
    if caller.anonymous:
        raise ApiError(
            401,
            "authentication_required",
            "sign in to use this endpoint",
            headers={"WWW-Authenticate": 'Bearer realm="behaviorgate"'},
        )
    return caller


def require_admin(caller: Caller) -> Caller:
    require_user(caller)
    if not caller.is_admin:
        raise ApiError(403, "admin_required", "this endpoint is for administrators")
    return caller
