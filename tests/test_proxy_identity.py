"""Client IP through trusted proxies, and JWT / trusted-header / anonymous identity."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from config.identity import IdentitySettings
from proxy.identity import (
    Identity,
    IdentityError,
    IdentityResolver,
    TrustedNetworks,
    client_ip,
    parse_ip,
)

SECRET = "s" * 40
KNOWN_REASONS = {
    "malformed_token",
    "token_too_large",
    "algorithm_not_allowed",
    "unknown_key",
    "invalid_signature",
    "invalid_token",
    "multiple_authorization_headers",
}
PEER = "203.0.113.9"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def bearer(token: str, *extra: tuple[str, str]) -> CIMultiDictProxy[str]:
    return headers(("Authorization", f"Bearer {token}"), ("User-Agent", "ua/1"), *extra)


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"sub": "alice", "sid": "sess-1", "roles": ["user"], "exp": int(time.time()) + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def resolver(**identity: Any) -> IdentityResolver:
    jwt_settings = {"hs256_secret": SECRET, **identity.pop("jwt", {})}
    return IdentityResolver(IdentitySettings(jwt=jwt_settings, **identity), environ={})


def resolve(r: IdentityResolver, h: CIMultiDictProxy[str], peer: str = PEER) -> Identity:
    return r.resolve(h, peer, client_ip(peer, h, r.trusted_proxies))


def reason(r: IdentityResolver, h: CIMultiDictProxy[str]) -> str:
    with pytest.raises(IdentityError) as info:
        resolve(r, h)
    assert info.value.status == 401
    return info.value.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], key: bytes | None = None) -> str:
    """A token built by hand, so we can sign it with keys PyJWT refuses to use."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), "sha256").digest()
    return f"{signing_input}.{b64(signature)}"


# --------------------------------------------------------------------------- happy paths


def test_hs256_token_gives_user_session_roles() -> None:
    token = jwt.encode(claims(roles=["user", "admin"]), SECRET, algorithm="HS256")
    identity = resolve(resolver(), bearer(token))
    assert identity == Identity(
        "alice", "sess-1", frozenset({"user", "admin"}), True, "jwt", float(claims()["exp"])
    )


def test_hs256_secret_from_environment() -> None:
    env_secret = "e" * 32
    r = IdentityResolver(IdentitySettings(), environ={"BEHAVIORGATE_JWT_SECRET": env_secret})
    token = jwt.encode(claims(), env_secret, algorithm="HS256")
    assert resolve(r, bearer(token)).user_id == "alice"
    with pytest.raises(ValueError):
        IdentityResolver(IdentitySettings(), environ={"BEHAVIORGATE_JWT_SECRET": "short"})


def test_rs256_with_public_key_pem_and_path(rsa_key: rsa.RSAPrivateKey, tmp_path: Any) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    from_pem = resolver(jwt={"public_key_pem": pem(rsa_key)})
    assert resolve(from_pem, bearer(token)).session_id == "sess-1"
    key_file = tmp_path / "key.pem"
    key_file.write_text(pem(rsa_key))
    from_path = resolver(jwt={"public_key_path": str(key_file)})
    assert resolve(from_path, bearer(token)).user_id == "alice"


def test_es256_with_public_key(ec_key: ec.EllipticCurvePrivateKey) -> None:
    token = jwt.encode(claims(), ec_key, algorithm="ES256")
    assert resolve(resolver(jwt={"public_key_pem": pem(ec_key)}), bearer(token)).user_id == "alice"


