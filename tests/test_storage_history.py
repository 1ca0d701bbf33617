"""History store against BOTH backends: the real Redis and the embedded fakeredis."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.crc import key_slot

from config.history import HistorySettings
from scoring.context import EventOutcome, RequestContext
from storage.history import HistoryStore, memory_bound_bytes
from storage.keys import KeySpace, escape
from storage.redis_conn import create_redis, round_trips

MONDAY_NOON = 1704110400.0
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"
OK = EventOutcome(status=200, response_bytes=512, latency_ms=4.2, decision="ALLOW", score=0.1)


def ctx(**kw: Any) -> RequestContext:
    base: dict[str, Any] = dict(
        ts=MONDAY_NOON,
        method="GET",
        path="/a",
        route="/a",
        user_id="alice",
        session_id="s1",
        client_ip="10.0.0.1",
        user_agent=CHROME,
        request_bytes=10,
        sensitivity=0,
        authenticated=True,
    )
    base.update(kw)
    return RequestContext(**base)


@pytest.fixture(params=["real", "embedded"])
async def backend(
    request: pytest.FixtureRequest, redis_url: str, run_id: str
) -> AsyncIterator[tuple]:
    """(client, key prefix, kind); on the real server a fresh prefix, deleted afterwards."""
    if request.param == "real":
        prefix = f"bgtest:{run_id}:{secrets.token_hex(3)}:"
        client = create_redis(redis_url)
        await client.ping()  # no Redis: the test fails, it never skips
    else:
        prefix, client = "bgtest:", create_redis(None)
        await client.ping()
    try:
        yield client, prefix, request.param
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def make(backend: tuple, **kw: Any) -> HistoryStore:
    client, prefix, _ = backend
    return HistoryStore(client, HistorySettings(key_prefix=prefix, **kw))


async def test_unknown_user_reads_as_empty(backend: tuple) -> None:
    snap = await make(backend).read(ctx())
    assert snap.n_events == 0 and not snap.revoked and snap.stepup_until is None
    assert snap.ip_last_seen is None and snap.session_first_seen is None
    assert snap.ips_7d == 1 and snap.devices_30d == 1 and snap.other_sessions_24h == 0
    assert snap.hour_histogram.sum() == 0


async def test_recorded_events_come_back_in_order(backend: tuple) -> None:
    store = make(backend)
    await store.record(ctx(route="/a"), OK)
    await store.record(
        ctx(ts=MONDAY_NOON + 5, route="/b", method="POST"),
        EventOutcome(401, 20, 1.0, "CHALLENGE", 0.72),
    )
    snap = await store.read(ctx(ts=MONDAY_NOON + 9))
    assert snap.ts.tolist() == [MONDAY_NOON, MONDAY_NOON + 5]
    assert snap.status.tolist() == [200, 401]
    assert snap.severity.tolist() == [0, 2]
    assert snap.score.tolist() == pytest.approx([0.1, 0.72])
    assert [snap.route_vocab[c] for c in snap.route_codes] == ["/a", "/b"]
    assert snap.ip_vocab == ("10.0.0.1",) and snap.device_vocab == ("chrome|windows|desktop",)
    assert snap.session_first_seen == MONDAY_NOON
    assert snap.ip_last_seen == snap.network_last_seen == MONDAY_NOON + 5
    assert snap.endpoint_last_seen == MONDAY_NOON  # the current route /a was last seen first
    assert snap.hour_histogram[12] == 2


async def test_one_round_trip_per_read_and_per_record(backend: tuple) -> None:
    for coalesce in (True, False):
        store = make(backend, coalesce_reads=coalesce)
        await store.load_scripts()
        before = store.round_trips.count
        await store.read(ctx())
        assert store.round_trips.count - before == 1
        await store.record(ctx(), OK)
        assert store.round_trips.count - before == 2


async def test_concurrent_reads_share_one_round_trip(backend: tuple) -> None:
    store = make(backend)
    await store.load_scripts()
    await store.record(ctx(), OK)
    before = store.round_trips.count
    snaps = await asyncio.gather(*(store.read(ctx(session_id=f"s{i % 3}")) for i in range(20)))
    assert store.round_trips.count - before == 1
    assert [s.n_events for s in snaps[:3]] == [0, 1, 0]


async def test_events_capped_and_expiring(backend: tuple) -> None:
    client = backend[0]
    store = make(backend, session_events_cap=10, session_ttl_seconds=600)
    await asyncio.gather(*(store.record(ctx(ts=MONDAY_NOON + i), OK) for i in range(25)))
    snap = await store.read(ctx(ts=MONDAY_NOON + 30))
    assert (
        snap.n_events == 10 and snap.ts[0] == MONDAY_NOON + 15 and snap.ts[-1] == MONDAY_NOON + 24
    )
    keys = store.keys.for_request("alice", "s1")
    assert 0 < await client.ttl(keys.events) <= 600
    assert 30 * 86400 < await client.ttl(keys.user("ip")) <= 31 * 86400


async def test_sessions_switches_and_concurrency(backend: tuple) -> None:
    store = make(backend)
    for i, sid in enumerate(["s1", "s2", "s1"]):
        await store.record(ctx(ts=MONDAY_NOON + 10 * i, session_id=sid), OK)
    snap = await store.read(ctx(ts=MONDAY_NOON + 40, session_id="s3"))
    assert snap.other_sessions_24h == 2 and snap.concurrent_sessions == 2
    assert snap.session_switches_1h == 2
    assert snap.avg_session_duration_s == pytest.approx(10.0)  # s1 lasted 20 s, s2 0 s
    own = await store.read(ctx(ts=MONDAY_NOON + 40, session_id="s1"))
    assert own.other_sessions_24h == 1 and own.session_first_seen == MONDAY_NOON


async def test_transition_counts_for_predictability(backend: tuple) -> None:
    store = make(backend)
    for i, route in enumerate(["/a", "/b", "/a", "/b"]):
        await store.record(ctx(ts=MONDAY_NOON + i, route=route), OK)
    snap = await store.read(ctx(ts=MONDAY_NOON + 9, route="/a"))
    # a→b twice, b→a once: P(a | b) from 1 of 1; trigram (a, b) → a once of once
    assert (snap.bigram_count, snap.bigram_total) == (1.0, 1.0)
    assert (snap.trigram_count, snap.trigram_total) == (1.0, 1.0)
    fresh = await store.read(ctx(ts=MONDAY_NOON + 9, route="/zzz"))
    assert fresh.bigram_count == 0.0 and fresh.bigram_total == 1.0
    assert fresh.endpoint_last_seen is None


async def test_novelty_and_diversity_windows(backend: tuple) -> None:
    store = make(backend)
    await store.record(ctx(ts=MONDAY_NOON - 10 * 86400, client_ip="10.0.0.1"), OK)
    await store.record(ctx(ts=MONDAY_NOON - 86400, client_ip="10.0.9.2"), OK)
    snap = await store.read(ctx(client_ip="10.0.0.7", user_agent="curl/8.0"))
    assert snap.ip_last_seen is None and snap.device_last_seen is None
    assert snap.network_last_seen == MONDAY_NOON - 10 * 86400  # same /24 as 10.0.0.1
    assert snap.ips_7d == 2  # 10.0.9.2 and the current one; 10.0.0.1 is older than 7 days
    assert snap.networks_7d == 2 and snap.devices_30d == 2


async def test_revoke_stepup_and_reset(backend: tuple) -> None:
    client = backend[0]
    store = make(backend)
    await store.record(ctx(), OK)
    await store.revoke("s1", "alice", ttl=60)
    until = await store.grant_stepup("s1", "alice", ttl=300, now=MONDAY_NOON)
    snap = await store.read(ctx())
    assert snap.revoked and snap.stepup_until == until == MONDAY_NOON + 300
    assert not (await store.read(ctx(session_id="s2"))).revoked
    assert 0 < await client.ttl(store.keys.for_request("alice", "s1").revoked) <= 60
    assert await store.reset_user("alice") >= 5
    again = await store.read(ctx())
    assert not again.revoked and again.n_events == 0 and again.ip_last_seen is None


async def test_unrevoke_by_session_id_alone_finds_the_owners(backend: tuple) -> None:
    client = backend[0]
    store = make(backend)
    await store.revoke("s1", "alice", ttl=60)
    await store.revoke("s1", "bob", ttl=60)  # an issuer may reuse a session id across users
    await store.revoke("s2", "alice", ttl=60)
    await store.revoke("s1", None, ttl=60)  # the anonymous pseudo-session of the same id
    assert await store.unrevoke_all("s1") == [None, "alice", "bob"]
    assert not (await store.read(ctx(session_id="s1"))).revoked
    assert not (await store.read(ctx(session_id="s1", user_id="bob"))).revoked
    assert (await store.read(ctx(session_id="s2"))).revoked  # another session is untouched
    assert await client.exists(store.keys.revoked_owners("s1")) == 0
    assert await store.unrevoke_all("s1") == []  # nothing left to lift
    # Lifting with the user named also forgets that owner, so a later id-only call is a no-op.
    assert await store.unrevoke("s2", "alice") is True
    assert await store.unrevoke_all("s2") == []
    # An owner-exact unrevoke touches that owner only.
    await store.revoke("s3", "carol", ttl=60)
    await store.revoke("s3", None, ttl=60)
    assert await store.unrevoke("s3", None) is True
    assert (await store.read(ctx(session_id="s3", user_id="carol"))).revoked
    assert await store.unrevoke_all("s3") == ["carol"]


async def test_owners_are_remembered_as_long_as_the_longest_revocation(backend: tuple) -> None:
    client = backend[0]
    store = make(backend)
    await store.revoke("s4", "carol", ttl=3600)
    await store.revoke("s4", "dave", ttl=5)  # a shorter one later must not shorten the set
    assert 3590 <= await client.ttl(store.keys.revoked_owners("s4")) <= 3600
    await store.revoke("s5", "erin", ttl=5)
    await store.revoke("s5", "frank", ttl=3600)  # a longer one later lengthens it
    assert 3590 <= await client.ttl(store.keys.revoked_owners("s5")) <= 3600
    assert await store.unrevoke_all("s4") == ["carol", "dave"]


async def test_anonymous_traffic_is_keyed_on_the_pseudo_session(backend: tuple) -> None:
    store = make(backend)
    await store.record(ctx(user_id=None, session_id="anon1"), OK)
    assert (await store.read(ctx(user_id=None, session_id="anon1"))).n_events == 1
    other = await store.read(ctx(user_id=None, session_id="anon2"))
    assert other.n_events == 0 and other.ip_last_seen is None


async def test_all_keys_of_a_user_share_one_cluster_slot(backend: tuple) -> None:
    client, prefix, _ = backend
    store = make(backend)
    for i in range(3):
        await store.record(ctx(session_id=f"sess-{i}", user_id="a}b{c"), OK)
    await store.revoke("sess-0", "a}b{c", ttl=60)
    keys = [k async for k in client.scan_iter(match=store.keys.owner_pattern("a}b{c"))]
    assert len(keys) >= 10
    assert len({key_slot(k) for k in keys}) == 1
    assert store.keys.hash_tag("a}b{c", "x") == "u:a%7Db%7Bc"
    assert KeySpace(prefix).hash_tag("a", "x") != KeySpace(prefix).hash_tag("a}b{c", "x")


def test_escape_is_injective_and_bounded() -> None:
    assert escape("alice") == "alice"
    assert escape("a}b") != escape("a%7Db")
    assert escape("x" * 1000) != escape("x" * 1001)
    assert len(escape("{" * 1000)) <= 128
    with pytest.raises(ValueError):
        KeySpace("bad{")


async def test_memory_is_bounded_under_many_distinct_values(backend: tuple) -> None:
    client, _, kind = backend
    caps = dict(
        session_events_cap=5,
        max_ips=4,
        max_networks=3,
        max_devices=2,
        max_endpoints=6,
        max_bigrams=5,
        max_trigrams=5,
        max_sessions=3,
        max_switches=3,
        hour_histogram_decay_total=40,
    )
    store = make(backend, **caps)
    uas = [CHROME, "curl/8", "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0", "Wget/1.2"]
    n = 300
    await asyncio.gather(
        *(
            store.record(
                ctx(
                    ts=MONDAY_NOON + i * 977,
                    session_id=f"s{i % 11}",
                    route=f"/r{i % 17}",
                    client_ip=f"10.{i % 7}.{i}.{i % 5}",
                    user_agent=uas[i % 4],
                ),
                OK,
            )
            for i in range(n)
        )
    )
    k = store.keys.for_request("alice", "s0")
    for suffix, cap in [
        ("ip", 4),
        ("net", 3),
        ("dev", 2),
        ("ep", 6),
        ("bg", 5),
        ("bgo", 6),
        ("tg", 5),
        ("tgo", 5),
        ("sl", 3),
        ("sw", 3),
    ]:
        assert await client.zcard(k.user(suffix)) <= cap, suffix
    assert await client.hlen(k.user("sf")) <= 3
    assert await client.hlen(k.user("how")) <= 168
    assert sum(int(v) for v in (await client.hgetall(k.user("how"))).values()) <= 40
    keys = [key async for key in client.scan_iter(match=store.keys.owner_pattern("alice"))]
    event_lists = [key for key in keys if key.endswith(b":ev")]
    assert len(event_lists) <= 3 and len(keys) <= 13 + 3
    for key in event_lists:
        assert await client.llen(key) <= 5
    if kind == "real":
        used = sum([await client.memory_usage(key) or 0 for key in keys])
        assert used <= memory_bound_bytes(HistorySettings(**caps)) + 100 * len(keys)


async def test_noscript_falls_back_to_eval(backend: tuple) -> None:
    client, _, kind = backend
    store = make(backend)
    if kind == "embedded":  # never flush the shared real server's script cache
        await client.script_flush()
    await store.record(ctx(), OK)
    assert (await store.read(ctx())).n_events == 1


async def test_hour_of_week_in_configured_zone(backend: tuple) -> None:
    assert make(backend).hour_of_week(MONDAY_NOON) == 12
    assert make(backend, timezone="Asia/Tokyo").hour_of_week(MONDAY_NOON) == 21
    sunday_late = MONDAY_NOON - 13 * 3600 + 59 * 60
    assert make(backend).hour_of_week(sunday_late) == 167


async def test_round_trip_counter_requires_our_client() -> None:
    import redis.asyncio as aioredis

    plain = aioredis.Redis()
    with pytest.raises(TypeError):
        round_trips(plain)
    await plain.aclose()


async def test_a_session_idle_past_its_ttl_starts_again(backend: tuple) -> None:
    """Its events expire with the TTL; its age must restart too, not keep counting for weeks."""
    client = backend[0]
    store = make(backend, session_ttl_seconds=600)
    await store.record(ctx(ts=MONDAY_NOON), OK)
    await store.record(ctx(ts=MONDAY_NOON + 60), OK)
    assert (await store.read(ctx(ts=MONDAY_NOON + 90))).session_first_seen == MONDAY_NOON
    # The events key expiring is what "idle past the TTL" means for Redis.
    await client.delete(store.keys.for_request("alice", "s1").events)
    later = MONDAY_NOON + 86_400
    snap = await store.read(ctx(ts=later))
    assert snap.n_events == 0 and snap.session_first_seen is None
    await store.record(ctx(ts=later), OK)
    assert (await store.read(ctx(ts=later + 5))).session_first_seen == later


async def test_session_expiry_runs_in_event_time(backend: tuple) -> None:
    """Replayed logs write weeks of events within seconds: expiry must follow the events' own
    times, so a session idle longer than the TTL (by its timestamps) starts again."""
    store = make(backend, session_ttl_seconds=600)
    await store.record(ctx(ts=MONDAY_NOON), OK)
    await store.record(ctx(ts=MONDAY_NOON + 300), OK)
    assert (await store.read(ctx(ts=MONDAY_NOON + 899))).n_events == 2  # idle 599 s: same session
    gone = await store.read(ctx(ts=MONDAY_NOON + 901))  # idle 601 s
    assert gone.n_events == 0 and gone.session_first_seen is None
    await store.record(ctx(ts=MONDAY_NOON + 901), OK)
    again = await store.read(ctx(ts=MONDAY_NOON + 902))
    assert (
        again.ts.tolist() == [MONDAY_NOON + 901] and again.session_first_seen == MONDAY_NOON + 901
    )
