"""Start servers as separate processes and drive them with a load generator outside them."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


@contextlib.contextmanager
def process(
    args: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` until the block ends; its output goes to ``$BG_BENCH_LOGS/<pid>.log`` when
    that variable names a folder (to see why a run went wrong), else nowhere."""
    full_env = {**os.environ, **(env or {})}
    logs = os.environ.get("BG_BENCH_LOGS")
    sink = open(os.path.join(logs, f"{port}-{time.time_ns()}.log"), "wb") if logs else None  # noqa: SIM115
    out = sink if sink is not None else subprocess.DEVNULL
    proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=out, stderr=out)  # noqa: S603
    try:
        wait_port(port)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if sink is not None:
            sink.close()


def py(*args: str) -> list[str]:
    return [sys.executable, *args]


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float | None
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str,
    *,
    seconds: int = 10,
    connections: int = 64,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    script: os.PathLike[str] | str | None = None,
) -> LoadResult:
    """Closed-loop load with wrk (a separate process); `script` is a wrk Lua request generator."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    args = [exe, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for k, v in (headers or {}).items():
        args[1:1] = ["-H", f"{k}: {v}"]
    if script is not None:
        args[1:1] = ["-s", str(script)]
    out = subprocess.run(
        args, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout  # noqa: S603
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return LoadResult(rps, _ms(pct["50"]), _ms(pct["99"]), None, errors)