def test_jwks_file_picks_key_by_kid(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, tmp_path: Any
) -> None:
    rsa_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    ec_jwk = jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    jwks = {"keys": [{**rsa_jwk, "kid": "r1"}, {**ec_jwk, "kid": "e1"}, {"kty": "oct", "kid": "x"}]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    r = resolver(jwt={"jwks_file": str(path)})
    rs = jwt.encode(claims(sub="r"), rsa_key, algorithm="RS256", headers={"kid": "r1"})
    es = jwt.encode(claims(sub="e"), ec_key, algorithm="ES256", headers={"kid": "e1"})
    assert resolve(r, bearer(rs)).user_id == "r"
    assert resolve(r, bearer(es)).user_id == "e"
    wrong_type = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "e1"})
    assert reason(r, bearer(wrong_type)) == "algorithm_not_allowed"
    unknown = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "nope"})
    assert reason(r, bearer(unknown)) == "unknown_key"


# --------------------------------------------------------------------------- time claims


def test_expired_and_leeway() -> None:
    r = resolver(jwt={"leeway_seconds": 30})
    now = int(time.time())
    within = jwt.encode(claims(exp=now - 10), SECRET, algorithm="HS256")
    assert resolve(r, bearer(within)).user_id == "alice"
    expired = jwt.encode(claims(exp=now - 100), SECRET, algorithm="HS256")
    assert reason(r, bearer(expired)) == "token_expired"


def test_not_before_and_leeway() -> None:
    r = resolver(jwt={"leeway_seconds": 30})
    now = int(time.time())
    soon = jwt.encode(claims(nbf=now + 10), SECRET, algorithm="HS256")
    assert resolve(r, bearer(soon)).user_id == "alice"
    future = jwt.encode(claims(nbf=now + 120), SECRET, algorithm="HS256")
    assert reason(r, bearer(future)) == "token_not_yet_valid"


def test_exp_required_by_default() -> None:
    token = jwt.encode(claims(exp=None), SECRET, algorithm="HS256")
    assert reason(resolver(), bearer(token)) == "missing_claim"
    assert resolve(resolver(jwt={"require_exp": False}), bearer(token)).token_exp is None


# --------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_rejected(alg: str) -> None:
    token = hand_made({"alg": alg, "typ": "JWT"}, claims())
    assert reason(resolver(), bearer(token)) == "algorithm_not_allowed"


def test_hs256_signed_with_rsa_public_pem_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    """The classic confusion: HMAC keyed by the RSA public key the verifier knows."""
    public_pem = pem(rsa_key).encode()
    forged = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), key=public_pem)
    rsa_only = IdentityResolver(IdentitySettings(jwt={"public_key_pem": pem(rsa_key)}), environ={})
    assert reason(rsa_only, bearer(forged)) == "unknown_key"
    with_secret = resolver(jwt={"public_key_pem": pem(rsa_key)})
    assert reason(with_secret, bearer(forged)) == "invalid_signature"


def test_algorithms_allowlist(rsa_key: rsa.RSAPrivateKey) -> None:
    r = resolver(jwt={"algorithms": ["RS256"], "public_key_pem": pem(rsa_key)})
    hs = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert reason(r, bearer(hs)) == "algorithm_not_allowed"


def test_es256_key_cannot_verify_rs256_header(ec_key: ec.EllipticCurvePrivateKey) -> None:
    r = resolver(jwt={"public_key_pem": pem(ec_key)})
    token = hand_made({"alg": "RS256"}, claims(), key=b"x" * 32)
    assert reason(r, bearer(token)) == "unknown_key"


def test_tampered_payload_rejected() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    head, _, sig = token.split(".")
    forged = f"{head}.{b64(json.dumps(claims(sub='root')).encode())}.{sig}"
    assert reason(resolver(), bearer(forged)) == "invalid_signature"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer abc", "malformed_token"),
        ("Bearer a.b.c", "malformed_token"),
        ("Bearer ", "malformed_token"),
        ("Bearer é.é.é", "malformed_token"),
        ("Bearer " + b64(b"{}") + "." + b64(b"[]") + ".", "malformed_token"),
        ("Bearer " + b64(b'{"alg":"HS512"}') + ".e30.", "algorithm_not_allowed"),
        ("Bearer " + b64(b'{"alg":"HS256","kid":5}') + ".e30.", "malformed_token"),
        ("Bearer " + "a" * 9000, "token_too_large"),
    ],
)
def test_garbage_tokens(value: str, expected: str) -> None:
    assert reason(resolver(), headers(("Authorization", value))) == expected


