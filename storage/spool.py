"""Append-only local spool file holding prediction batches while the database is away.

Layout: a sequence of frames ``b"BG" | length (u32 LE) | crc32 (u32 LE) | payload``. A batch
is appended with one ``write`` and one ``fsync``, so after a crash the file holds whole frames
plus, at worst, a torn last frame. Opening the spool checks every frame and cuts the file
back to its last good frame; anything unreadable is moved aside (never silently lost).

The file is locked (``flock``) by the process that opened it: two gateways must not share a
spool. All methods block on disk I/O; the writer calls them from a worker thread.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ("Spool", "SpoolFull", "SpoolLocked")

_log = logging.getLogger(__name__)
_HEADER = struct.Struct("<2sII")
_MAGIC = b"BG"
_MAX_FRAME = 16 * 1024 * 1024


class SpoolFull(Exception):
    """Appending would exceed the configured spool size."""


class SpoolLocked(Exception):
    """Another process holds this spool file."""


class Spool:
    """A crash-safe, checksummed append-only record file."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise SpoolLocked(
                f"{self.path} is held by another process (one gateway per spool:"
                " writer.spool_path or BEHAVIORGATE_DATA_DIR)"
            ) from None
        self.count = 0
        self.size = 0
        self._recover()

    # -- public -------------------------------------------------------------------------------

    def append(self, payloads: Sequence[bytes]) -> None:
        """Append records durably (one write, one fsync); all or none fit."""
        if not payloads:
            return
        buf = b"".join(_frame(p) for p in payloads)
        if self.size + len(buf) > self.max_bytes:
            raise SpoolFull(f"{self.path}: {self.size} + {len(buf)} > {self.max_bytes} bytes")
        try:
            _write_all(self._fd, buf)
            os.fsync(self._fd)
        except OSError:
            # A partial frame would hide every later frame from replay: cut it off.
            os.ftruncate(self._fd, self.size)
            raise
        self.size += len(buf)
        self.count += len(payloads)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[tuple[list[bytes], int]]:
        """Spooled payloads from byte offset ``start``, oldest first, in lists of at most
        ``batch_size``, each with the offset just past its last frame (to resume from)."""
        batch: list[bytes] = []
        end = start
        for payload, end in self._frames(start):  # noqa: B007
            batch.append(payload)
            if len(batch) >= batch_size:
                yield batch, end
                batch = []
        if batch:
            yield batch, end

    def clear(self) -> None:
        """Empty the spool after a successful replay."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self.size = 0
        self.count = 0

    def close(self) -> None:
        """Release the lock and the file."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    # -- internals ----------------------------------------------------------------------------

    def _frames(self, start: int = 0) -> Iterator[tuple[bytes, int]]:
        """Valid frames from ``start``, each with the offset past it; stops at the first bad one."""
        with open(self.path, "rb") as fh:
            fh.seek(start)
            offset = start
            while True:
                header = fh.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return
                magic, length, crc = _HEADER.unpack(header)
                if magic != _MAGIC or length > _MAX_FRAME:
                    return
                payload = fh.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    return
                offset += _HEADER.size + length
                yield payload, offset

    def _recover(self) -> None:
        """Count good frames and cut off a torn or corrupt tail (kept aside for inspection)."""
        end = 0
        for _payload, end in self._frames():  # noqa: B007
            self.count += 1
        total = os.fstat(self._fd).st_size
        if end < total:
            self._set_aside(end, total)
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)
        self.size = end

    def _set_aside(self, start: int, total: int) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time() * 1000)}")
        with open(self.path, "rb") as src:
            src.seek(start)
            data = src.read(total - start)
        aside.write_bytes(data)
        _log.warning(
            "spool tail unreadable: %d bytes at offset %d moved to %s (a torn final write "
            "after a crash is expected; the records before it are intact)",
            total - start,
            start,
            aside,
        )


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def _write_all(fd: int, buf: bytes) -> None:
    view = memoryview(buf)
    while view:
        written = os.write(fd, view)
        view = view[written:]
