"""Who is asking: the client IP (through trusted proxies only) and the user/session identity.

Everything here treats request bytes as hostile: no header value is believed unless the TCP peer
is a configured trusted proxy, tokens are size-capped before parsing, and every JWT algorithm is
pinned to the key type that may verify it (no ``alg: none``, no HS256 keyed by an RSA PEM).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from config.identity import IdentitySettings, JwtSettings

__all__ = (
    "Identity",
    "IdentityError",
    "IdentityResolver",
    "TrustedNetworks",
    "anonymous_session",
    "client_ip",
    "parse_ip",
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Source = Literal["jwt", "header", "anonymous"]

_MAX_HOPS = 64
_MAX_ID_LENGTH = 256
_MAX_ROLES = 64
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_PRINTABLE_ID = re.compile(r"[\x21-\x7e]{1,256}")
_JWT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token_expired"),
    (jwt.ImmatureSignatureError, "token_not_yet_valid"),
    (jwt.InvalidAudienceError, "invalid_audience"),
    (jwt.InvalidIssuerError, "invalid_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidSignatureError, "invalid_signature"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed"),
)


# --------------------------------------------------------------------------- client IP


class TrustedNetworks:
    """A set of CIDRs, built once, answering ``address in networks``."""

    __slots__ = ("_ranges",)

    def __init__(self, cidrs: Iterable[str | IPNetwork]) -> None:
        networks = [
            c if not isinstance(c, str) else ipaddress.ip_network(c.strip(), strict=False)
            for c in cidrs
        ]
        # Plain integers: ``address in network`` from ipaddress costs microseconds per network.
        self._ranges = tuple((n.version, int(n.network_address), int(n.netmask)) for n in networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        version, value = address.version, int(address)
        return any(v == version and value & mask == net for v, net, mask in self._ranges)

    def __bool__(self) -> bool:
        return bool(self._ranges)


@functools.lru_cache(maxsize=8192)
def parse_ip(value: str | None) -> IPAddress | None:
    """An address from a header or socket value (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``,
    ``"::1"``); None for garbage, ``unknown`` or obfuscated identifiers. IPv4-mapped IPv6
    addresses come back as IPv4 so one client has one spelling. Cached: peers repeat, and
    ``ipaddress`` parsing costs microseconds."""
    if not value or len(value) > 64:
        return None
    text = value.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(
    peer_ip: str, headers: Mapping[str, str], trusted_proxies: TrustedNetworks | Iterable[str]
) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy, in which case
    ``X-Forwarded-For`` (else ``Forwarded: for=``, else ``X-Real-IP``) is walked right to left
    while each hop is itself trusted. A garbage hop stops the walk at the last believable
    address. Untrusted peers' forwarding headers are ignored entirely."""
    networks = (
        trusted_proxies
        if isinstance(trusted_proxies, TrustedNetworks)
        else (TrustedNetworks(trusted_proxies))
    )
    current = parse_ip(peer_ip)
    if current is None:
        return peer_ip or "unknown"
    if current not in networks:
        return _ip_text(current)
    for hop in reversed(_forwarded_chain(headers)[-_MAX_HOPS:]):
        if current not in networks:
            break
        address = parse_ip(hop)
        if address is None:
            break
        current = address
    return _ip_text(current)


@functools.lru_cache(maxsize=8192)
def _ip_text(address: IPAddress) -> str:
    return str(address)


def _forwarded_chain(headers: Mapping[str, str]) -> list[str]:
    hops = [h.strip() for v in _all(headers, "X-Forwarded-For") for h in v.split(",")]
    if hops:
        return hops
    hops = [_forwarded_for(element) for v in _all(headers, "Forwarded") for element in v.split(",")]
    if hops:
        return hops
    return _all(headers, "X-Real-IP")[-1:]


def _forwarded_for(element: str) -> str:
    for pair in element.split(";"):
        key, _, value = pair.partition("=")
        if key.strip().lower() == "for":
            return value.strip()
    return ""


def _all(headers: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, ()))
    value = headers.get(name)
    return [] if value is None else [value]


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True, slots=True)
class Identity:
    """The resolved principal of one request."""

    user_id: str | None
    session_id: str
    roles: frozenset[str]
    is_admin: bool
    source: Source
    token_exp: float | None = None