def test_two_authorization_headers_rejected() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    h = headers(("Authorization", f"Bearer {token}"), ("Authorization", "Bearer other"))
    assert reason(resolver(), h) == "multiple_authorization_headers"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_hostile_authorization_only_ever_raises_identity_error(value: str) -> None:
    try:
        resolve(resolver(), headers(("Authorization", "Bearer " + value)))
    except IdentityError as exc:
        assert exc.reason in KNOWN_REASONS


def test_non_bearer_schemes_are_not_tokens() -> None:
    identity = resolve(resolver(), headers(("Authorization", "Basic dXNlcjpwYXNz")))
    assert identity.source == "anonymous"


# --------------------------------------------------------------------------- claims


def test_configurable_claim_names() -> None:
    r = resolver(
        jwt={
            "user_claim": "email",
            "session_claim": "session.id",
            "role_claim": "realm_access.roles",
            "admin_roles": ["ops"],
        }
    )
    token = jwt.encode(
        claims(email="a@x.io", session={"id": 77}, realm_access={"roles": ["ops"]}),
        SECRET,
        algorithm="HS256",
    )
    identity = resolve(r, bearer(token))
    assert (identity.user_id, identity.session_id, identity.is_admin) == ("a@x.io", "77", True)


def test_session_falls_back_to_jti_then_token_hash() -> None:
    with_jti = jwt.encode(claims(sid=None, jti="j-9"), SECRET, algorithm="HS256")
    assert resolve(resolver(), bearer(with_jti)).session_id == "j-9"
    bare = jwt.encode(claims(sid=None), SECRET, algorithm="HS256")
    expected = "tok:" + hashlib.sha256(bare.encode()).hexdigest()[:32]
    assert resolve(resolver(), bearer(bare)).session_id == expected


def test_space_separated_roles_and_missing_user() -> None:
    token = jwt.encode(claims(roles="read admin"), SECRET, algorithm="HS256")
    assert resolve(resolver(), bearer(token)).roles == frozenset({"read", "admin"})
    no_user = jwt.encode(claims(sub=None), SECRET, algorithm="HS256")
    assert reason(resolver(), bearer(no_user)) == "missing_user_claim"


def test_audience_and_issuer() -> None:
    r = resolver(jwt={"audience": ["api"], "issuer": "https://idp"})
    good = jwt.encode(claims(aud="api", iss="https://idp"), SECRET, algorithm="HS256")
    assert resolve(r, bearer(good)).user_id == "alice"
    wrong_aud = jwt.encode(claims(aud="other", iss="https://idp"), SECRET, algorithm="HS256")
    assert reason(r, bearer(wrong_aud)) == "invalid_audience"
    wrong_iss = jwt.encode(claims(aud="api", iss="https://evil"), SECRET, algorithm="HS256")
    assert reason(r, bearer(wrong_iss)) == "invalid_issuer"


def test_token_from_cookie() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    r = resolver(jwt={"cookie_name": "auth"})
    h = headers(("Cookie", f"theme=dark; auth={token}"))
    assert resolve(r, h).source == "jwt"


# --------------------------------------------------------------------------- policy


def test_invalid_token_modes() -> None:
    expired = jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256")
    assert reason(resolver(), bearer(expired)) == "token_expired"
    anon = resolve(resolver(invalid_token="anonymous"), bearer(expired))  # noqa: S106
    assert (anon.source, anon.user_id) == ("anonymous", None)
    strict = resolver(invalid_token="anonymous", allow_anonymous=False)  # noqa: S106
    assert reason(strict, bearer(expired)) == "token_expired"


