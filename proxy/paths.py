"""Path policy: read a request path the way an upstream might, and pick the rule that applies.

Security model. The gateway forwards the raw request-target untouched, so the upstream decides
what the path *means*. Matching must therefore see every meaning an upstream could plausibly give
it, and never a laxer one than the upstream acts on:

* the canonical reading resolves dot segments (also ``%2e``), drops empty segments and
  ``;params``, decodes percent-encoded unreserved characters (RFC 3986 section 2.3) and, when
  configured, folds case;
* an encoded slash (``%2F``), a backslash (raw or ``%5C``), a raw ``;`` (parameters kept or
  cut), and an over-decoding upstream (``%252e``/``%252f``/``%255c``/``%253b`` decoded twice,
  ``%3B`` decoded into a parameter ``;``) can each be read two ways, so every combination is a
  further reading (at most 16);
* each reading takes the first rule that matches it; across readings the *strictest* rule wins
  (or, with ``ambiguous_paths: reject``, readings that disagree on the rule are rejected);
* NUL (raw or ``%00``) and other control characters are rejected outright.

Strictness order, least to most strict: exempt < unmatched/normal rules < strict. A strict reading
therefore always beats an exempt one: an attacker cannot make an admin path look like a health
check. Among normal rules ties are broken by enforcing over shadow, fail-closed over fail-open,
no allowlist over allowlist, then higher sensitivity; remaining ties keep the earliest reading.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from config.policy import PathRule, PolicySettings, compile_match, is_regex

__all__ = (
    "DEFAULT_RULE_NAME",
    "NormalizedPath",
    "PathMatch",
    "PathPolicy",
    "normalize",
    "route_template",
)

DEFAULT_RULE_NAME = "default"
MAX_ROUTE_LENGTH = 256
_MAX_CACHED_PATH = 1024
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
# A raw '#' cannot be in a request-target; an upstream reading it literally would see different
# segments than a gateway that cuts a "fragment" off, so it is refused like NUL.
_FORBIDDEN_RE = re.compile(r"[\x00-\x1f\x7f#]|%(?:25)?00")
# Anything that may need more than the identity reading (escapes, ;, backslash, dots, //, or a
# trailing slash); a path without any of these is already canonical.
_NEEDS_WORK_RE = re.compile(r"[%;\\\x00-\x1f\x7f#]|//|/\.|/$")
_ENCODED_SLASH_RE = re.compile(r"%2[fF]")
_BACKSLASH_RE = re.compile(r"\\|%5[cC]")
_DOUBLE_RE = re.compile(r"%25(2[eEfF]|5[cC]|3[bB])")
_ENCODED_SEMICOLON_RE = re.compile(r"%3[bB]")

_ID_RE = re.compile(
    r"\d+"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,}"
    r"|(?=[^/]*\d)(?=[^/]*[A-Za-z])[A-Za-z0-9_-]{24,}={0,2}"
)
_SHORTEST_NON_NUMERIC_ID = 16
_LONG_SEGMENT = 64


class NormalizedPath(NamedTuple):
    """Every reading of a path, canonical first; or why the path is refused."""

    readings: tuple[str, ...]
    rejected: str | None = None

    @property
    def canonical(self) -> str:
        return self.readings[0] if self.readings else ""


class PathMatch(NamedTuple):
    """The policy outcome for one request path.

    ``rule`` is None for unmatched (``rule_name == "default"``) and rejected paths. When
    ``rejected`` is set the caller answers 400 and nothing else here is meaningful.
    """

    rule: PathRule | None
    rule_name: str
    normalized: str
    route: str
    sensitivity: int
    rejected: str | None = None
    ambiguous: bool = False

    @property
    def exempt(self) -> bool:
        return self.rule is not None and self.rule.exempt

    @property
    def strict(self) -> bool:
        return self.rule is not None and self.rule.strict


def normalize(raw_path: str, *, case_insensitive: bool = False) -> NormalizedPath:
    """Read ``raw_path`` (a raw request-target; the query is ignored) every way an upstream
    might. Pure; never raises on hostile input."""
    path = raw_path.partition("?")[0]
    if path.startswith("/") and not _NEEDS_WORK_RE.search(path):
        return NormalizedPath((path.lower() if case_insensitive else path,))
    if _FORBIDDEN_RE.search(path):
        return NormalizedPath((), "forbidden character in path (NUL, control or '#')")
    readings: dict[str, None] = {}
    for flags in _reading_flags(path):
        readings.setdefault(_read(path, *flags, lower=case_insensitive), None)
    return NormalizedPath(tuple(readings))


def _reading_flags(path: str) -> list[tuple[bool, bool, bool, bool]]:
    """(split %2F, split backslash, keep ;params, over-decode) combinations; canonical first."""
    if "%" not in path and "\\" not in path and ";" not in path:
        return [(False, False, False, False)]
    decoded = _over_decode(path)
    options = (
        (False, True) if _ENCODED_SLASH_RE.search(decoded) else (False,),
        (False, True) if _BACKSLASH_RE.search(decoded) else (False,),
        (False, True) if ";" in decoded else (False,),
        (False, True) if decoded != path else (False,),
    )
    return list(itertools.product(*options))


def _over_decode(path: str) -> str:
    """What an upstream that decodes too much sees: %252e/%252f/%255c/%253b decoded twice and
    %3B decoded into a ';' that then starts path parameters."""
    return _ENCODED_SEMICOLON_RE.sub(";", _DOUBLE_RE.sub(r"%\1", path))


def _read(
    path: str,
    split_slash: bool,
    split_backslash: bool,
    keep_params: bool,
    over_decode: bool,
    *,
    lower: bool,
) -> str:
    if over_decode:
        path = _over_decode(path)
    path = _BACKSLASH_RE.sub("/", path) if split_backslash else path.replace("\\", "%5C")
    if split_slash:
        path = _ENCODED_SLASH_RE.sub("/", path)
    segments: list[str] = []
    for segment in path.split("/"):
        if not keep_params:
            segment = segment.partition(";")[0]
        if lower:
            segment = segment.lower()
        if "%" in segment:
            segment = _decode_unreserved(segment, lower)
        if segment == ".." and segments:
            segments.pop()
        elif segment not in ("", ".", ".."):
            segments.append(segment)
    return "/" + "/".join(segments)


def _decode_unreserved(segment: str, lower: bool) -> str:
    """Decode escapes of unreserved characters; upper-case the hex of all others."""

    def repl(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        if char in _UNRESERVED:
            return char.lower() if lower else char
        return "%" + m.group(1).upper()

    return _ESCAPE_RE.sub(repl, segment)


def route_template(path: str) -> str:
    """Replace id-like segments with ``{id}``: ``/api/transactions/8812`` ->
    ``/api/transactions/{id}``. Ids: digits, UUIDs, hex of 16+ characters, base64url-like tokens
    of 24+ characters mixing letters and digits, and any segment over 64 characters. The result
    is at most ``MAX_ROUTE_LENGTH`` characters so an attacker cannot grow feature keys."""
    parts = [_template_segment(s) for s in path.split("/")]
    return "/".join(parts)[:MAX_ROUTE_LENGTH]


def _template_segment(segment: str) -> str:
    if len(segment) < _SHORTEST_NON_NUMERIC_ID:
        # Fast path: below 16 characters only an all-digit segment is an id.
        return "{id}" if segment.isascii() and segment.isdigit() else segment
    if len(segment) > _LONG_SEGMENT or _ID_RE.fullmatch(segment):
        return "{id}"
    return segment


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: PathRule
    matches: Callable[[str], object]
    methods: frozenset[str] | None


class PathPolicy:
    """The configured rules, compiled once; ``match`` is cached for hot paths."""

    __slots__ = ("_settings", "_rules", "_cached_match")

    def __init__(self, settings: PolicySettings) -> None:
        self._settings = settings
        self._rules = tuple(_compile(r, settings.case_insensitive) for r in settings.rules)
        self._cached_match = functools.lru_cache(maxsize=settings.cache_size)(self._match)

    def match(self, method: str, raw_path: str) -> PathMatch:
        """The rule for ``method raw_path``. Never raises; a refused path has ``rejected`` set."""
        if len(raw_path) > _MAX_CACHED_PATH:
            return self._match(method, raw_path)
        return self._cached_match(method, raw_path)

    def cache_info(self) -> functools._CacheInfo:
        """Hits, misses and size of the match cache (for metrics)."""
        return self._cached_match.cache_info()

    def _match(self, method: str, raw_path: str) -> PathMatch:
        normalized = normalize(raw_path, case_insensitive=self._settings.case_insensitive)
        if normalized.rejected is not None:
            return self._rejected(normalized.rejected)
        method = method.upper()
        if len(normalized.readings) == 1:
            reading = normalized.readings[0]
            return self._outcome(self._first_rule(method, reading), reading, False)
        candidates = [(self._first_rule(method, r), r) for r in normalized.readings]
        names = {_name(rule) for rule, _ in candidates}
        if len(names) > 1 and self._settings.ambiguous_paths == "reject":
            return self._rejected("ambiguous path: its readings match different rules", True)
        rule, reading = max(candidates, key=lambda c: self._strictness(c[0]))
        return self._outcome(rule, reading, True)

    def _outcome(self, rule: PathRule | None, reading: str, ambiguous: bool) -> PathMatch:
        sensitivity = self._sensitivity(rule)
        route = route_template(reading)
        return PathMatch(rule, _name(rule), reading, route, sensitivity, None, ambiguous)

    def _rejected(self, reason: str, ambiguous: bool = False) -> PathMatch:
        return PathMatch(None, "", "", "", self._settings.default_sensitivity, reason, ambiguous)

    def _first_rule(self, method: str, reading: str) -> PathRule | None:
        for compiled in self._rules:
            if compiled.methods is not None and method not in compiled.methods:
                continue
            if compiled.matches(reading):
                return compiled.rule
        return None

    def _sensitivity(self, rule: PathRule | None) -> int:
        if rule is None or rule.sensitivity is None:
            return self._settings.default_sensitivity
        return rule.sensitivity

    def _strictness(self, rule: PathRule | None) -> tuple[int, bool, bool, bool, int]:
        if rule is None:
            return (1, True, False, True, self._settings.default_sensitivity)
        tier = 0 if rule.exempt else 2 if rule.strict else 1
        no_allowlist = not (rule.allowlist.cidrs or rule.allowlist.users)
        return (
            tier,
            rule.mode != "shadow",
            rule.effective_fail == "closed",
            no_allowlist,
            self._sensitivity(rule),
        )


def _compile(rule: PathRule, case_insensitive: bool) -> _CompiledRule:
    pattern = compile_match(rule.match, case_insensitive=case_insensitive)
    matches = pattern.search if is_regex(rule.match) else pattern.fullmatch
    methods = None
    if rule.methods is not None:
        # Frameworks answer HEAD with their GET handler, so a GET rule must cover HEAD too.
        methods = frozenset(rule.methods) | ({"HEAD"} if "GET" in rule.methods else set())
    return _CompiledRule(rule, matches, methods)


def _name(rule: PathRule | None) -> str:
    return DEFAULT_RULE_NAME if rule is None else rule.name