class IdentityError(Exception):
    """The request cannot be given an identity; the caller answers 401 with ``reason``.

    Reasons are fixed short codes and never echo client input."""

    status = 401

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _TokenCache:
    """Bounded LRU of verified tokens (keyed by digest), each valid until its exp + leeway."""

    __slots__ = ("_entries", "_size", "_leeway", "_clock")

    def __init__(self, size: int, leeway: float, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[bytes, Identity] = OrderedDict()
        self._size, self._leeway, self._clock = size, leeway, clock

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Identity | None:
        identity = self._entries.get(key)
        if identity is None:
            return None
        exp = identity.token_exp
        if exp is not None and self._clock() > exp + self._leeway:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return identity

    def put(self, key: bytes, identity: Identity) -> None:
        if self._size <= 0:
            return
        self._entries[key] = identity
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


# --------------------------------------------------------------------------- keys

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_MIN_SECRET_BYTES = 32
_MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Verification keys, each pinned to the one algorithm its type allows: the HS256 secret
    only verifies HS256, RSA keys only RS256, P-256 keys only ES256. This is what defeats
    algorithm confusion: an RS256 key is never handed to an HMAC verifier."""

    hs256: bytes | None
    static: Mapping[str, PublicKey]
    by_kid: Mapping[str, tuple[str, PublicKey]]

    @classmethod
    def from_settings(cls, settings: JwtSettings, environ: Mapping[str, str]) -> KeyRing:
        static: dict[str, PublicKey] = {}
        pem = settings.public_key_pem
        if settings.public_key_path is not None:
            pem = settings.public_key_path.read_text()
        if pem is not None:
            key = _load_pem(pem)
            static[_algorithm_for(key)] = key
        by_kid = _load_jwks(settings.jwks_file) if settings.jwks_file is not None else {}
        return cls(_hs256_secret(settings, environ), static, by_kid)

    @property
    def empty(self) -> bool:
        """No verification key at all: tokens cannot be checked, so they are not used."""
        return self.hs256 is None and not self.static and not self.by_kid

    def select(self, alg: str, kid: str | None) -> bytes | PublicKey:
        """The key that may verify a token with header ``alg``/``kid``.

        Raises:
            IdentityError: no key of that algorithm, or the kid names a key of another type.
        """
        if alg == "HS256":
            if self.hs256 is None:
                raise IdentityError("unknown_key")
            return self.hs256
        if kid is not None and kid in self.by_kid:
            key_alg, key = self.by_kid[kid]
            if key_alg != alg:
                raise IdentityError("algorithm_not_allowed")
            return key
        if alg in self.static:
            return self.static[alg]
        raise IdentityError("unknown_key")


def _hs256_secret(settings: JwtSettings, environ: Mapping[str, str]) -> bytes | None:
    if settings.hs256_secret is not None:
        return settings.hs256_secret.get_secret_value().encode()
    secret = environ.get(settings.hs256_secret_env)
    if not secret:
        return None
    if len(secret.encode()) < _MIN_SECRET_BYTES:
        raise ValueError(f"{settings.hs256_secret_env} must be at least {_MIN_SECRET_BYTES} bytes")
    return secret.encode()


def _load_pem(pem: str) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError:
        raise ValueError("jwt public key: not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("jwt public key: expected an RSA or EC P-256 key")
    return key


def _algorithm_for(key: object) -> str:
    """The single algorithm a public key may verify (ValueError for unsupported keys)."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise ValueError(f"jwt RSA key: at least {_MIN_RSA_BITS} bits required")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return "ES256"
    raise ValueError("jwt key: only RSA (RS256) and EC P-256 (ES256) public keys are supported")


def _load_jwks(path: os.PathLike[str] | str) -> dict[str, tuple[str, PublicKey]]:
    """kid -> (algorithm, public key) from a JWKS file; symmetric and unusable keys are skipped."""
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"jwks file {path}: expected an object with a 'keys' list")
    keys: dict[str, tuple[str, PublicKey]] = {}
    for entry in entries:
        loaded = _jwk(entry)
        if loaded is not None:
            keys[entry["kid"]] = loaded
    return keys


def _jwk(entry: object) -> tuple[str, PublicKey] | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
        return None
    if entry.get("kty") not in ("RSA", "EC") or entry.get("use", "sig") != "sig":
        return None
    try:
        key = jwt.PyJWK(entry).key
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            key = key.public_key()
        alg = _algorithm_for(key)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if entry.get("alg", alg) != alg:
        return None
    return alg, key


