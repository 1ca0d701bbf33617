"""Behavioural history in Redis: one round trip to read before scoring, one to record after.

Per session: the last ``session_events_cap`` events (a list, newest first, idle TTL). Per owner
(the user, or the pseudo-session of anonymous traffic): last-seen sorted sets of IPs, networks,
devices, endpoints and sessions over the long window, an hour-of-week histogram, route bigram and
trigram counts, session first-seen times and session-switch times. Every collection is capped on
each write, so one owner's memory is bounded whatever the traffic (:func:`memory_bound_bytes`).

Both scripts run server-side in Lua, so concurrent replicas see and update the same state; every key
they touch carries the owner's hash tag (one Redis Cluster slot). A session evicted from the
owner's session set loses its event list; its revocation and step-up keys are left to their own
TTLs, so eviction can never lift a revocation.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from config.history import HistorySettings
from scoring.context import EventOutcome, HistorySnapshot, RequestContext, network_of, severity_of
from scoring.useragent import fingerprint
from storage.keys import KeySpace
from storage.redis_conn import PipelineBatcher, RoundTripCounter, round_trips

SEP = "\x1f"
#: Fields of a stored event, in order. ``head`` is the hex of :data:`HEAD_DTYPE` (time, score,
#: status, decision severity): fixed width, so a whole session's numbers decode in one
#: ``np.frombuffer`` instead of one float parse per event.
EVENT_FIELDS = (
    "head",
    "route",
    "method",
    "ip",
    "device",
    "request_bytes",
    "response_bytes",
    "latency_ms",
)
HEAD_DTYPE = np.dtype([("ts", "<f8"), ("score", "<f4"), ("status", "<u2"), ("severity", "u1")])
_NF = len(EVENT_FIELDS)
#: Longest route template / method / IP stored (longer client-derived values are cut).
MAX_ROUTE_CHARS = 256
MAX_SHORT_CHARS = 64
_USER_TTL_SLACK_S = 86_400

_LUA_COMMON = r"""
local US = "\31"
local unpack = unpack or table.unpack
local function route_of(ev)
  return string.match(ev, "^[^\31]*\31([^\31]*)")
end
"""

READ_LUA = (
    _LUA_COMMON
    + r"""
local now = tonumber(ARGV[1])
local sid, ip, net, dev, route = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local cap = tonumber(ARGV[7])
local short_from = now - tonumber(ARGV[8])
local long_from = now - tonumber(ARGV[9])
local conc_from = now - tonumber(ARGV[10])
-- idle past the session TTL in event time (replayed logs behave like live traffic): new session
local idle_since = tonumber(redis.call("ZSCORE", KEYS[14], sid) or "")
local expired = idle_since ~= nil and now - idle_since > tonumber(ARGV[11])
local events = expired and {} or redis.call("LRANGE", KEYS[1], 0, cap - 1)
local out = {}
local function since(key, member, from)
  local s = redis.call("ZSCORE", key, member)
  if s and tonumber(s) >= from then return s end
  return ""
end
local function distinct_with(key, member, from)
  local n = redis.call("ZCOUNT", key, from, "+inf")
  if since(key, member, from) == "" then n = n + 1 end
  return tostring(n)
