"""A small real model trained on vectors from the gateway's own history + features code (tests, benches)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import numpy as np

from config.history import HistorySettings
from config.model import ModelSettings
from scoring.context import EventOutcome, RequestContext
from scoring.features import FEATURE_NAMES, FEATURE_SET_VERSION, extract
from scoring.training import train_bundle
from storage.history import HistoryStore
from storage.redis_conn import create_redis

ROUTES = ("/api/open/items", "/api/open/items/{id}", "/api/challenge/x", "/api/reports")
#: What the gateway benchmark's clients request (the sample upstream's read routes).
BENCH_PATHS = (
    "/api/transactions",
    "/api/transactions/{id}",
    "/api/expenses",
    "/api/reports",
    "/health",
)
BENCH_UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"
SMALL = ModelSettings.model_validate(
    {
        "isolation_forest": {"n_trees": 40},
        "autoencoder": {"epochs": 3, "torch_threads": 1},
        "training": {"min_samples": 100},
    }
)


@dataclass(frozen=True)
class Traffic:
    """The shape of ordinary sessions: who, from where, which routes, how far apart."""

    routes: tuple[str, ...] = ROUTES
    gap_s: tuple[float, float] = (2.0, 40.0)
    user_agent: str = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36"
    same_ip: str | None = None  # every user behind one address (a benchmark on loopback)
    start: float = 1_790_000_000.0
    past_scores: tuple[float, float] = (0.1, 0.1)  # the composite each past request was given


async def _vectors(
    n_users: int, per_user: int, seed: int, traffic: Traffic = Traffic()
) -> np.ndarray:
    rng = random.Random(seed)
    client = create_redis(None)
    store = HistoryStore(client, HistorySettings(key_prefix="fixture:", coalesce_reads=False))
    rows = []
    try:
        for u in range(n_users):
            t = traffic.start + rng.uniform(0, 3600)
            ip = traffic.same_ip or f"10.0.{u % 250}.{7 + u // 250}"
            for i in range(per_user):
                t += rng.uniform(*traffic.gap_s)
                route = rng.choice(traffic.routes)
                ctx = RequestContext(
                    ts=t,
                    method="GET",
                    path=route.replace("{id}", str(i)),
                    route=route,
                    user_id=f"u{u}",
                    session_id=f"s{u}",
                    client_ip=ip,
                    user_agent=traffic.user_agent,
                    request_bytes=0,
                    sensitivity=1,
                    authenticated=True,
                )
                snap = await store.read(ctx)
                rows.append(extract(snap, ctx, t))
                lo, hi = traffic.past_scores
                score = lo if lo == hi else rng.uniform(lo, hi)
                await store.record(ctx, EventOutcome(200, 500, 12.0, "ALLOW", score))
    finally:
        await client.aclose()
    return np.vstack(rows)


def tiny_bundle_bytes(seed: int = 7) -> bytes:
    """~1,200 vectors of ordinary sessions → a small trained bundle (a few seconds)."""
    X = asyncio.run(_vectors(40, 30, seed))
    bundle = train_bundle(X, list(FEATURE_NAMES), FEATURE_SET_VERSION, SMALL, seed=seed)
    return bundle.to_bytes()


def bench_bundle_bytes(gap_s: tuple[float, float], seed: int = 11) -> bytes:
    """A model of the gateway benchmark's own clients (loopback address, the sample upstream's
    read routes, ``gap_s`` between a session's requests, starting now, ordinary past scores),
    so that the benchmark measures scoring of its traffic as ordinary, not as a flood of
    anomalies (which would be explained and recorded at every request)."""
    traffic = Traffic(
        routes=BENCH_PATHS,
        gap_s=gap_s,
        user_agent=BENCH_UA,
        same_ip="127.0.0.1",
        start=time.time() - 1800,
        past_scores=(0.0, 0.6),
    )
    X = asyncio.run(_vectors(100, 60, seed, traffic))
    bundle = train_bundle(X, list(FEATURE_NAMES), FEATURE_SET_VERSION, SMALL, seed=seed)
    return bundle.to_bytes()