def test_anonymous_not_allowed_and_token_required() -> None:
    assert reason(resolver(allow_anonymous=False), headers()) == "authentication_required"
    assert reason(resolver(jwt={"required": True}), headers()) == "missing_token"


def test_anonymous_session_is_stable_and_distinct() -> None:
    r = resolver()
    one = r.resolve(headers(("User-Agent", "ua/1")), PEER, "198.51.100.7")
    again = r.resolve(headers(("User-Agent", "ua/1")), PEER, "198.51.100.7")
    other_ua = r.resolve(headers(("User-Agent", "ua/2")), PEER, "198.51.100.7")
    other_ip = r.resolve(headers(("User-Agent", "ua/1")), PEER, "198.51.100.8")
    expected = "anon:" + hashlib.sha256(b"198.51.100.7\x00ua/1").hexdigest()[:32]
    assert one.session_id == again.session_id == expected
    assert len({one.session_id, other_ua.session_id, other_ip.session_id}) == 3
    assert (one.user_id, one.source, one.roles, one.is_admin) == (
        None,
        "anonymous",
        frozenset(),
        False,
    )


def test_trusted_header_only_from_trusted_peer() -> None:
    r = resolver(
        trusted_proxies=["10.0.0.0/8"],
        trusted_header={
            "user_header": "X-Auth-User",
            "session_header": "X-Auth-Session",
            "roles_header": "X-Auth-Roles",
        },
    )
    h = headers(("X-Auth-User", "bob"), ("X-Auth-Session", "s-2"), ("X-Auth-Roles", "admin, x"))
    trusted = resolve(r, h, peer="10.1.2.3")
    assert trusted == Identity("bob", "s-2", frozenset({"admin", "x"}), True, "header")
    untrusted = resolve(r, h, peer=PEER)
    assert (untrusted.source, untrusted.user_id) == ("anonymous", None)


def test_trusted_header_session_derived_when_missing() -> None:
    r = resolver(trusted_proxies=["10.0.0.1/32"], trusted_header={"user_header": "X-User"})
    h = headers(("X-User", "carol"), ("User-Agent", "ua"))
    identity = r.resolve(h, "10.0.0.1", "198.51.100.1")
    expected = "hdr:" + hashlib.sha256(b"carol\x00198.51.100.1\x00ua").hexdigest()[:32]
    assert (identity.session_id, identity.source) == (expected, "header")


# --------------------------------------------------------------------------- client IP


def test_xff_from_untrusted_peer_is_ignored() -> None:
    h = headers(
        ("X-Forwarded-For", "1.1.1.1"), ("X-Real-IP", "2.2.2.2"), ("Forwarded", "for=3.3.3.3")
    )
    assert client_ip(PEER, h, ["10.0.0.0/8"]) == PEER
    assert client_ip(PEER, h, []) == PEER


def test_xff_chain_through_two_trusted_proxies() -> None:
    """client spoofs 6.6.6.6; real client 198.51.100.4; proxies 10.0.0.5 then 10.0.0.1 (peer)."""
    h = headers(("X-Forwarded-For", "6.6.6.6, 198.51.100.4"), ("X-Forwarded-For", "10.0.0.5"))
    assert client_ip("10.0.0.1", h, TrustedNetworks(["10.0.0.0/8"])) == "198.51.100.4"


def test_xff_all_trusted_gives_leftmost_and_garbage_stops_walk() -> None:
    trusted = TrustedNetworks(["10.0.0.0/8"])
    assert client_ip("10.0.0.1", headers(("X-Forwarded-For", "10.9.9.9")), trusted) == "10.9.9.9"
    garbage = headers(("X-Forwarded-For", "1.2.3.4, not-an-ip"))
    assert client_ip("10.0.0.1", garbage, trusted) == "10.0.0.1"
    assert client_ip("10.0.0.1", headers(("X-Forwarded-For", "")), trusted) == "10.0.0.1"


