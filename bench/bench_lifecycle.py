"""Gateway p99 while a model trains beside it vs while nothing trains.

A real gateway process (scoring on, an active model, embedded stores) forwards to the sample
upstream at a fixed request rate (open loop: latency counts from each request's scheduled send
time, so a stall is not hidden). Three phases of equal length: idle, while a training process
runs exactly as the lifecycle starts it (idle scheduling class + ``nice``, one BLAS thread,
``python -m scoring.training`` with the default model settings), idle again.

Usage: python -m bench.bench_lifecycle [--seconds 15] [--rate 200] [--rows 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from bench.procs import free_port, process, py
from config.lifecycle import LifecycleSettings
from config.storage import DatabaseSettings
from proxy.lifecycle import trainer_command, trainer_environment
from scoring.features import FEATURE_NAMES, FEATURE_SET_VERSION
from storage.store import open_store

SMALL = (
    '{"isolation_forest": {"n_trees": 20}, "autoencoder": {"epochs": 2}, '
    '"training": {"min_samples": 100}}'
)


def write_inputs(d: Path, rows: int) -> Path:
    X = np.random.default_rng(0).normal(size=(rows, len(FEATURE_NAMES))).astype(np.float32)
    path = d / "in.npz"
    np.savez(
        path,
        X=X,
        feature_names=np.array(FEATURE_NAMES),
        feature_set_version=np.array(FEATURE_SET_VERSION),
    )
    return path


CFG = LifecycleSettings.model_validate(
    {"trainer_idle_priority": os.environ.get("BG_BENCH_TRAINER_IDLE", "1") == "1"}
)


def trainer_cmd(inp: Path, out: Path, settings: Path | None) -> list[str]:
    """Exactly the command line the lifecycle builds (BG_BENCH_TRAINER_IDLE=0: nice only)."""
    cmd = [sys.executable, "-m", "scoring.training", str(inp), str(out)]
    if settings is not None:
        cmd += ["--settings", str(settings)]
    return trainer_command(cmd, CFG)


def trainer_env() -> dict[str, str]:
    return trainer_environment(CFG)


async def install_model(d: Path, inp: Path) -> str:
    small = d / "small.json"
    small.write_text(SMALL)
    bundle = d / "model.bundle"
    subprocess.run(  # noqa: S603 - our own interpreter and temp files
        trainer_cmd(inp, bundle, small),
        env=trainer_env(),
        check=True,  # noqa: S603
        stdout=subprocess.DEVNULL,
    )
    db = str(d / "bg.sqlite3")
    store = await open_store(DatabaseSettings(sqlite_path=db))
    v = await store.registry.save_version(
        bundle.read_bytes(), feature_set_version=FEATURE_SET_VERSION
    )
    await store.registry.activate(v.version, by="bench")
    await store.close()
    return db


async def load(url: str, seconds: float, rate: float) -> tuple[np.ndarray, int]:
    """Requests at a fixed rate; latency from each scheduled send time, ms."""
    lat: list[float] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one(t_sched: float) -> None:
            nonlocal errors
            try:
                async with s.get(url) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            lat.append((time.perf_counter() - t_sched) * 1000)

        tasks = []
        start = time.perf_counter()
        n = int(seconds * rate)
        for i in range(n):
            t = start + i / rate
            delay = t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(t)))
        await asyncio.gather(*tasks)
    return np.array(lat), errors


def row(name: str, lat: np.ndarray, errors: int) -> str:
    p50, p99 = np.percentile(lat, [50, 99])
    return f"{name:<24} {len(lat):>7} {p50:>8.2f} {p99:>8.2f} {errors:>6}"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--rows", type=int, default=50_000)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="bg-bench-lc-"))
    inp = write_inputs(d, args.rows)
    db = await install_model(d, inp)
    up, gw = free_port(), free_port()
    env = {
        "BEHAVIORGATE_LOGGING__ACCESS_LOG": "false",
        "BEHAVIORGATE_DATABASE__SQLITE_PATH": db,
        "BEHAVIORGATE_WRITER__SPOOL_PATH": str(d / "spool"),
        "BEHAVIORGATE_LIFECYCLE__AUTO_TRAIN": "false",
        "BEHAVIORGATE_LIFECYCLE__DAILY_RETRAIN": "false",
        "BEHAVIORGATE_MODE": "shadow",
    }
    url = f"http://127.0.0.1:{gw}/health"
    up_cmd = py("-m", "proxy.cli", "sample-upstream", "--port", str(up), "--latency-scale", "0")
    gw_cmd = py(
        "-m", "proxy.cli", "serve", "--upstream", f"http://127.0.0.1:{up}", "--port", str(gw)
    )
    lines = []
    with process(up_cmd, up), process(gw_cmd, gw, env=env):
        await load(url, 3, args.rate)  # warm-up
        lat, err = await load(url, args.seconds, args.rate)
        base = np.percentile(lat, 99)
        lines.append(row("idle", lat, err))
        child = subprocess.Popen(  # noqa: S603 - our own interpreter and temp files
            trainer_cmd(inp, d / "new.bundle", None),
            env=trainer_env(),
            stdout=subprocess.DEVNULL,
        )
        try:
            lat, err = await load(url, args.seconds, args.rate)
            still = child.poll() is None
        finally:
            child.kill()
            child.wait()
        training = np.percentile(lat, 99)
        lines.append(row("training (child)", lat, err))
        lat, err = await load(url, args.seconds, args.rate)
        lines.append(row("idle again", lat, err))
    print(
        f"gateway p99 at {args.rate:g} req/s, {args.seconds:g} s per phase, "
        f"trainer on {args.rows} rows x {len(FEATURE_NAMES)} features, {os.cpu_count()} CPUs"
    )
    print(f"{'phase':<24} {'requests':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    print("\n".join(lines))
    print(
        f"p99 training / idle: {training / base:.2f}"
        f"{'' if still else '  (trainer finished before the phase ended)'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
