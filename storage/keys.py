"""Every Redis key name of BehaviorGate, in one place.

Layout: ``{prefix}{<kind>:<owner>}:<rest>`` where the braces form a Redis Cluster *hash tag*, so all
keys of one owner live in one slot and a single Lua script may touch them all. The owner is the
user (kind ``u``) or, for anonymous traffic, the pseudo-session (kind ``a``); a user's session keys
carry the user's tag.

User and session ids are escaped (``%``, ``{``, ``}``, ``*``, ``?``, ``[``, ``]``, ``\\``, ``~``,
whitespace and control characters become ``%XX``) so that no id can end a hash tag early, collide
with another owner's keys, or act as a glob when the keys of a user are scanned.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_UNSAFE = frozenset("%{}*?[]\\~")
#: Longest escaped id kept verbatim in a key name.
MAX_ID_CHARS = 128

#: Per-owner baseline keys, in the order the history Lua scripts expect them after the session's.
USER_KEY_SUFFIXES: tuple[str, ...] = (
    "ip",  # zset ip -> last seen
    "net",  # zset network prefix -> last seen
    "dev",  # zset device fingerprint -> last seen
    "ep",  # zset route template -> last seen
    "how",  # hash hour-of-week (0..167) -> count
    "bg",  # zset "a\x1fb" route bigram -> count
    "bgo",  # hash route -> outgoing bigram total
    "tg",  # zset "a\x1fb\x1fc" route trigram -> count
    "tgo",  # hash "a\x1fb" -> outgoing trigram total
    "sf",  # hash escaped session id -> first seen
    "sl",  # zset escaped session id -> last seen
    "sw",  # zset session-switch marker -> time
    "m",  # hash of small per-owner values (last session)
)
#: Per-session keys, relative to :meth:`KeySpace.session_base`.
SESSION_SUFFIXES: tuple[str, ...] = ("ev", "rv", "su")


def escape(value: str) -> str:
    """Escape an id for use inside a key (see module docstring).

    An id whose escaped form is longer than :data:`MAX_ID_CHARS` is replaced by a digest of it, so
    key names stay short whatever a client sends.
    """
    if value.isalnum() and len(value) <= MAX_ID_CHARS:
        return value
    if len(value) <= MAX_ID_CHARS:
        escaped = "".join(
            f"%{ord(ch):02X}" if ch in _UNSAFE or ord(ch) <= 32 or ord(ch) == 127 else ch
            for ch in value
        )
        if len(escaped) <= MAX_ID_CHARS:
            return escaped
    # '~' is always escaped above, so a digest can never equal an escaped id.
    return "~" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class OwnerKeys:
    """The keys one request touches: its session's and its owner's baselines."""

    base: str
    session: str

    @property
    def session_base(self) -> str:
        return f"{self.base}s:{self.session}:"

    @property
    def events(self) -> str:
        return self.session_base + "ev"

    @property
    def revoked(self) -> str:
        return self.session_base + "rv"

    @property
    def stepup(self) -> str:
        return self.session_base + "su"

    def user(self, suffix: str) -> str:
        return self.base + suffix

    def all(self) -> list[str]:
        """Session keys then baseline keys, the KEYS order of the history scripts."""
        sb = self.session_base
        return [sb + s for s in SESSION_SUFFIXES] + [self.base + s for s in USER_KEY_SUFFIXES]


class KeySpace:
    """Builds key names under one prefix (``HistorySettings.key_prefix``)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("key prefix must not contain '{' or '}'")
        self.prefix = prefix

    def owner_base(self, user_id: str | None, session_id: str) -> str:
        """``{prefix}{u:<user>}:`` or, without a user, ``{prefix}{a:<session>}:``."""
        if user_id is None:
            return f"{self.prefix}{{a:{escape(session_id)}}}:"
        return f"{self.prefix}{{u:{escape(user_id)}}}:"

    def for_request(self, user_id: str | None, session_id: str) -> OwnerKeys:
        return OwnerKeys(self.owner_base(user_id, session_id), escape(session_id))

    def revoked_owners(self, session_id: str) -> str:
        """Set of the users whose session ``session_id`` is revoked, so an admin can lift a
        revocation knowing only the session id (its own tag: the owners live in other slots)."""
        return f"{self.prefix}{{r:{escape(session_id)}}}:owners"

    def owner_pattern(self, user_id: str | None, session_id: str = "") -> str:
        """Glob matching every key of one owner (escaping made the id glob-free)."""
        return self.owner_base(user_id, session_id) + "*"

    def hash_tag(self, user_id: str | None, session_id: str) -> str:
        """The hash tag Redis Cluster uses to place this owner's keys."""
        base = self.owner_base(user_id, session_id)
        start = base.index("{")
        return base[start + 1 : base.index("}", start)]
