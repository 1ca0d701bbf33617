"""`make bench`: every benchmark in one run on this machine, one section each.

Each benchmark is its own process (and starts its own servers), so figures within a section are
measured side by side. Usage: python -m bench.run [--quick]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time

SECTIONS = (
    (
        "forwarding: upstream vs minimal pass-through vs gateway (scoring off)",
        ["-m", "bench.bench_proxy"],
    ),
    (
        "the whole hot path under load (real Redis + Postgres + model), open loop, RSS, 2 workers",
        ["-m", "bench.bench_gateway", "--workers2"],
    ),
    (
        "memory: Redis bytes per user and session, gateway RSS at 10k and 100k sessions",
        ["-m", "bench.bench_memory"],
    ),
    ("features and history access", ["bench/bench_features.py"]),
    (
        "scoring, explanation, training (100k and 1M vectors)",
        ["bench/bench_scoring.py", "--million"],
    ),
    ("prediction writer into Postgres", ["bench/bench_writer.py"]),
    ("gateway p99 while a model trains", ["-m", "bench.bench_lifecycle"]),
)
QUICK = {
    "bench.bench_proxy": ["--seconds", "5"],
    "bench.bench_gateway": ["--seconds", "5"],
    "bench.bench_memory": ["--users", "200", "--sessions", "2000,10000"],
    "bench/bench_scoring.py": ["--rows", "20000", "--no-million"],
    "bench/bench_writer.py": ["--rows", "50000"],
    "bench.bench_lifecycle": ["--seconds", "8"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter runs (rougher figures)")
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}"
    )
    for title, argv in SECTIONS:
        key = argv[1] if argv[0] == "-m" else argv[0]
        extra = QUICK.get(key, []) if args.quick else []
        print(f"\n## {title}\n", flush=True)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, *argv, *extra], check=False)  # noqa: S603
        print(f"({time.monotonic() - started:.0f} s, exit {proc.returncode})", flush=True)


if __name__ == "__main__":
    main()
