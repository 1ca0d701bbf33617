"""The gateway as a real process: several workers on one port, SIGTERM drains in-flight requests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
from aiohttp import web

from bench.procs import free_port, wait_port


def start_gateway(
    upstream_port: int, port: int, *extra: str, data_dir: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BEHAVIORGATE_LOGGING__ACCESS_LOG": "false",
        "BEHAVIORGATE_SERVER__SHUTDOWN_TIMEOUT": "10",
        "BEHAVIORGATE_DATABASE__SQLITE_PATH": f"{data_dir}/bg.sqlite3",
        "BEHAVIORGATE_WRITER__SPOOL_PATH": f"{data_dir}/predictions.spool",
        **(env or {}),
    }
    return subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--upstream",
            f"http://127.0.0.1:{upstream_port}",
            "--port",
            str(port),
            *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_ready(port: int) -> None:
    await asyncio.get_running_loop().run_in_executor(None, wait_port, port, 30.0)


async def test_two_workers_share_one_port(
    aiohttp_server, tmp_path, redis_url, redis_prefix, pg_dsn
):
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": 1})

    app = web.Application()
    app.router.add_get("/x", ok)
    up = await aiohttp_server(app)
    port = free_port()
    shared = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": pg_dsn,
        "BEHAVIORGATE_HISTORY__KEY_PREFIX": redis_prefix,
    }
    proc = start_gateway(up.port, port, "--workers", "2", data_dir=str(tmp_path), env=shared)
    try:
        await wait_ready(port)
        pids = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            async with aiohttp.ClientSession() as s:  # a new connection each time
                async with s.get(f"http://127.0.0.1:{port}/_behaviorgate/healthz") as r:
                    pids.add((await r.json())["pid"])
        assert len(pids) == 2 and proc.pid not in pids
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/x") as r:
            assert r.status == 200 and await r.json() == {"ok": 1}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


async def test_sigterm_drains_in_flight_requests(aiohttp_server, tmp_path):
    started = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(1.5)
        return web.json_response({"finished": True})

    app = web.Application()
    app.router.add_get("/slow", slow)
    up = await aiohttp_server(app)
    port = free_port()
    proc = start_gateway(up.port, port, data_dir=str(tmp_path))
    try:
        await wait_ready(port)
        async with aiohttp.ClientSession() as s:
            pending = asyncio.create_task(s.get(f"http://127.0.0.1:{port}/slow"))
            await asyncio.wait_for(started.wait(), 10)
            proc.send_signal(signal.SIGTERM)
            resp = await asyncio.wait_for(pending, 15)
            assert resp.status == 200 and json.loads(await resp.text()) == {"finished": True}
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20)
        assert code == 0
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert "Traceback" not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()


def test_workers_without_shared_stores_is_a_config_error():
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check-config"],
        env={**os.environ, "BEHAVIORGATE_SERVER__WORKERS": "2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "needs redis.url and database.url" in proc.stderr


def _stderr_lines(proc: subprocess.Popen[bytes]) -> list[str]:
    assert proc.stderr is not None
    return proc.stderr.read().decode().splitlines()


def _exit_code(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("the gateway did not exit after failing to start") from None


def test_unreachable_redis_refuses_to_start_in_one_line(tmp_path):
    closed = free_port()  # nothing listens here
    proc = start_gateway(
        free_port(),
        free_port(),
        data_dir=str(tmp_path),
        env={"REDIS_URL": f"redis://127.0.0.1:{closed}/0"},
    )
    assert _exit_code(proc) == 1
    lines = _stderr_lines(proc)
    refusals = [line for line in lines if line.startswith("behaviorgate: cannot start: redis: ")]
    assert len(refusals) == 1, lines
    assert f"127.0.0.1:{closed}" in refusals[0]
    # Stages already open (the upstream client) are closed, not leaked; no traceback.
    assert not any("Traceback" in line or "Unclosed" in line for line in lines), lines


def test_second_gateway_on_one_spool_exits_instead_of_hanging(tmp_path):
    first = start_gateway(free_port(), port := free_port(), data_dir=str(tmp_path))
    try:
        wait_port(port, 30.0)
        second = start_gateway(free_port(), free_port(), data_dir=str(tmp_path))
        # The embedded SQLite store was open when the spool lock failed: its thread must be
        # closed too, or the process lingers after the refusal.
        assert _exit_code(second) == 1
        lines = _stderr_lines(second)
        refusal = [line for line in lines if "cannot start: database: SpoolLocked:" in line]
        assert len(refusal) == 1 and "predictions.spool is held by another process" in refusal[0]
        assert not any("Traceback" in line for line in lines), lines
        assert first.poll() is None  # the first one keeps serving
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)


def test_redis_url_scheme_is_checked_with_the_config():
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check-config"],
        env={**os.environ, "REDIS_URL": "notaurl"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "redis.url: must start with redis://" in proc.stderr and "Value error" not in proc.stderr


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


async def test_a_dead_worker_is_replaced_and_reported(
    aiohttp_server, tmp_path, redis_url, redis_prefix, pg_dsn
):
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": 1})

    app = web.Application()
    app.router.add_get("/x", ok)
    up = await aiohttp_server(app)
    port = free_port()
    shared = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": pg_dsn,
        "BEHAVIORGATE_HISTORY__KEY_PREFIX": redis_prefix,
    }
    proc = start_gateway(up.port, port, "--workers", "2", data_dir=str(tmp_path), env=shared)
    try:
        await wait_ready(port)
        first = _children(proc.pid)
        assert len(first) == 2
        await asyncio.sleep(
            11
        )  # past the start-up grace: a death now is a crash, not a failed start
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _children(proc.pid)
            if len(now) == 2 and victim not in now:
                break
            await asyncio.sleep(0.2)
        assert len(now) == 2 and victim not in now and first - {victim} <= now
        await wait_ready(port)
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/x") as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    lines = _stderr_lines(proc)
    assert any(f"(pid {victim}) exited with code -9; starting a new one" in line for line in lines)
    assert code == 0, lines  # the replacement served; the stop itself was clean


def test_workers_that_cannot_start_stop_the_supervisor(tmp_path):
    closed = free_port()
    proc = start_gateway(
        free_port(),
        free_port(),
        "--workers",
        "2",
        data_dir=str(tmp_path),
        env={
            "REDIS_URL": f"redis://127.0.0.1:{closed}/0",
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
        },
    )
    assert _exit_code(proc) == 1
    lines = _stderr_lines(proc)
    assert sum("cannot start: redis:" in line for line in lines) >= 1
    assert any("stopping the others" in line for line in lines)
    assert not any("starting a new one" in line for line in lines)
