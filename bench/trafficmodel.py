"""A small real model trained on vectors from the gateway's own history + features code (tests, benches)."""

from __future__ import annotations

import asyncio
import random

import numpy as np

from config.history import HistorySettings
from config.model import ModelSettings
from scoring.context import EventOutcome, RequestContext
from scoring.features import FEATURE_NAMES, FEATURE_SET_VERSION, extract
from scoring.training import train_bundle
from storage.history import HistoryStore
from storage.redis_conn import create_redis

ROUTES = ("/api/open/items", "/api/open/items/{id}", "/api/challenge/x", "/api/reports")
SMALL = ModelSettings.model_validate(
    {
        "isolation_forest": {"n_trees": 40},
        "autoencoder": {"epochs": 3, "torch_threads": 1},
        "training": {"min_samples": 100},
    }
)


async def _vectors(n_users: int, per_user: int, seed: int) -> np.ndarray:
    rng = random.Random(seed)
    client = create_redis(None)
    store = HistoryStore(client, HistorySettings(key_prefix="fixture:", coalesce_reads=False))
    rows = []
    t0 = 1_790_000_000.0
    try:
        for u in range(n_users):
            t = t0 + rng.uniform(0, 3600)
            ua = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36"
            for i in range(per_user):
                t += rng.uniform(2, 40)
                route = rng.choice(ROUTES)
                ctx = RequestContext(
                    ts=t,
                    method="GET",
                    path=route.replace("{id}", str(i)),
                    route=route,
                    user_id=f"u{u}",
                    session_id=f"s{u}",
                    client_ip=f"10.0.{u}.7",
                    user_agent=ua,
                    request_bytes=0,
                    sensitivity=1,
                    authenticated=True,
                )
                snap = await store.read(ctx)
                rows.append(extract(snap, ctx, t))
                await store.record(ctx, EventOutcome(200, 500, 12.0, "ALLOW", 0.1))
    finally:
        await client.aclose()
    return np.vstack(rows)


def tiny_bundle_bytes(seed: int = 7) -> bytes:
    """~1,200 vectors of ordinary sessions → a small trained bundle (a few seconds)."""
    X = asyncio.run(_vectors(40, 30, seed))
    bundle = train_bundle(X, list(FEATURE_NAMES), FEATURE_SET_VERSION, SMALL, seed=seed)
    return bundle.to_bytes()
