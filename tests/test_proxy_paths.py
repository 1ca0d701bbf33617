"""Path normalisation, rule matching and route templates (proxy/paths.py, config/policy.py).

Expected readings below were worked out by hand from RFC 3986 (section 5.2.4 dot-segment removal,
section 2.3 unreserved characters) and the reading rules in the module docstring.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from config.policy import PathRule, PolicySettings
from proxy.paths import DEFAULT_RULE_NAME, MAX_ROUTE_LENGTH, PathPolicy, normalize, route_template

RULES = [
    {"name": "health", "match": "/health/**", "exempt": True},
    {"name": "static", "match": "/static/**", "exempt": True},
    {"name": "admin", "match": "/api/admin/**", "strict": True},
    {"name": "export", "match": "/api/financial/export/**", "strict": True},
    {"name": "api", "match": "/api/**", "sensitivity": 2},
]


def policy(**overrides: object) -> PathPolicy:
    return PathPolicy(PolicySettings(**{"rules": RULES, **overrides}))


# --------------------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/api/admin/users", ("/api/admin/users",)),
        ("/", ("/",)),
        ("", ("/",)),
        ("//api///admin//users/", ("/api/admin/users",)),
        ("/api/./admin/x/../users", ("/api/admin/users",)),
        ("/../../etc/passwd", ("/etc/passwd",)),
        ("/api/%2e%2e/api/admin", ("/api/admin",)),
        ("/api/x/%2E./.%2e/admin", ("/admin",)),
        ("/api/x/%2e/admin", ("/api/x/admin",)),
        ("/api/adm%69n/%75sers", ("/api/admin/users",)),
        ("/a%7e%2d%5f%2E%41", ("/a~-_.A",)),
        ("/a%3fb%c3%a9", ("/a%3Fb%C3%A9",)),
        ("/a%zz", ("/a%zz",)),
        ("/api/admin?next=/../health", ("/api/admin",)),
        ("/api;jsessionid=1/admin;x", ("/api/admin", "/api;jsessionid=1/admin;x")),
        ("/health/..;/api/admin", ("/api/admin", "/health/..;/api/admin")),
        ("/api%2Fadmin", ("/api%2Fadmin", "/api/admin")),
        ("/api%2fadmin", ("/api%2Fadmin", "/api/admin")),
        ("/api\\admin", ("/api%5Cadmin", "/api/admin")),
        ("/api%5cadmin", ("/api%5Cadmin", "/api/admin")),
        ("/x/%252e%252e/admin", ("/x/%252e%252e/admin", "/admin")),
        ("/x%252fadmin", ("/x%252fadmin", "/x%2Fadmin", "/x/admin")),
        (
            "/api/admin%3Bx/users",
            ("/api/admin%3Bx/users", "/api/admin/users", "/api/admin;x/users"),
        ),
    ],
)
def test_normalize_readings(raw: str, expected: tuple[str, ...]) -> None:
    assert normalize(raw).readings == expected
    assert normalize(raw).rejected is None


def test_readings_combine_every_ambiguity() -> None:
    """An encoded slash and a backslash in one path give all four combinations."""
    assert set(normalize("/a%2Fb\\c").readings) == {"/a%2Fb%5Cc", "/a/b%5Cc", "/a%2Fb/c", "/a/b/c"}
    assert normalize("/a%2Fb\\c").canonical == "/a%2Fb%5Cc"


def test_case_folding_only_when_configured() -> None:
    assert normalize("/API/Adm%49N", case_insensitive=True).readings == ("/api/admin",)
    assert normalize("/API/Adm%49N").readings == ("/API/AdmIN",)
    assert normalize("/API/a%2f", case_insensitive=True).readings == ("/api/a%2F", "/api/a")


@pytest.mark.parametrize(
    "raw", ["/a%00", "/a%2500b", "/a\x00b", "/a\r\nb", "/a\x7f", "/health#/../api/admin", "/x%00/y"]
)
def test_nul_control_and_hash_rejected(raw: str) -> None:
    assert normalize(raw).rejected is not None
    assert normalize(raw).readings == ()
    match = policy().match("GET", raw)
    assert match.rejected is not None and match.rule is None


@given(st.text(max_size=200))
def test_normalize_never_raises(raw: str) -> None:
    result = normalize(raw, case_insensitive=True)
    assert result.rejected is not None or all(r.startswith("/") for r in result.readings)


# --------------------------------------------------------------------------- route templates


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/api/transactions/8812", "/api/transactions/{id}"),
        ("/api/transactions/8812/receipt", "/api/transactions/{id}/receipt"),
        ("/api/users/3f2b8c1e-4d5a-4b6c-9e8f-0a1b2c3d4e5f", "/api/users/{id}"),
        ("/api/files/0123456789abcdef0123", "/api/files/{id}"),
        ("/api/files/ABCDEF0123456789", "/api/files/{id}"),
        ("/api/share/Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5", "/api/share/{id}"),
        ("/api/v2/reports/summary", "/api/v2/reports/summary"),
        ("/api/expense-reports/monthly-summary", "/api/expense-reports/monthly-summary"),
        ("/api/abc123", "/api/abc123"),
        ("/api/" + "x" * 65, "/api/{id}"),
        ("/", "/"),
    ],
)
def test_route_template(path: str, route: str) -> None:
    assert route_template(path) == route


def test_route_template_bounded() -> None:
    long = "/" + "/".join(f"seg{i}" for i in range(200))
    assert len(route_template(long)) == MAX_ROUTE_LENGTH


def test_match_reports_route_of_normalised_path() -> None:
    match = policy().match("GET", "/api//transactions/./8812/")
    assert (match.normalized, match.route) == ("/api/transactions/8812", "/api/transactions/{id}")


# --------------------------------------------------------------------------- rules


def test_first_match_wins_in_order() -> None:
    broad_first = PathPolicy(
        PolicySettings(
            rules=[
                {"name": "api", "match": "/api/**"},
                {"name": "admin", "match": "/api/admin/**", "strict": True},
            ]
        )
    )
    assert broad_first.match("GET", "/api/admin/users").rule_name == "api"
    assert policy().match("GET", "/api/admin/users").rule_name == "admin"


@pytest.mark.parametrize(
    ("path", "rule_name"),
    [
        ("/api/admin", "admin"),
        ("/api/admin/", "admin"),
        ("/api/admin/a/b/c", "admin"),
        ("/api/adminx", "api"),
        ("/api", "api"),
        ("/apix", DEFAULT_RULE_NAME),
        ("/health", "health"),
        ("/", DEFAULT_RULE_NAME),
    ],
)
def test_double_star_covers_any_depth_including_none(path: str, rule_name: str) -> None:
    assert policy().match("GET", path).rule_name == rule_name


def test_single_star_stays_within_one_segment() -> None:
    rules = [{"name": "csv", "match": "/reports/*/export.csv"}]
    p = PathPolicy(PolicySettings(rules=rules))
    assert p.match("GET", "/reports/2024/export.csv").rule_name == "csv"
    assert p.match("GET", "/reports/2024/q1/export.csv").rule_name == DEFAULT_RULE_NAME
    assert p.match("GET", "/reports/2024/exportXcsv").rule_name == DEFAULT_RULE_NAME


def test_regex_rule_is_searched() -> None:
    rules = [{"name": "versioned", "match": r"regex:^/api/v\d+/admin(/|$)", "strict": True}]
    p = PathPolicy(PolicySettings(rules=rules))
    assert p.match("GET", "/api/v12/admin/users").strict
    assert p.match("GET", "/api/vx/admin").rule_name == DEFAULT_RULE_NAME


def test_methods_filter_and_head_follows_get() -> None:
    rules = [
        {"name": "create", "match": "/api/tx/**", "methods": ["post"], "sensitivity": 3},
        {"name": "read", "match": "/api/tx/**", "methods": ["GET"]},
    ]
    p = PathPolicy(PolicySettings(rules=rules))
    assert p.match("POST", "/api/tx/1").rule_name == "create"
    assert p.match("post", "/api/tx/1").rule_name == "create"
    assert p.match("GET", "/api/tx/1").rule_name == "read"
    assert p.match("HEAD", "/api/tx/1").rule_name == "read"
    assert p.match("DELETE", "/api/tx/1").rule_name == DEFAULT_RULE_NAME


def test_unmatched_path_uses_default_sensitivity() -> None:
    match = policy(default_sensitivity=3).match("GET", "/other")
    assert (match.rule, match.rule_name, match.sensitivity) == (None, "default", 3)
    assert policy().match("GET", "/api/x").sensitivity == 2
    assert not match.exempt and not match.strict


def test_case_insensitive_policy_matches_any_case() -> None:
    assert policy(case_insensitive=True).match("GET", "/API/ADMIN/Users").rule_name == "admin"
    assert policy().match("GET", "/API/ADMIN/Users").rule_name == DEFAULT_RULE_NAME


# --------------------------------------------------------------------------- ambiguity


def test_encoded_slash_escape_from_exempt_to_strict_is_caught() -> None:
    """Canonically this is under /health (exempt); split at %2F it is /api/admin."""
    raw = "/health/x%2F..%2F..%2Fapi%2Fadmin"
    match = policy().match("GET", raw)
    assert (match.rule_name, match.normalized, match.ambiguous) == ("admin", "/api/admin", True)
    assert policy(ambiguous_paths="reject").match("GET", raw).rejected is not None


def test_strictest_ordering() -> None:
    """strict > normal/unmatched > exempt; shadow below enforce; fail-closed above open."""
    rules = [
        {"name": "shadowed", "match": "/a/**", "mode": "shadow"},
        {"name": "enforced", "match": "/b/**"},
        {"name": "free", "match": "/c/**", "exempt": True},
        {"name": "closed", "match": "/d/**", "fail": "closed"},
    ]
    p = PathPolicy(PolicySettings(rules=rules))
    assert p.match("GET", "/a%2Fx/../../b").rule_name == "enforced"
    assert p.match("GET", "/c%2Fx/../../zzz").rule_name == DEFAULT_RULE_NAME
    assert p.match("GET", "/b%2Fx/../../d").rule_name == "closed"


def test_reject_only_when_readings_disagree() -> None:
    """Both readings are under /api/admin: the same rule, so not rejected even in reject mode."""
    match = policy(ambiguous_paths="reject").match("GET", "/api/admin/a%2Fb")
    assert (match.rejected, match.rule_name, match.ambiguous) == (None, "admin", True)


def test_semicolon_params_cannot_hide_strict_path() -> None:
    match = policy().match("GET", "/static/..;/api/admin/users")
    assert match.rule_name == "admin"


# --------------------------------------------------------------------------- property


def _spell_segment(draw: st.DrawFn, segment: str, fold_case: bool) -> str:
    out = []
    for ch in segment:
        if fold_case and ch.isalpha() and draw(st.booleans()):
            ch = ch.swapcase()
        if draw(st.integers(0, 3)) == 0:
            hex_ = f"{ord(ch):02X}"
            ch = "%" + (hex_.lower() if draw(st.booleans()) else hex_)
        out.append(ch)
    if draw(st.integers(0, 4)) == 0:
        delimiter = draw(st.sampled_from([";", "%3B", "%3b"]))
        out.append(delimiter + draw(st.sampled_from(["x=1", "jsessionid=abc", ""])))
    return "".join(out)


DOT = ["."] + ["%2e", "%2E"]
DOTDOT = ["..", ".%2e", "%2e.", "%2E%2e", "..;"]
SEPARATORS = ["/", "//", "/./", "%2F", "%2f", "\\", "%5C", "%5c", "/%2e/"]


@st.composite
def spellings(draw: st.DrawFn, path: str, fold_case: bool) -> str:
    """A random spelling of ``path`` that an upstream could resolve to ``path``."""
    segments = [s for s in path.split("/") if s]
    prefix = ""
    if draw(st.booleans()):
        # Start inside an exempt area and climb out of it.
        junk = draw(st.lists(st.sampled_from(["health", "static", "x", "health;a"]), min_size=1))
        sep = draw(st.sampled_from(SEPARATORS))
        prefix = sep + sep.join(junk) + "".join(sep + draw(st.sampled_from(DOTDOT)) for _ in junk)
    parts = []
    for segment in segments:
        sep = draw(st.sampled_from(SEPARATORS))
        if draw(st.integers(0, 3)) == 0:
            parts.append(sep + draw(st.sampled_from(DOT)))
        if draw(st.integers(0, 3)) == 0:
            parts.append(sep + "junk" + sep + draw(st.sampled_from(DOTDOT)))
        parts.append(sep + _spell_segment(draw, segment, fold_case))
    tail = draw(st.sampled_from(["", "/", "//", "?a=1", "?next=/health", "/."]))
    spelled = prefix + "".join(parts) + tail
    if not spelled.startswith("/"):
        spelled = "/" + spelled
    return spelled


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([("/api/admin/users", "admin"), ("/api/financial/export/csv", "export")]),
    st.data(),
)
def test_every_spelling_of_a_protected_path_matches_its_strict_rule(
    case: tuple[str, str], data: st.DataObject
) -> None:
    path, rule = case
    strictest = policy(case_insensitive=True)
    rejecting = policy(case_insensitive=True, ambiguous_paths="reject")
    raw = data.draw(spellings(path, fold_case=True))
    match = strictest.match("GET", raw)
    assert match.rule_name == rule and match.strict, raw
    refused = rejecting.match("GET", raw)
    assert refused.rejected is not None or refused.rule_name == rule, raw


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_spellings_without_case_folding_on_case_sensitive_policy(data: st.DataObject) -> None:
    raw = data.draw(spellings("/api/admin/users", fold_case=False))
    assert policy().match("POST", raw).rule_name == "admin", raw


# --------------------------------------------------------------------------- cache and config


def test_match_is_cached_and_cache_is_bounded() -> None:
    p = policy(cache_size=8)
    first = p.match("GET", "/api/x")
    assert p.match("GET", "/api/x") is first
    for i in range(50):
        p.match("GET", f"/api/tx/{i}")
    assert p.cache_info().currsize == 8


@pytest.mark.parametrize(
    "rule",
    [
        {"name": "r", "match": "regex:(unclosed"},
        {"name": "r", "match": "api/no-leading-slash"},
        {"name": "r", "match": "/a**/b"},
        {"name": "r", "match": "/a", "exempt": True, "strict": True},
        {"name": "r", "match": "/a", "sensitivity": 4},
        {"name": "r", "match": "/a", "methods": ["GET /"]},
        {"name": "r", "match": "/a", "thresholds": {"challenge": 0.9, "block": 0.8}},
        {"name": "r", "match": "/a", "allowlist": {"cidrs": ["10.0.0.300/8"]}},
        {"name": "r", "match": "/a", "mode": "audit"},
        {"name": "r", "match": "/a", "unknown_key": 1},
    ],
)
def test_invalid_rules_fail_at_load(rule: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PathRule(**rule)


def test_duplicate_rule_names_rejected() -> None:
    with pytest.raises(ValidationError):
        PolicySettings(rules=[{"name": "a", "match": "/a"}, {"name": "a", "match": "/b"}])


def test_rule_defaults() -> None:
    strict = PathRule(name="s", match="/s/**", strict=True)
    normal = PathRule(
        name="n", match="/n", methods=["get", "Post"], allowlist={"cidrs": ["10.1.2.3/8"]}
    )
    assert (strict.effective_fail, normal.effective_fail) == ("closed", "open")
    assert PathRule(name="s", match="/s", strict=True, fail="open").effective_fail == "open"
    assert normal.methods == ("GET", "POST")
    assert normal.allowlist.cidrs == ("10.0.0.0/8",)
    assert PolicySettings().ambiguous_paths == "strictest"
