"""User-agent fingerprints: family, OS, device class; robots recognised; hostile input bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring.useragent import MAX_UA_CHARS, fingerprint, is_bot_fingerprint, parse

CASES = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "chrome|windows|desktop",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
        "edge|windows|desktop",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/32.0.1700.77 Safari/537.36",
        "chrome|macos|desktop",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.2 Safari/605.1.15",
        "safari|macos|desktop",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
        "safari|ios|mobile",
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/120.0 Mobile/15E148 Safari/604.1",
        "chrome|ios|tablet",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0 Mobile Safari/537.36",
        "chrome|android|mobile",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0 Safari/537.36",
        "chrome|android|tablet",
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "firefox|linux|desktop",
    ),
    (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0 Safari/537.36",
        "chrome|chromeos|desktop",
    ),
    ("Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0)", "ie|windows|desktop"),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "googlebot|other|bot",
    ),
    (
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "bingbot|other|bot",
    ),
    ("curl/8.5.0", "curl|other|bot"),
    ("python-requests/2.31.0", "python-requests|other|bot"),
    ("Tiny Tiny RSS/1.11 (http://tt-rss.org/)", "other|other|other"),
    ("UniversalFeedParser/4.2-pre-314-svn +http://feedparser.org/", "other|other|other"),
    ("Mozilla/5.0 (compatible; SomeCrawler/1.0)", "bot|other|bot"),
    ("", "empty|other|other"),
]


@pytest.mark.parametrize(("ua", "expected"), CASES)
def test_fingerprints(ua: str, expected: str) -> None:
    assert fingerprint(ua) == expected
    assert is_bot_fingerprint(expected) == expected.endswith("|bot")


def test_parts() -> None:
    info = parse(CASES[0][0])
    assert (info.family, info.os, info.device_class) == ("chrome", "windows", "desktop")


def test_only_a_bounded_prefix_is_read() -> None:
    padding = "x" * MAX_UA_CHARS
    assert fingerprint(padding + " Googlebot") == "other|other|other"


@given(st.text(max_size=2000))
def test_any_text_gives_three_known_tokens(ua: str) -> None:
    parts = fingerprint(ua).split("|")
    assert len(parts) == 3
    assert all(p.replace("-", "").isalnum() for p in parts)
