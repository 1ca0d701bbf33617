"""The append-only spool: durability framing, torn tails, locking, size limit, resume."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from storage.spool import Spool, SpoolFull, SpoolLocked


def _all(spool: Spool, start: int = 0) -> list[bytes]:
    return [p for batch, _ in spool.batches(3, start) for p in batch]


def test_append_and_read_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 1 << 20)
    spool.append([b"a", b"bb"])
    spool.append([b"ccc"])
    assert _all(spool) == [b"a", b"bb", b"ccc"]
    assert spool.count == 3
    assert spool.size == 3 * 10 + 6  # 10-byte header per frame
    spool.close()


def test_batches_report_resume_offsets(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 1 << 20)
    spool.append([bytes([i]) for i in range(7)])
    batches = list(spool.batches(3))
    assert [len(b) for b, _ in batches] == [3, 3, 1]
    assert [end for _, end in batches] == [33, 66, 77]
    assert _all(spool, 66) == [b"\x06"]
    spool.close()


def test_reopen_keeps_records(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 1 << 20)
    spool.append([b"x" * 100, b"y"])
    spool.close()
    again = Spool(tmp_path / "s", 1 << 20)
    assert again.count == 2 and _all(again) == [b"x" * 100, b"y"]
    again.close()


def test_torn_tail_is_cut_and_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "s"
    spool = Spool(path, 1 << 20)
    spool.append([b"one", b"two"])
    spool.close()
    with open(path, "ab") as fh:  # a crash in the middle of the next frame
        fh.write(b"BG\x10\x00\x00\x00" + zlib.crc32(b"x").to_bytes(4, "little") + b"par")
    again = Spool(path, 1 << 20)
    assert _all(again) == [b"one", b"two"]
    assert path.stat().st_size == 26
    aside = list(tmp_path.glob("s.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().endswith(b"par")
    again.append([b"three"])
    assert _all(again) == [b"one", b"two", b"three"]
    again.close()


def test_checksum_mismatch_stops_reading(tmp_path: Path) -> None:
    path = tmp_path / "s"
    spool = Spool(path, 1 << 20)
    spool.append([b"good", b"evil"])
    spool.close()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    again = Spool(path, 1 << 20)
    assert _all(again) == [b"good"] and again.count == 1
    again.close()


def test_second_opener_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 1 << 20)
    with pytest.raises(SpoolLocked):
        Spool(tmp_path / "s", 1 << 20)
    spool.close()


def test_full_spool_refuses_whole_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 4096)
    spool.append([b"a" * 2000])
    with pytest.raises(SpoolFull):
        spool.append([b"b" * 1000, b"c" * 1100])
    assert _all(spool) == [b"a" * 2000]
    spool.clear()
    assert spool.size == 0 and _all(spool) == []
    spool.close()
