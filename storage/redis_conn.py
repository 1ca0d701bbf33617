"""Redis clients (real or embedded) that count their round trips, and a command coalescer.

``create_redis(url)`` gives a ``redis.asyncio.Redis`` on hiredis for a URL, or an in-process
fakeredis (with Lua) when the URL is ``None``; the rest of the code cannot tell them apart. Both
count every packet of commands they send (:func:`round_trips`), which is how the tests prove that
a request costs one round trip.

:class:`PipelineBatcher` coalesces the commands issued by concurrent requests within one event-loop
tick into one pipeline: one round trip for all of them, instead of one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import (
    BlockingConnectionPool,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


@dataclass(slots=True)
class RoundTripCounter:
    """Packets of commands sent to Redis (one per single command or per pipeline)."""

    count: int = 0
    bytes_sent: int = 0


def _counting(base: type, counter: RoundTripCounter) -> type:
    """A connection class that counts what it sends, bound to one client's counter."""

    async def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        counter.count += 1
        if isinstance(command, bytes | bytearray | memoryview | str):
            counter.bytes_sent += len(command)
        else:
            command = list(command)
            counter.bytes_sent += sum(len(part) for part in command)
        await base.send_packed_command(self, command, check_health)

    return type(f"Counting{base.__name__}", (base,), {"send_packed_command": send_packed_command})


def _connection_base(url: str) -> type:
    if url.startswith("rediss://"):
        return SSLConnection
    if url.startswith("unix://"):
        return UnixDomainSocketConnection
    return Connection


def create_redis(
    url: str | None,
    *,
    max_connections: int = 64,
    pool_timeout: float = 5.0,
    socket_timeout: float | None = 5.0,
) -> aioredis.Redis:
    """A real client for ``url`` (hiredis parser when installed) or an embedded one for ``None``.

    The embedded store lives in this process only (one fresh server per call); it runs the same
    Lua scripts as the real one.
    """
    counter = RoundTripCounter()
    if url is None:
        import fakeredis
        from fakeredis.aioredis import FakeAsyncRedisConnection

        client: aioredis.Redis = fakeredis.aioredis.FakeRedis(
            server=fakeredis.FakeServer(),
            connection_class=_counting(FakeAsyncRedisConnection, counter),
        )
    else:
        # Blocking: past max_connections a command waits for a free connection, not fails.
        pool = BlockingConnectionPool.from_url(
            url,
            connection_class=_counting(_connection_base(url), counter),
            max_connections=max_connections,
            timeout=pool_timeout,
            # A server that stops answering but keeps the socket open must not hold a
            # connection (and a batcher slot) forever.
            socket_timeout=socket_timeout,
        )
        client = aioredis.Redis(connection_pool=pool)
    client.bg_round_trips = counter  # type: ignore[attr-defined]
    return client


def round_trips(client: aioredis.Redis) -> RoundTripCounter:
    """The round-trip counter of a client made by :func:`create_redis`."""
    counter = getattr(client, "bg_round_trips", None)
    if counter is None:
        raise TypeError("client was not created by storage.redis_conn.create_redis")
    return counter


_Pending = tuple[Sequence[Any], "asyncio.Future[Any]"]


def pack_command(args: Sequence[Any]) -> bytes:
    """One command in RESP: ``*<n>`` then ``$<len>`` + bytes per argument (str as UTF-8).

    Only str, bytes and int arguments are accepted (what the history store sends); anything else
    raises TypeError rather than being sent in some guessed form, and an empty command ValueError.
    """
    if not args:  # "*0" gets no reply at all: every later reply would go to the wrong caller
        raise ValueError("an empty command")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        else:
            raise TypeError(f"unsupported argument type {type(arg).__name__}")
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class PipelineBatcher:
    """Sends the commands queued during one event-loop tick as one non-transactional pipeline.

    At most ``max_inflight`` pipelines are on the wire at once; commands arriving meanwhile wait
    for the next one, so under load batches grow instead of round trips multiplying. A command's
    error is delivered to its own caller only. Every command must get exactly one reply (no
    SUBSCRIBE, MONITOR or CLIENT REPLY); a pipeline not answered within ``reply_timeout`` drops
    its connection and fails its callers, so a stalled server cannot take the slots for good.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        max_batch: int = 256,
        max_inflight: int = 2,
        reply_timeout: float = 5.0,
    ):
        self._redis = redis
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._reply_timeout = reply_timeout
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()

    async def execute(self, *args: Any) -> Any:
        """Queue one command and wait for its reply."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((args, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and len(self._inflight) < self._max_inflight:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._inflight.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, batch: list[_Pending]) -> None:
        # Packed here, not by redis-py's Pipeline: its per-argument packing and retry wrappers
        # cost ~75 µs of the gateway's ~1.2 ms per request (py-spy). A command that cannot be
        # encoded fails alone; the others still go.
        packed: list[bytes] = []
        live: list[asyncio.Future[Any]] = []
        for args, fut in batch:
            if fut.done():  # its caller gave up (timeout) before it was sent: shed it
                continue
            try:
                packed.append(pack_command(args))
            except (TypeError, ValueError, UnicodeEncodeError) as exc:
                if not fut.done():
                    fut.set_exception(DataError(f"cannot encode a command argument: {exc}"))
                continue
            live.append(fut)
        if not live:
            return
        pool = self._redis.connection_pool
        conn = None
        try:
            async with asyncio.timeout(self._reply_timeout):
                conn = await pool.get_connection()
                await conn.send_packed_command(b"".join(packed))
                # Every reply is read, a cancelled caller's too: that keeps the stream in step.
                for fut in live:
                    try:
                        reply: Any = await conn.read_response()
                    except ResponseError as exc:
                        reply = exc
                    if fut.done():
                        continue
                    if isinstance(reply, Exception):
                        fut.set_exception(reply)
                    else:
                        fut.set_result(reply)
        except BaseException as exc:  # no connection, lost, cancelled: every caller must hear of it
            if conn is not None:
                await conn.disconnect(nowait=True)
            if isinstance(exc, TimeoutError):
                exc = RedisTimeoutError(f"no reply within {self._reply_timeout} s")
            for fut in live:
                if not fut.done():
                    fut.set_exception(
                        exc
                        if isinstance(exc, Exception)
                        else RedisConnectionError("pipeline cancelled before its replies")
                    )
            if not isinstance(exc, Exception):
                raise
        finally:
            if conn is not None:
                await pool.release(conn)

    async def drain(self) -> None:
        """Wait until everything queued so far has been answered."""
        while self._pending or self._inflight or self._scheduled:
            if self._inflight:
                # wait(), not gather(): a caller giving up on drain() must not cancel the
                # pipelines other callers are waiting on.
                await asyncio.wait(self._inflight)
            else:
                await asyncio.sleep(0)