end
out[1] = tostring(redis.call("EXISTS", KEYS[2]))
out[2] = redis.call("GET", KEYS[3]) or ""
-- a session whose events expired (idle past the TTL) starts again: no first-seen time
out[3] = (#events > 0) and (redis.call("HGET", KEYS[13], sid) or "") or ""
out[4] = since(KEYS[4], ip, long_from)
out[5] = since(KEYS[5], net, long_from)
out[6] = since(KEYS[6], dev, long_from)
out[7] = since(KEYS[7], route, long_from)
out[8] = distinct_with(KEYS[4], ip, short_from)
out[9] = distinct_with(KEYS[5], net, short_from)
out[10] = distinct_with(KEYS[6], dev, long_from)
local mine = redis.call("ZSCORE", KEYS[14], sid)
mine = mine and tonumber(mine) or -1
local n24 = redis.call("ZCOUNT", KEYS[14], now - 86400, "+inf")
if mine >= now - 86400 then n24 = n24 - 1 end
local nconc = redis.call("ZCOUNT", KEYS[14], conc_from, "+inf")
if mine >= conc_from then nconc = nconc - 1 end
out[11] = tostring(n24)
out[12] = tostring(nconc)
local lasts = redis.call("ZRANGEBYSCORE", KEYS[14], long_from, "+inf", "WITHSCORES")
local total, count = 0, 0
if #lasts > 0 then
  local ids = {}
  for i = 1, #lasts, 2 do ids[#ids + 1] = lasts[i] end
  local firsts = redis.call("HMGET", KEYS[13], unpack(ids))
  for i = 1, #ids do
    local f, l = tonumber(firsts[i]), tonumber(lasts[2 * i])
    if f and l and l >= f then total = total + (l - f); count = count + 1 end
  end
end
out[13] = count > 0 and tostring(total / count) or "0"
out[14] = tostring(redis.call("ZCOUNT", KEYS[15], now - 3600, "+inf"))
local p1 = events[1] and route_of(events[1])
local p2 = events[2] and route_of(events[2])
out[15], out[16], out[17], out[18] = "0", "0", "0", "0"
if p1 then
  out[15] = redis.call("ZSCORE", KEYS[9], p1 .. US .. route) or "0"
  out[16] = redis.call("ZSCORE", KEYS[10], p1) or "0"
  if p2 then
    out[17] = redis.call("ZSCORE", KEYS[11], p2 .. US .. p1 .. US .. route) or "0"
    out[18] = redis.call("ZSCORE", KEYS[12], p2 .. US .. p1) or "0"
  end
end
local hod = {}
for h = 1, 24 do hod[h] = 0 end
local how = redis.call("HGETALL", KEYS[8])
for i = 1, #how, 2 do
  local k = tonumber(how[i])
  if k then hod[k % 24 + 1] = hod[k % 24 + 1] + tonumber(how[i + 1]) end
end
for h = 1, 24 do out[18 + h] = tostring(hod[h]) end
return {#events, table.concat(events, US), out}
"""
)

RECORD_LUA = (
    _LUA_COMMON
    + r"""
local now_s = ARGV[1]
local now = tonumber(now_s)
local sid, event, ip, net, dev, route, how = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
  ARGV[7], ARGV[8]
local cap, session_ttl, long_s = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local max_ip, max_net, max_dev, max_ep = tonumber(ARGV[12]), tonumber(ARGV[13]),
  tonumber(ARGV[14]), tonumber(ARGV[15])
local max_bg, max_tg, max_sess, max_sw = tonumber(ARGV[16]), tonumber(ARGV[17]),
  tonumber(ARGV[18]), tonumber(ARGV[19])
local decay, session_base, user_ttl = tonumber(ARGV[20]), ARGV[21], tonumber(ARGV[22])
local long_from = now - long_s
-- a session idle past its TTL in event time starts again (its Redis TTL runs on the wall clock)
local idle_since = tonumber(redis.call("ZSCORE", KEYS[14], sid) or "")
if idle_since ~= nil and now - idle_since > session_ttl then redis.call("DEL", KEYS[1]) end
local function cap_zset(key, n_max)
  local n = redis.call("ZCARD", key)
  if n > n_max then redis.call("ZREMRANGEBYRANK", key, 0, n - n_max - 1) end
end
local function seen(key, member, n_max)
  redis.call("ZADD", key, now_s, member)
  redis.call("ZREMRANGEBYSCORE", key, "-inf", "(" .. long_from)
  cap_zset(key, n_max)
end
local function count(key, member, n_max)
  redis.call("ZINCRBY", key, 1, member)
  cap_zset(key, n_max)
end
-- transitions into this route from the session's previous one and two routes
local prev = redis.call("LRANGE", KEYS[1], 0, 1)
local p1 = prev[1] and route_of(prev[1])
local p2 = prev[2] and route_of(prev[2])
if p1 then
  count(KEYS[9], p1 .. US .. route, max_bg)
  count(KEYS[10], p1, max_ep)
  if p2 then
    count(KEYS[11], p2 .. US .. p1 .. US .. route, max_tg)
    count(KEYS[12], p2 .. US .. p1, max_bg)
  end
end
local resumed = redis.call("EXISTS", KEYS[1]) == 1
redis.call("LPUSH", KEYS[1], event)
redis.call("LTRIM", KEYS[1], 0, cap - 1)
redis.call("EXPIRE", KEYS[1], session_ttl)
seen(KEYS[4], ip, max_ip)
seen(KEYS[5], net, max_net)
seen(KEYS[6], dev, max_dev)
seen(KEYS[7], route, max_ep)
-- sessions: first seen, last seen; forget old and least recent ones with their events
if resumed then redis.call("HSETNX", KEYS[13], sid, now_s)
else redis.call("HSET", KEYS[13], sid, now_s) end  -- idle past the TTL: a new session
redis.call("ZADD", KEYS[14], now_s, sid)
local gone = redis.call("ZRANGEBYSCORE", KEYS[14], "-inf", "(" .. long_from)
local n = redis.call("ZCARD", KEYS[14]) - #gone
if n > max_sess then
  local extra = redis.call("ZRANGE", KEYS[14], #gone, #gone + n - max_sess - 1)
  for i = 1, #extra do gone[#gone + 1] = extra[i] end
end
for i = 1, #gone do
  redis.call("ZREM", KEYS[14], gone[i])
  redis.call("HDEL", KEYS[13], gone[i])
  redis.call("DEL", session_base .. gone[i] .. ":ev")
end
-- session switches: this owner's previous request came from another session
local last = redis.call("HGET", KEYS[16], "ls")
if last and last ~= sid then
  redis.call("ZADD", KEYS[15], now_s, now_s .. US .. sid)
  redis.call("ZREMRANGEBYSCORE", KEYS[15], "-inf", "(" .. (now - 3600))
  cap_zset(KEYS[15], max_sw)
end
redis.call("HSET", KEYS[16], "ls", sid)
-- hour-of-week histogram, halved when its total passes the decay threshold
redis.call("HINCRBY", KEYS[8], how, 1)
if redis.call("HINCRBY", KEYS[16], "ht", 1) > decay then
  local bins = redis.call("HGETALL", KEYS[8])
  local kept = 0
  for i = 1, #bins, 2 do
    local v = math.floor(tonumber(bins[i + 1]) / 2)
    if v > 0 then redis.call("HSET", KEYS[8], bins[i], v); kept = kept + v
    else redis.call("HDEL", KEYS[8], bins[i]) end
  end
  redis.call("HSET", KEYS[16], "ht", kept)
end
for i = 4, #KEYS do redis.call("EXPIRE", KEYS[i], user_ttl) end
return 1
"""
)


# The owners set lives as long as its longest revocation: a shorter one added later must not
# shorten it (EXPIRE GT/NX would need Redis 7).
_ADD_OWNER_LUA = """
redis.call("SADD", KEYS[1], ARGV[1])
if redis.call("TTL", KEYS[1]) < tonumber(ARGV[2]) then redis.call("EXPIRE", KEYS[1], ARGV[2]) end
return 1
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def _clean(value: str, limit: int) -> str:
    """A client-derived value safe to embed in an event (no separator) and of bounded size."""
    return value[:limit].replace(SEP, "?")


def memory_bound_bytes(settings: HistorySettings) -> int:
    """Upper estimate of the Redis payload one owner can occupy (keys' values, not overhead).

    Members are bounded by :data:`MAX_ROUTE_CHARS`/:data:`MAX_SHORT_CHARS` and escaped ids by
    ``storage.keys.MAX_ID_CHARS``; an event is at most ``~2 * MAX_ROUTE_CHARS`` bytes with its
    numbers. Revocation and step-up flags (≤ ~200 bytes each) are extra and expire on their own.
    """
    s = settings
    event = MAX_ROUTE_CHARS + 3 * MAX_SHORT_CHARS + 96
    sessions = s.max_sessions * (s.session_events_cap * event + 2 * 160)
    zsets = (s.max_ips + s.max_networks + s.max_devices) * (MAX_SHORT_CHARS + 16)
    routes = s.max_endpoints * 2 * (MAX_ROUTE_CHARS + 16)
    grams = (s.max_bigrams * 3 + s.max_trigrams * 3) * (MAX_ROUTE_CHARS + 16)
    return sessions + zsets + routes + grams + 168 * 16 + s.max_switches * 200 + 512


class HistoryStore:
    """Reads and records behavioural history; one Redis round trip each."""

    def __init__(self, redis: aioredis.Redis, settings: HistorySettings) -> None:
        self._redis = redis
        self._settings = settings
        self._keys = KeySpace(settings.key_prefix)
        self._zone = ZoneInfo(settings.timezone)
        self._read_sha = _sha(READ_LUA)
        self._record_sha = _sha(RECORD_LUA)
        self._batcher = (
            PipelineBatcher(redis, max_batch=settings.max_batch)
            if settings.coalesce_reads
            else None
        )
        s = settings
        self._read_tail = (
            str(s.session_events_cap),
            str(s.baseline_short_days * 86_400),
            str(s.baseline_long_days * 86_400),
            str(s.concurrent_window_seconds),
            str(s.session_ttl_seconds),
        )
        user_ttl = s.baseline_long_days * 86_400 + _USER_TTL_SLACK_S
        self._record_tail = tuple(
            str(v)
            for v in (
                s.session_events_cap,
                s.session_ttl_seconds,
                s.baseline_long_days * 86_400,
                s.max_ips,
                s.max_networks,
                s.max_devices,
                s.max_endpoints,
                s.max_bigrams,
                s.max_trigrams,
                s.max_sessions,
                s.max_switches,
                s.hour_histogram_decay_total,
            )
        )
        self._user_ttl = str(user_ttl)

    @property
    def keys(self) -> KeySpace:
        return self._keys

    @property
    def round_trips(self) -> RoundTripCounter:
        """Round trips (and bytes) sent by the underlying client so far."""
        return round_trips(self._redis)

    async def load_scripts(self) -> None:
        """Load both scripts into the server's cache (at start-up), so the first request does
        not pay the NOSCRIPT → EVAL fallback's extra round trip."""
        for script in (READ_LUA, RECORD_LUA):
            await self._redis.script_load(script)

    # -- read ------------------------------------------------------------------------------------

    async def read(self, ctx: RequestContext) -> HistorySnapshot:
        """Everything scoring needs for ``ctx``: one round trip (shared with concurrent reads)."""
        keys = self._keys.for_request(ctx.user_id, ctx.session_id)
        argv = (
            repr(float(ctx.ts)),
            keys.session,
            _clean(ctx.client_ip, MAX_SHORT_CHARS),
            network_of(_clean(ctx.client_ip, MAX_SHORT_CHARS)),
            fingerprint(ctx.user_agent),
            _clean(ctx.route, MAX_ROUTE_CHARS),
            *self._read_tail,
        )
        n_events, blob, scalars = await self._evalsha(READ_LUA, self._read_sha, keys.all(), argv)
        return _snapshot(n_events, blob, scalars)

    # -- record ----------------------------------------------------------------------------------

    def encode_event(self, ctx: RequestContext, outcome: EventOutcome) -> str:
        """The stored form of one event: fields of :data:`EVENT_FIELDS` joined by ``\\x1f``."""
        score = outcome.score if np.isfinite(outcome.score) else 0.0
        latency = outcome.latency_ms if np.isfinite(outcome.latency_ms) else 0.0
        head = (
            np.array(
                [
                    (
                        ctx.ts,
                        score,
                        min(max(int(outcome.status), 0), 65535),
                        severity_of(outcome.decision),
                    )
                ],
                dtype=HEAD_DTYPE,
            )
            .tobytes()
            .hex()
        )
        return SEP.join(
            (
                head,
                _clean(ctx.route, MAX_ROUTE_CHARS),
                _clean(ctx.method, MAX_SHORT_CHARS),
                _clean(ctx.client_ip, MAX_SHORT_CHARS),
                fingerprint(ctx.user_agent),
                str(max(int(ctx.request_bytes), 0)),
                str(max(int(outcome.response_bytes), 0)),
                f"{latency:.1f}",
            )
        )

    def hour_of_week(self, ts: float) -> int:
        """0 = Monday 00:00–00:59 in the configured time zone, ... 167 = Sunday 23:00–23:59."""
        dt = datetime.fromtimestamp(ts, self._zone)
        return dt.weekday() * 24 + dt.hour

    async def record(self, ctx: RequestContext, outcome: EventOutcome) -> None:
        """Append the event and update the owner's baselines: one round trip."""
        keys = self._keys.for_request(ctx.user_id, ctx.session_id)
        ip = _clean(ctx.client_ip, MAX_SHORT_CHARS)
        argv = (
            repr(float(ctx.ts)),
            keys.session,
            self.encode_event(ctx, outcome),
            ip,
            network_of(ip),
            fingerprint(ctx.user_agent),
            _clean(ctx.route, MAX_ROUTE_CHARS),
            str(self.hour_of_week(ctx.ts)),
            *self._record_tail,
            keys.base + "s:",
            self._user_ttl,
        )
        await self._evalsha(RECORD_LUA, self._record_sha, keys.all(), argv)

    # -- enforcement state -----------------------------------------------------------------------

    async def revoke(self, session_id: str, user_id: str | None, ttl: int) -> None:
        """Mark a session revoked for ``ttl`` seconds; every replica sees it on its next read."""
        keys = self._keys.for_request(user_id, session_id)
        ttl = max(int(ttl), 1)
        if user_id is None:
            await self._redis.set(keys.revoked, b"1", ex=ttl)
            return
        owners = self._keys.revoked_owners(session_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.revoked, b"1", ex=ttl)
            # Two keys in two slots: one command each, never one script.
            pipe.eval(_ADD_OWNER_LUA, 1, owners, user_id, ttl)
            await pipe.execute()

    async def grant_stepup(
        self, session_id: str, user_id: str | None, ttl: int, now: float | None = None
    ) -> float:
        """Record a passed step-up for ``ttl`` seconds; returns the epoch time it lapses."""
        keys = self._keys.for_request(user_id, session_id)
        start = datetime.now().timestamp() if now is None else now
        until = start + max(int(ttl), 1)
        await self._redis.set(keys.stepup, repr(until), ex=max(int(ttl), 1))
        return until

    async def unrevoke(self, session_id: str, user_id: str | None) -> bool:
        """Lift one owner's revocation (None = the anonymous session); True if it was revoked."""
        keys = self._keys.for_request(user_id, session_id)
        if user_id is None:
            return bool(await self._redis.delete(keys.revoked))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.revoked)
            pipe.srem(self._keys.revoked_owners(session_id), user_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def unrevoke_all(self, session_id: str) -> list[str | None]:
        """Lift every revocation of ``session_id``: the anonymous one and those of the users it was
        revoked for; returns whose were lifted (None = anonymous)."""
        owners_key = self._keys.revoked_owners(session_id)
        users = sorted(m.decode("utf-8", "replace") for m in await self._redis.smembers(owners_key))
        owners: list[str | None] = [None, *users]
        async with self._redis.pipeline(transaction=False) as pipe:
            for owner in owners:
                pipe.delete(self._keys.for_request(owner, session_id).revoked)
            if users:  # only those read: an owner added meanwhile stays findable
                pipe.srem(owners_key, *users)
            replies = await pipe.execute()
        return [owner for owner, n in zip(owners, replies, strict=False) if n]

    async def count_challenge(
        self, session_id: str, user_id: str | None, window: int, now: float, cap: int = 1000
    ) -> int:
        """Add one step-up demand to the owner's sliding window; returns how many it now holds.

        One round trip, only on the challenge path. The window is capped so a flood stays bounded.
        """
        key = self._keys.for_request(user_id, session_id).user("esc")
        member = f"{now!r}:{session_id}"[:200]
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(key, {member: now})
        pipe.zremrangebyscore(key, "-inf", now - window)
        pipe.zremrangebyrank(key, 0, -cap - 1)
        pipe.zcard(key)
        pipe.expire(key, int(window) + 60)
        result = await pipe.execute()
        return int(result[3])

    async def clear_escalation(self, user_id: str | None, session_id: str = "") -> bool:
        """Forget a user's recent step-up demands (admin release)."""
        key = self._keys.for_request(user_id, session_id).user("esc")
        return bool(await self._redis.delete(key))

    async def reset_user(self, user_id: str) -> int:
        """Forget everything about a user (baselines, sessions, flags); returns keys deleted."""
        pattern = self._keys.owner_pattern(user_id)
        deleted = 0
        batch: list[bytes] = []
        async for key in self._redis.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await self._redis.delete(*batch)
                batch.clear()
        if batch:
            deleted += await self._redis.delete(*batch)
        return deleted

    async def drain(self) -> None:
        """Wait until queued commands have been answered (for shutdown and tests)."""
        if self._batcher is not None:
            await self._batcher.drain()

    # -- plumbing --------------------------------------------------------------------------------

    async def _send(self, *args: Any) -> Any:
        if self._batcher is not None:
            return await self._batcher.execute(*args)
        return await self._redis.execute_command(*args)

    async def _evalsha(self, script: str, sha: str, keys: list[str], argv: tuple[str, ...]) -> Any:
        try:
            return await self._send("EVALSHA", sha, len(keys), *keys, *argv)
        except NoScriptError:
            # First use on this server, or its script cache was flushed: EVAL loads it.
            return await self._send("EVAL", script, len(keys), *keys, *argv)


def _opt_float(raw: bytes) -> float | None:
    return float(raw) if raw else None


def _codes(values: list[bytes]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer codes in first-appearance order and the decoded vocabulary."""
    # dict.fromkeys keeps first appearances in order; map() looks codes up without a Python loop.
    index = {v: i for i, v in enumerate(dict.fromkeys(values))}
    codes = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values))
    return codes, tuple(v.decode("utf-8", "replace") for v in index)


def _decode_events(n: int, blob: bytes) -> dict[str, Any]:
    """Column arrays (oldest first) from ``n`` stored events joined newest first by ``\\x1f``.

    A reply that does not split into ``n`` well-formed events (foreign or corrupt data under our
    keys) decodes as no history rather than as wrong history.
    """
    flat = blob.split(b"\x1f") if n else []
    if not n or len(flat) != n * _NF:
        return {}
    try:
        heads = np.frombuffer(
            bytes.fromhex(b"".join(flat[0::_NF]).decode("ascii")), dtype=HEAD_DTYPE
        )[::-1]
    except ValueError:
        return {}
    if heads.shape[0] != n:
        return {}
    route_codes, route_vocab = _codes(flat[-_NF + 1 :: -_NF])
    ip_codes, ip_vocab = _codes(flat[-_NF + 3 :: -_NF])
    device_codes, device_vocab = _codes(flat[-_NF + 4 :: -_NF])
    return {
        "ts": heads["ts"].astype(np.float64),
        "status": heads["status"].astype(np.int64),
        "severity": heads["severity"].astype(np.int64),
        "score": heads["score"].astype(np.float64),
        "route_codes": route_codes,
        "route_vocab": route_vocab,
        "ip_codes": ip_codes,
        "ip_vocab": ip_vocab,
        "device_codes": device_codes,
        "device_vocab": device_vocab,
    }


def _snapshot(n_events: int, blob: bytes, s: list[bytes]) -> HistorySnapshot:
    return HistorySnapshot(
        **_decode_events(n_events, blob),
        revoked=s[0] == b"1",
        stepup_until=_opt_float(s[1]),
        session_first_seen=_opt_float(s[2]),
        ip_last_seen=_opt_float(s[3]),
        network_last_seen=_opt_float(s[4]),
        device_last_seen=_opt_float(s[5]),
        endpoint_last_seen=_opt_float(s[6]),
        ips_7d=int(s[7]),
        networks_7d=int(s[8]),
        devices_30d=int(s[9]),
        other_sessions_24h=int(s[10]),
        concurrent_sessions=int(s[11]),
        avg_session_duration_s=float(s[12]),
        session_switches_1h=int(s[13]),
        bigram_count=float(s[14]),
        bigram_total=float(s[15]),
        trigram_count=float(s[16]),
        trigram_total=float(s[17]),
        hour_histogram=np.array(s[18:42]).astype(np.float64),
    )
