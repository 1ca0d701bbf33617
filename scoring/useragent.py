"""User-agent string → coarse device fingerprint ``family|os|class`` (``chrome|windows|desktop``).

A fingerprint is deliberately coarse: it must stay the same across browser updates (so a user's
device is recognised next week) yet change when a session moves to another browser, OS or kind of
device. Automated clients are recognised and get the device class ``bot``.

The user agent is client-supplied: only its first :data:`MAX_UA_CHARS` characters are examined,
and the result is always one of a small fixed set of tokens (never the client's own text), so a
fingerprint is safe to store and to use as a key component.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

MAX_UA_CHARS = 512

# Order matters: the first marker found wins (Edge and Opera also claim to be Chrome, Chrome
# claims to be Safari, every browser claims to be Mozilla).
_BOT_MARKERS: tuple[tuple[str, str], ...] = (
    ("googlebot", "googlebot"),
    ("bingbot", "bingbot"),
    ("yandex", "yandexbot"),
    ("baiduspider", "baiduspider"),
    ("duckduckbot", "duckduckbot"),
    ("applebot", "applebot"),
    ("facebookexternalhit", "facebookbot"),
    ("ahrefsbot", "ahrefsbot"),
    ("semrushbot", "semrushbot"),
    ("curl/", "curl"),
    ("wget", "wget"),
    ("python-requests", "python-requests"),
    ("python-urllib", "python-urllib"),
    ("aiohttp", "aiohttp"),
    ("httpx", "httpx"),
    ("go-http-client", "go-http-client"),
    ("okhttp", "okhttp"),
    ("java/", "java"),
    ("apache-httpclient", "java"),
    ("libwww-perl", "perl"),
    ("scrapy", "scrapy"),
    ("headlesschrome", "headless-chrome"),
    ("phantomjs", "phantomjs"),
    ("nikto", "scanner"),
    ("sqlmap", "scanner"),
    ("nmap", "scanner"),
    ("masscan", "scanner"),
    ("zgrab", "scanner"),
)
# Generic words that mark a robot when no known robot matched.
_BOT_WORDS: tuple[str, ...] = ("bot", "crawler", "spider", "slurp", "fetcher", "scanner", "monitor")

_BROWSERS: tuple[tuple[str, str], ...] = (
    ("edg/", "edge"),
    ("edga/", "edge"),
    ("edgios/", "edge"),
    ("edge/", "edge"),
    ("opr/", "opera"),
    ("opera", "opera"),
    ("samsungbrowser", "samsung"),
    ("yabrowser", "yandex"),
    ("vivaldi", "vivaldi"),
    ("firefox/", "firefox"),
    ("fxios/", "firefox"),
    ("crios/", "chrome"),
    ("chrome/", "chrome"),
    ("chromium/", "chrome"),
    ("msie ", "ie"),
    ("trident/", "ie"),
    ("safari/", "safari"),
)

_OSES: tuple[tuple[str, str], ...] = (
    ("windows phone", "windows-phone"),
    ("windows", "windows"),
    ("iphone", "ios"),
    ("ipad", "ios"),
    ("ipod", "ios"),
    ("android", "android"),
    ("cros ", "chromeos"),
    ("mac os x", "macos"),
    ("macintosh", "macos"),
    ("linux", "linux"),
    ("freebsd", "bsd"),
    ("openbsd", "bsd"),
)


class DeviceInfo(NamedTuple):
    """Parsed fingerprint parts; every part is a fixed token, ``other`` when unknown."""

    family: str
    os: str
    device_class: str

    @property
    def fingerprint(self) -> str:
        return f"{self.family}|{self.os}|{self.device_class}"


def _first(ua: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for marker, name in table:
        if marker in ua:
            return name
    return None


def _device_class(ua: str, os_name: str) -> str:
    if "ipad" in ua or "tablet" in ua or (os_name == "android" and "mobile" not in ua):
        return "tablet"
    if "mobile" in ua or "iphone" in ua or "ipod" in ua or os_name == "windows-phone":
        return "mobile"
    if os_name in ("windows", "macos", "linux", "chromeos", "bsd"):
        return "desktop"
    return "other"


@lru_cache(maxsize=4096)
def _parse_lower(ua: str) -> DeviceInfo:
    os_name = _first(ua, _OSES) or "other"
    bot = _first(ua, _BOT_MARKERS)
    if bot is None and any(word in ua for word in _BOT_WORDS):
        bot = "bot"
    if bot is not None:
        return DeviceInfo(bot, os_name, "bot")
    if not ua.strip():
        return DeviceInfo("empty", "other", "other")
    family = _first(ua, _BROWSERS) or "other"
    return DeviceInfo(family, os_name, _device_class(ua, os_name))


def parse(user_agent: str) -> DeviceInfo:
    """Parse a user-agent header into family, OS and device class (cached, bounded input)."""
    return _parse_lower(user_agent[:MAX_UA_CHARS].lower())


def fingerprint(user_agent: str) -> str:
    """Device fingerprint ``family|os|class`` of a user-agent header."""
    return parse(user_agent).fingerprint


def is_bot_fingerprint(fp: str) -> bool:
    """Whether a fingerprint produced by :func:`fingerprint` denotes an automated client."""
    return fp.endswith("|bot")
