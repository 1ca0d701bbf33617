"""Access-log parsing and sessionizing on slices of the shared real logs and hand-made lines.

Expected counts were worked out without this code:

* the two ``*-head300.log`` files are ``head -300`` of the shared logs; ``grep -vcE`` with a
  combined-format regex finds no malformed line in either;
* sessions: ``sort -s -k4,4 FILE | gawk -f sess.awk`` where the gawk script keys a line by its
  user field, else by IP + the user-agent field (``$6`` with ``FS="\\""``), converts the time with
  ``mktime`` and counts a new session when the key is new or its previous line is > 1800 s
  older. It printed 100 sessions for semicomplete and 11 for almhuette (the whole files: 3224
  and 762; the whole semicomplete count includes its one truncated line, which we refuse);
* ``accesslog-edge.log`` was written by hand: lines 1, 2, 4, 9, 11 are entries (line 4 is the
  almhuette line 5437 with escaped quotes in the user agent and a trailing extra field; line 11
  is nginx-style with two extra fields), lines 3 (semicomplete line 8899, user agent cut off),
  5, 6 (request "-"), 7 (month "Foo") and 10 (binary) are malformed, line 8 is blank. Sessions:
  alice 13:55 + 13:57, alice again at 14:57 (gap 1 h), and two anonymous clients = 4.
"""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.accesslog import (
    MalformedLine,
    ParseStats,
    Sessionizer,
    parse_line,
    read_logs,
)

DATA = Path(__file__).parent / "data"
SEMI = DATA / "accesslog-semicomplete-head300.log"
ALM = DATA / "accesslog-almhuette-head300.log"
EDGE = DATA / "accesslog-edge.log"


def _sessions(records: list, gap_s: float = 1800.0) -> int:
    s = Sessionizer(gap_s)
    for r in records:
        s.assign(r)
    return s.sessions


@pytest.mark.parametrize(("path", "parsed", "sessions"), [(SEMI, 300, 100), (ALM, 300, 11)])
def test_real_slices_parse_and_sessionize(path: Path, parsed: int, sessions: int) -> None:
    records, stats = read_logs([path])
    assert (stats.parsed, stats.malformed, len(records)) == (parsed, 0, parsed)
    assert _sessions(records) == sessions


def test_gzip_is_read_like_plain(tmp_path: Path) -> None:
    gz = tmp_path / "alm.log.gz"
    with open(ALM, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain, _ = read_logs([ALM])
    packed, stats = read_logs([gz])
    assert stats.parsed == 300
    key = [(r.ts, r.target, r.status) for r in plain]
    assert [(r.ts, r.target, r.status) for r in packed] == key


def test_edge_file_counts_and_samples() -> None:
    records, stats = read_logs([EDGE])
    assert (stats.parsed, stats.malformed) == (5, 5)
    assert [s[1] for s in stats.samples] == [3, 5, 6, 7, 10]
    assert _sessions(records) == 4
    assert sorted(r.line_no for r in records) == [1, 2, 4, 9, 11]


def test_fields_of_a_combined_line() -> None:
    line = (
        '100.64.0.216 - - [17/May/2015:10:05:03 +0000] "GET /a/b.png?x=1 HTTP/1.1" 200 '
        '203023 "http://semicomplete.com/" "Mozilla/5.0 (Macintosh)"'
    )
    r = parse_line(line)
    assert r.ts == datetime(2015, 5, 17, 10, 5, 3, tzinfo=UTC).timestamp()
    assert (r.client_ip, r.user, r.method, r.target, r.protocol) == (
        "100.64.0.216",
        None,
        "GET",
        "/a/b.png?x=1",
        "HTTP/1.1",
    )
    assert (r.status, r.size, r.referer, r.user_agent) == (
        200,
        203023,
        "http://semicomplete.com/",
        "Mozilla/5.0 (Macintosh)",
    )


def test_time_zone_offset_and_escaped_quotes() -> None:
    line = (
        '1.2.3.4 - bob [14/Oct/2019:10:50:18 +0200] "POST /x HTTP/1.1" 401 - "-" '
        '"a \\"quoted\\" agent" "-"'
    )
    r = parse_line(line)
    assert r.ts == datetime(2019, 10, 14, 8, 50, 18, tzinfo=UTC).timestamp()
    assert (r.user, r.size, r.referer, r.user_agent) == ("bob", 0, None, 'a "quoted" agent')


def test_common_format_has_no_agent() -> None:
    r = parse_line('10.0.0.1 - alice [10/Oct/2000:13:55:36 -0700] "GET /p HTTP/1.0" 200 2326')
    assert (r.user, r.referer, r.user_agent) == ("alice", None, None)


def test_overlong_line_is_malformed_not_fatal(tmp_path: Path) -> None:
    good = ALM.read_bytes().split(b"\n")[0]
    p = tmp_path / "long.log"
    p.write_bytes(good + b"\n" + b"x" * 200_000 + b"\n" + good + b"\n")
    records, stats = read_logs([p])
    assert (stats.parsed, stats.malformed, stats.samples[0][2]) == (2, 1, "line too long")
    assert [r.line_no for r in records] == [1, 3]


def test_gap_splits_sessions_of_one_client() -> None:
    base = '9.9.9.9 - - [01/Jan/2020:00:{m:02d}:00 +0000] "GET / HTTP/1.1" 200 1 "-" "ua"'
    recs = [parse_line(base.format(m=m)) for m in (0, 10, 41, 50)]
    s = Sessionizer(1800)
    ids = [s.assign(r).session_id for r in recs]
    assert ids[0] == ids[1] != ids[2] == ids[3]  # 10 -> 41 is a 31-minute gap
    assert ids[0].startswith("anon:") and ids[2] == ids[0] + ".1"
    assert _sessions(recs, gap_s=3600) == 1


@given(st.text(max_size=300))
def test_parse_line_never_fails_otherwise(text: str) -> None:
    try:
        parse_line(text)
    except MalformedLine:
        pass


def test_stats_json_shape() -> None:
    stats = ParseStats()
    stats.reject("f", 3, "why", "text")
    assert stats.to_json() == {
        "parsed": 0,
        "malformed": 1,
        "malformed_samples": [{"file": "f", "line": 3, "reason": "why", "text": "text"}],
    }