class IdentityResolver:
    """Resolves requests to identities under one ``IdentitySettings``; build it once at start-up.

    Raises ``ValueError`` at construction for unusable key material (bad PEM, short secret,
    unreadable JWKS file), so a misconfiguration fails start-up rather than requests.
    """

    def __init__(
        self,
        settings: IdentitySettings,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._jwt = settings.jwt
        self._keys = KeyRing.from_settings(settings.jwt, os.environ if environ is None else environ)
        self.trusted_proxies = TrustedNetworks(settings.trusted_proxies)
        self._cache = _TokenCache(settings.token_cache_size, settings.jwt.leeway_seconds, clock)
        self._admin_roles = frozenset(settings.jwt.admin_roles)

    @property
    def verifies_tokens(self) -> bool:
        """False when no key is configured: bearer tokens are then ignored, not trusted."""
        return not self._keys.empty

    @property
    def cache_size(self) -> int:
        """How many verified tokens are currently cached."""
        return len(self._cache)

    def client_ip(self, peer_ip: str, headers: Mapping[str, str]) -> str:
        """``client_ip`` with this resolver's trusted proxies."""
        return client_ip(peer_ip, headers, self.trusted_proxies)

    def resolve(self, headers: Mapping[str, str], peer_ip: str, client_ip: str) -> Identity:
        """The identity of a request, or ``IdentityError`` (answer 401).

        ``headers`` must be case-insensitive (aiohttp's ``CIMultiDictProxy``)."""
        failure: IdentityError | None = None
        try:
            # With no key configured (a drop-in start) tokens cannot be verified: the request is
            # identified like anonymous traffic instead of being refused.
            token = None if self._keys.empty else self._token(headers)
            if token is not None:
                return self._verified(token)
        except IdentityError as exc:
            if self._settings.invalid_token == "reject":  # noqa: S105 - a mode, not a secret
                raise
            failure = exc
        from_header = self._from_trusted_header(headers, peer_ip, client_ip)
        if from_header is not None:
            return from_header
        if failure is not None and self._jwt.required:
            raise failure
        if self._jwt.required:
            raise IdentityError("missing_token")
        if not self._settings.allow_anonymous:
            raise failure or IdentityError("authentication_required")
        return Identity(
            None, anonymous_session(client_ip, headers), frozenset(), False, "anonymous"
        )

    # -- token extraction and verification

    def _token(self, headers: Mapping[str, str]) -> str | None:
        values = _all(headers, "Authorization")
        if len(values) > 1:
            raise IdentityError("multiple_authorization_headers")
        if values:
            scheme, _, credentials = values[0].strip().partition(" ")
            if scheme.lower() == "bearer":
                if not credentials.strip():
                    raise IdentityError("malformed_token")
                return credentials.strip()
        if self._jwt.cookie_name:
            return _cookie(headers, self._jwt.cookie_name)
        return None

    def _verified(self, token: str) -> Identity:
        if len(token) > self._jwt.max_token_bytes:
            raise IdentityError("token_too_large")
        if not _TOKEN_SHAPE.fullmatch(token):
            raise IdentityError("malformed_token")
        key = hashlib.blake2b(token.encode(), digest_size=20).digest()
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        identity = self._identity_from(token, self._decode(token))
        self._cache.put(key, identity)
        return identity

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise IdentityError("malformed_token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            raise IdentityError("malformed_token")
        if alg not in self._jwt.algorithms:
            raise IdentityError("algorithm_not_allowed")
        verifying_key = self._keys.select(alg, kid)
        try:
            return jwt.decode(
                token,
                verifying_key,
                algorithms=[alg],
                audience=list(self._jwt.audience) or None,
                issuer=self._jwt.issuer,
                leeway=self._jwt.leeway_seconds,
                options={
                    "require": ["exp"] if self._jwt.require_exp else [],
                    "verify_aud": bool(self._jwt.audience),
                },
            )
        except Exception as exc:  # noqa: BLE001 - hostile input: every failure is a 401
            raise IdentityError(_jwt_reason(exc)) from None

    def _identity_from(self, token: str, claims: dict[str, Any]) -> Identity:
        user = _scalar_id(_claim(claims, self._jwt.user_claim))
        if user is None:
            raise IdentityError("missing_user_claim")
        session = _scalar_id(_claim(claims, self._jwt.session_claim)) or _scalar_id(
            claims.get("jti")
        )
        if session is None:
            session = "tok:" + hashlib.sha256(token.encode()).hexdigest()[:32]
        roles = _roles(_claim(claims, self._jwt.role_claim))
        exp = claims.get("exp")
        token_exp = (
            float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
        )
        return Identity(user, session, roles, bool(roles & self._admin_roles), "jwt", token_exp)

    # -- trusted header

    def _from_trusted_header(
        self, headers: Mapping[str, str], peer_ip: str, client_ip: str
    ) -> Identity | None:
        names = self._settings.trusted_header
        if names.user_header is None or parse_ip(peer_ip) not in self.trusted_proxies:
            return None
        user = _header_id(headers.get(names.user_header))
        if user is None:
            return None
        session = _header_id(headers.get(names.session_header)) if names.session_header else None
        if session is None:
            session = "hdr:" + _digest(user, client_ip, headers.get("User-Agent", ""))
        roles: frozenset[str] = frozenset()
        if names.roles_header:
            raw = headers.get(names.roles_header, "")
            roles = frozenset(r.strip() for r in raw.split(",")[:_MAX_ROLES] if r.strip())
        return Identity(user, session, roles, bool(roles & self._admin_roles), "header")


def anonymous_session(client_ip: str, headers: Mapping[str, str]) -> str:
    """A stable pseudo-session for anonymous traffic: a hash of client IP and user agent."""
    return "anon:" + _digest(client_ip, headers.get("User-Agent", ""))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _jwt_reason(exc: Exception) -> str:
    for kind, reason in _JWT_ERRORS:
        if isinstance(exc, kind):
            return reason
    return "invalid_token"


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _scalar_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if 0 < len(text) <= _MAX_ID_LENGTH else None


def _roles(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        items: list[Any] = value.split()
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return frozenset()
    return frozenset(r for r in items[:_MAX_ROLES] if isinstance(r, str) and r)


def _header_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value if _PRINTABLE_ID.fullmatch(value) else None


def _cookie(headers: Mapping[str, str], name: str) -> str | None:
    for line in _all(headers, "Cookie"):
        for pair in line.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key == name:
                return value.strip().strip('"') or None
    return None
