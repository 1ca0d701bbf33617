"""Per-path policy settings: ordered rules matched against the normalised request path.

A rule's ``match`` is either a glob or a ``regex:``-prefixed regular expression:

* glob: ``*`` matches within one path segment, ``**`` (a whole segment) matches any number of
  segments, including none, so ``/api/admin/**`` covers ``/api/admin`` itself and everything
  below it. Other characters are literal. Matched against the whole normalised path.
* ``regex:<pattern>``: Python ``re`` syntax, searched (``re.search``) in the normalised path;
  anchor it yourself (``regex:^/api/v\\d+/admin(/|$)``).

Patterns are compiled here once, at load, so a bad pattern fails start-up, not a request.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from config._base import Section

REGEX_PREFIX = "regex:"
_METHOD_RE = re.compile(r"^[A-Z][A-Z0-9_-]{0,31}$")


def compile_match(pattern: str, *, case_insensitive: bool = False) -> re.Pattern[str]:
    """Compile a rule's ``match`` (glob or ``regex:``) into a regular expression.

    Glob regexes are meant for ``fullmatch`` and accept the root ``/`` where the glob allows no
    segment; ``regex:`` patterns are meant for ``search``. ``PathPolicy`` uses :func:`is_regex`
    to pick which.

    Raises:
        ValueError: the glob is malformed or the regex does not compile.
    """
    flags = re.IGNORECASE if case_insensitive else 0
    if is_regex(pattern):
        body = pattern[len(REGEX_PREFIX) :]
        if not body:
            raise ValueError("empty regex")
        try:
            return re.compile(body, flags)
        except re.error as exc:
            raise ValueError(f"invalid regex: {exc}") from None
    return re.compile(_glob_to_regex(pattern), flags)


def is_regex(pattern: str) -> bool:
    """Whether ``pattern`` is a ``regex:`` rule (searched) rather than a glob (full match)."""
    return pattern.startswith(REGEX_PREFIX)


def _glob_to_regex(glob: str) -> str:
    if not glob.startswith("/"):
        raise ValueError("a glob must start with '/'")
    parts = []
    for segment in (s for s in glob.split("/") if s):
        if segment == "**":
            parts.append("(?:/[^/]+)*")
        elif "**" in segment:
            raise ValueError("'**' must be a whole path segment")
        else:
            parts.append("/" + re.escape(segment).replace(r"\*", "[^/]*"))
    # Normalised paths carry no trailing slash except the root; '/?' lets '/**' and '/' match it.
    return "".join(parts) + "/?"


class Thresholds(Section):
    """Per-rule score thresholds; an unset one inherits the global decision ladder."""

    monitor: float | None = Field(None, ge=0, le=1, description="Score from which to MONITOR.")
    challenge: float | None = Field(None, ge=0, le=1, description="Score from which to CHALLENGE.")
    require_2fa: float | None = Field(
        None, ge=0, le=1, description="Score from which to REQUIRE_2FA."
    )
    block: float | None = Field(None, ge=0, le=1, description="Score from which to BLOCK.")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        given = [
            v for v in (self.monitor, self.challenge, self.require_2fa, self.block) if v is not None
        ]
        if given != sorted(given):
            raise ValueError(
                "thresholds must not decrease: monitor <= challenge <= require_2fa <= block"
            )
        return self


class Allowlist(Section):
    """Principals that are scored and recorded on this rule but never enforced against."""

    cidrs: tuple[str, ...] = Field(
        (), description="Client networks, e.g. 10.0.0.0/8 or 2001:db8::/32."
    )
    users: tuple[str, ...] = Field((), description="User ids (service accounts included).")

    @field_validator("cidrs")
    @classmethod
    def _valid_cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_network(c.strip(), strict=False)) for c in v)


class PathRule(Section):
    """One path rule. Rules are tried in order; the first that matches a reading wins."""

    name: str = Field(
        ..., min_length=1, max_length=100, description="Name used in logs and records."
    )
    match: str = Field(
        ..., min_length=1, description="Glob (* one segment, ** any depth) or regex:..."
    )
    methods: tuple[str, ...] | None = Field(
        None, description="HTTP methods the rule applies to (GET also covers HEAD); unset = all."
    )
    exempt: bool = Field(
        False, description="Forward without scoring (health checks, static files)."
    )
    strict: bool = Field(
        False, description="High-security path: anomalies from 0.70 are blocked; fails closed."
    )
    sensitivity: int | None = Field(
        None,
        ge=0,
        le=3,
        description="0-3, fed to the features; unset = policy default_sensitivity.",
    )
    thresholds: Thresholds | None = Field(None, description="Per-rule decision thresholds.")
    mode: Literal["enforce", "shadow"] | None = Field(
        None, description="enforce or shadow for this rule; unset = the global mode."
    )
    fail: Literal["open", "closed"] | None = Field(
        None,
        description="When scoring fails: open (forward) or closed (503); unset = closed if strict.",
    )
    allowlist: Allowlist = Field(
        default_factory=Allowlist, description="Never-enforced principals."
    )

    @field_validator("match")
    @classmethod
    def _compiles(cls, v: str) -> str:
        compile_match(v)
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return None
        upper = tuple(m.strip().upper() for m in v)
        bad = [m for m in upper if not _METHOD_RE.match(m)]
        if bad or not upper:
            raise ValueError(f"expected HTTP method names, got {list(v)!r}")
        return upper

    @model_validator(mode="after")
    def _not_exempt_and_strict(self) -> PathRule:
        if self.exempt and self.strict:
            raise ValueError("a rule cannot be both exempt and strict")
        return self

    @property
    def effective_fail(self) -> Literal["open", "closed"]:
        """The fail policy after defaults: strict rules fail closed, others open."""
        if self.fail is not None:
            return self.fail
        return "closed" if self.strict else "open"


class PolicySettings(Section):
    """The ordered path rules and how request paths are read before matching."""

    rules: tuple[PathRule, ...] = Field((), description="Ordered rules; first match wins.")
    case_insensitive: bool = Field(
        False,
        description="Match paths ignoring case (set when the upstream routes case-insensitively).",
    )
    ambiguous_paths: Literal["strictest", "reject"] = Field(
        "strictest",
        description="A path with several readings (encoded / or \\) whose readings match different "
        "rules: apply the strictest, or reject with 400.",
    )
    default_sensitivity: int = Field(
        1, ge=0, le=3, description="Sensitivity of unmatched paths and rules without one."
    )
    cache_size: int = Field(4096, ge=0, le=1_000_000, description="Matched paths remembered (LRU).")

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, v: tuple[PathRule, ...]) -> tuple[PathRule, ...]:
        names = [r.name for r in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {dupes}")
        return v