def test_forwarded_ports_brackets_and_mapped_addresses() -> None:
    trusted = ["10.0.0.0/8", "2001:db8::/32"]
    assert client_ip("10.0.0.1", headers(("X-Forwarded-For", "1.2.3.4:5678")), trusted) == "1.2.3.4"
    v6 = headers(("Forwarded", 'for="[2001:db8:cafe::17]:4711";proto=https'))
    assert client_ip("::ffff:10.0.0.1", v6, trusted) == "2001:db8:cafe::17"
    assert client_ip("10.0.0.1", headers(("X-Real-IP", "5.6.7.8")), trusted) == "5.6.7.8"
    assert client_ip("", headers(), trusted) == "unknown"


@given(st.text(max_size=80))
def test_parse_ip_never_raises(value: str) -> None:
    parsed = parse_ip(value)
    assert parsed is None or str(parsed)


# --------------------------------------------------------------------------- cache


def test_verified_tokens_cached_until_exp(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [time.time()]
    r = IdentityResolver(
        IdentitySettings(jwt={"hs256_secret": SECRET, "leeway_seconds": 0}),
        environ={},
        clock=lambda: now[0],
    )
    token = jwt.encode(claims(exp=int(now[0]) + 60), SECRET, algorithm="HS256")
    first = resolve(r, bearer(token))

    def must_not_verify(*args: Any, **kwargs: Any) -> None:
        raise jwt.InvalidSignatureError("verification should have been cached")

    monkeypatch.setattr(jwt, "decode", must_not_verify)
    assert resolve(r, bearer(token)) is first
    now[0] += 61
    assert reason(r, bearer(token)) == "invalid_signature"


def test_token_cache_bounded() -> None:
    r = resolver(token_cache_size=3)
    for i in range(10):
        resolve(r, bearer(jwt.encode(claims(sub=f"u{i}"), SECRET, algorithm="HS256")))
    assert r.cache_size == 3


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "bad",
    [
        {"jwt": {"hs256_secret": "too-short"}},
        {"jwt": {"algorithms": ["none"]}},
        {"jwt": {"algorithms": []}},
        {"jwt": {"public_key_pem": "x", "public_key_path": "key.pem"}},
        {"trusted_proxies": ["10.0.0.0/33"]},
        {"invalid_token": "ignore"},
    ],
)
def test_invalid_identity_settings(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        IdentitySettings(**bad)


def test_weak_or_wrong_keys_fail_at_construction() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with pytest.raises(ValueError):
        resolver(jwt={"public_key_pem": pem(small)})
    with pytest.raises(ValueError):
        resolver(jwt={"public_key_pem": pem(ec.generate_private_key(ec.SECP384R1()))})
    with pytest.raises(ValueError):
        resolver(jwt={"public_key_pem": "-----BEGIN PUBLIC KEY-----\ngarbage\n"})


def test_without_any_key_tokens_are_ignored_not_refused():
    """A drop-in start with no key configured: the token cannot be verified, so the request is
    identified like anonymous traffic (never trusted, never refused)."""
    from config.identity import IdentitySettings as _IdentitySettings
    from proxy.identity import IdentityResolver as _Resolver

    resolver = _Resolver(_IdentitySettings(), environ={})
    assert resolver.verifies_tokens is False
    forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2ln"
    ident = resolver.resolve(
        {"Authorization": f"Bearer {forged}", "User-Agent": "ua"}, "10.0.0.5", "10.0.0.5"
    )
    assert ident.source == "anonymous" and ident.user_id is None and not ident.is_admin
    required = _Resolver(_IdentitySettings(jwt={"required": True}), environ={})
    try:
        required.resolve({"Authorization": f"Bearer {forged}"}, "10.0.0.5", "10.0.0.5")
    except Exception as exc:  # noqa: BLE001
        assert type(exc).__name__ == "IdentityError"
    else:
        raise AssertionError("a required token cannot be satisfied without a key")
