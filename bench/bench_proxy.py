"""Forwarding cost: straight to the upstream vs a minimal aiohttp pass-through vs the gateway.

Every figure comes from the same run on the same machine, with wrk (a separate process) as the
load generator. Usage: python -m bench.bench_proxy [--seconds 10] [--connections 64]
"""

from __future__ import annotations

import argparse

from bench.procs import free_port, process, py, wrk


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--path", default="/health")
    args = ap.parse_args()

    up, mini, gw = free_port(), free_port(), free_port()
    upstream_cmd = py(
        "-m", "proxy.cli", "sample-upstream", "--port", str(up), "--latency-scale", "0"
    )
    rows = []
    with process(upstream_cmd, up):
        rows.append(
            (
                "upstream direct",
                wrk(
                    f"http://127.0.0.1:{up}{args.path}",
                    seconds=args.seconds,
                    connections=args.connections,
                ),
            )
        )
        with process(py("-m", "bench.minimal_proxy", f"http://127.0.0.1:{up}", str(mini)), mini):
            rows.append(
                (
                    "minimal aiohttp pass-through",
                    wrk(
                        f"http://127.0.0.1:{mini}{args.path}",
                        seconds=args.seconds,
                        connections=args.connections,
                    ),
                )
            )
        gw_env = {
            "BEHAVIORGATE_LOGGING__ACCESS_LOG": "false",
            "BEHAVIORGATE_SCORING__ENABLED": "false",
        }
        gw_cmd = py(
            "-m", "proxy.cli", "serve", "--upstream", f"http://127.0.0.1:{up}", "--port", str(gw)
        )
        with process(gw_cmd, gw, env=gw_env):
            rows.append(
                (
                    "gateway, scoring off",
                    wrk(
                        f"http://127.0.0.1:{gw}{args.path}",
                        seconds=args.seconds,
                        connections=args.connections,
                    ),
                )
            )

    base = rows[1][1].rps
    print(
        f"{'path':32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'× pass-through':>15}"
    )
    for name, r in rows:
        print(
            f"{name:32} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d} {r.rps / base:15.2f}"
        )


if __name__ == "__main__":
    main()
