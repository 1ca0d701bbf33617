"""Token buckets and admin-token hashing of the API."""

import hashlib

from config.api import ApiSettings
from proxy.api.auth import configured_hashes, token_hash
from proxy.api.ratelimit import RateLimiter


def test_bucket_allows_capacity_then_refills_at_rate() -> None:
    now = [0.0]
    rl = RateLimiter(6, clock=lambda: now[0])  # 6 per minute = one every 10 s
    assert [rl.take("a") for _ in range(6)] == [0.0] * 6
    assert rl.take("a") == 10.0  # empty: one token is 10 s away
    assert rl.take("b") == 0.0  # keys are independent
    now[0] = 25.0  # 2.5 tokens back
    assert rl.take("a") == 0.0 and rl.take("a") == 0.0
    assert rl.retry_after("a") == 5  # 0.5 token left -> 5 s, rounded up


def test_bucket_memory_is_bounded() -> None:
    rl = RateLimiter(1, max_keys=3, clock=lambda: 0.0)
    for key in "abcd":
        rl.take(key)
    assert rl.take("a") == 0.0  # evicted, so it starts full again
    assert len(rl._buckets) == 3  # noqa: SLF001


def test_hashes_from_settings_and_environment() -> None:
    digest = hashlib.sha256(b"one").hexdigest()
    s = ApiSettings(admin_token_hashes=digest.upper() + ", ")
    assert s.admin_token_hashes == (digest,)
    got = configured_hashes(s, {"BEHAVIORGATE_API_TOKENS": "one, two"})
    assert got == (bytes.fromhex(digest), hashlib.sha256(b"two").digest())
    assert token_hash("two") == hashlib.sha256(b"two").hexdigest()
