"""Open-loop load: requests are *scheduled* at a fixed rate and latency is measured from the
scheduled time, so a slow server cannot hide its queueing (no coordinated omission).

Runs as its own process (the load generator must not share the gateway's event loop).
Usage: python -m bench.openloop URL --rate 500 --seconds 10 [--tokens FILE] [--paths FILE]
       [--connections 64]
Prints one JSON object: sent, ok, errors, achieved_rps, p50_ms, p99_ms, p999_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
import numpy as np

UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"


async def run(
    url: str,
    rate: float,
    seconds: float,
    tokens: list[str],
    connections: int,
    paths: list[str] | None = None,
) -> dict[str, float]:
    total = int(rate * seconds)
    latencies = np.full(total, np.nan)
    errors = 0
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal errors
            while True:
                i, scheduled = await queue.get()
                headers = {"User-Agent": UA}
                if tokens:
                    headers["Authorization"] = "Bearer " + tokens[i % len(tokens)]
                target = url + paths[i % len(paths)] if paths else url
                try:
                    async with session.get(target, headers=headers) as resp:
                        await resp.read()
                        if resp.status >= 500:
                            errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                latencies[i] = time.perf_counter() - scheduled
                queue.task_done()

        workers = [asyncio.create_task(worker()) for _ in range(connections)]
        start = time.perf_counter() + 0.05
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((i, scheduled))
        await queue.join()
        elapsed = time.perf_counter() - start
        for w in workers:
            w.cancel()
    done = latencies[~np.isnan(latencies)] * 1000
    return {
        "sent": total,
        "ok": int(done.size - errors),
        "errors": errors,
        "achieved_rps": round(total / elapsed, 1),
        "p50_ms": round(float(np.percentile(done, 50)), 3),
        "p99_ms": round(float(np.percentile(done, 99)), 3),
        "p999_ms": round(float(np.percentile(done, 99.9)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--tokens", help="file with one bearer token per line")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--paths", help="file with one path per line, appended to URL in turn")
    args = ap.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise SystemExit("openloop only targets this machine (127.0.0.0/8, localhost, ::1)")
    tokens = open(args.tokens).read().split() if args.tokens else []
    paths = open(args.paths).read().split() if args.paths else None
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(
        json.dumps(
            asyncio.run(run(args.url, args.rate, args.seconds, tokens, args.connections, paths))
        )
    )


if __name__ == "__main__":
    main()
