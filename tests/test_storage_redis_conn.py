"""The coalescing batcher's own RESP packing and reply routing, against the real Redis."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, RedisError, ResponseError

from storage.redis_conn import PipelineBatcher, create_redis, pack_command

_ARG = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@given(st.lists(_ARG, max_size=12))
def test_packing_matches_redis_py(rest: list[object]) -> None:
    """Byte-identical to redis-py's own packer (an independent implementation of RESP). The
    command name is fixed: redis-py splits a first argument on spaces ("GET X" → two words)."""
    args = ["EVALSHA", *rest]
    theirs = b"".join(Connection().pack_command(*args))
    assert pack_command(args) == theirs


def test_packing_refuses_what_it_cannot_send_faithfully() -> None:
    for bad in (1.5, True, None, ["x"]):
        with pytest.raises(TypeError):
            pack_command(["SET", "k", bad])
    with pytest.raises(UnicodeEncodeError):
        pack_command(["SET", "k", "\ud800"])  # a lone surrogate has no UTF-8 form


async def test_replies_reach_their_own_callers_in_one_round_trip(redis_prefix: str) -> None:
    client = create_redis("redis://127.0.0.1:6379/0")
    batcher = PipelineBatcher(client)
    try:
        k = redis_prefix
        await client.set(f"{k}str", "v")
        before = client.bg_round_trips.count  # type: ignore[attr-defined]
        results = await asyncio.gather(
            batcher.execute("SET", f"{k}a", "1"),
            batcher.execute("LPUSH", f"{k}str", "x"),  # WRONGTYPE: an error for this one only
            batcher.execute("SET", f"{k}bad", "\ud800"),  # cannot be encoded: fails alone
            batcher.execute("INCRBY", f"{k}a", 41),
            batcher.execute("GET", f"{k}a"),
            return_exceptions=True,
        )
        assert client.bg_round_trips.count - before == 1  # type: ignore[attr-defined]
        assert results[0] is True or results[0] == b"OK"
        assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
        assert isinstance(results[2], DataError)
        assert results[3] == 42 and results[4] == b"42"
        assert await client.exists(f"{k}bad") == 0
        # The connection went back to the pool in step: plain commands still work on it.
        assert await client.get(f"{k}str") == b"v"
    finally:
        await client.aclose()


async def test_a_cancelled_caller_does_not_shift_the_replies(redis_prefix: str) -> None:
    client = create_redis("redis://127.0.0.1:6379/0")
    batcher = PipelineBatcher(client, max_inflight=1)
    try:
        k = redis_prefix
        slow = asyncio.ensure_future(batcher.execute("SET", f"{k}x", "first"))
        rest = asyncio.ensure_future(
            asyncio.gather(batcher.execute("GET", f"{k}x"), batcher.execute("ECHO", "third"))
        )
        await asyncio.sleep(0)
        slow.cancel()
        got = await rest
        assert got[1] == b"third"
        for _ in range(3):  # later batches are still aligned
            assert await batcher.execute("ECHO", "again") == b"again"
    finally:
        await client.aclose()


async def test_unreachable_redis_fails_every_caller_at_once() -> None:
    """No connection to be had: each queued caller gets the connection error, none waits for
    its own timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    client = create_redis(f"redis://127.0.0.1:{port}/0")
    batcher = PipelineBatcher(client)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(batcher.execute("ECHO", str(i)) for i in range(3)), return_exceptions=True
            ),
            5,
        )
        assert all(isinstance(r, RedisConnectionError) for r in results), results
    finally:
        await client.aclose()


async def test_an_empty_command_fails_alone_instead_of_shifting_replies(redis_prefix: str) -> None:
    """'*0' gets no reply from Redis: sent, it would hand every later reply to the wrong caller."""
    client = create_redis("redis://127.0.0.1:6379/0")
    batcher = PipelineBatcher(client)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                batcher.execute("ECHO", "one"),
                batcher.execute(),
                batcher.execute("ECHO", "three"),
                return_exceptions=True,
            ),
            5,
        )
        assert results[0] == b"one" and results[2] == b"three"
        assert isinstance(results[1], DataError)
    finally:
        await client.aclose()


async def test_commands_of_callers_who_gave_up_before_sending_are_not_sent(
    redis_prefix: str,
) -> None:
    client = create_redis("redis://127.0.0.1:6379/0")
    batcher = PipelineBatcher(client, max_inflight=1)
    key = f"{redis_prefix}counter"
    try:
        busy = asyncio.ensure_future(batcher.execute("BLPOP", f"{redis_prefix}none", "0.3"))
        await asyncio.sleep(0.05)  # the only slot is now taken for 0.3 s

        async def impatient() -> None:
            async with asyncio.timeout(0.05):
                await batcher.execute("INCR", key)

        outcomes = await asyncio.gather(*(impatient() for _ in range(20)), return_exceptions=True)
        assert all(isinstance(o, TimeoutError) for o in outcomes)
        assert await busy is None
        await batcher.drain()
        assert await client.get(key) is None  # none of the 20 abandoned INCRs ran
    finally:
        await client.aclose()


async def test_a_silent_server_cannot_jam_the_batcher() -> None:
    """A server that accepts and never answers: each pipeline fails after reply_timeout, frees
    its slot and connection, and the next one is tried (before: the slots were held forever)."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = create_redis(f"redis://127.0.0.1:{port}/0", socket_timeout=None)
    batcher = PipelineBatcher(client, max_inflight=1, reply_timeout=0.3)
    try:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(RedisError):
                await asyncio.wait_for(batcher.execute("ECHO", "x"), 5)
            assert time.monotonic() - started < 2
        assert not batcher._inflight  # noqa: SLF001 - the slot came back
    finally:
        await client.aclose()
        server.close()


async def test_giving_up_on_drain_does_not_fail_other_callers(redis_prefix: str) -> None:
    client = create_redis("redis://127.0.0.1:6379/0")
    batcher = PipelineBatcher(client)
    try:
        other = asyncio.ensure_future(batcher.execute("BLPOP", f"{redis_prefix}none", "0.2"))
        await asyncio.sleep(0.02)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.drain(), 0.05)
        assert await other is None  # BLPOP's own timeout answer, not a cancellation error
    finally:
        await client.aclose()
