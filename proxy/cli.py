"""`behaviorgate` command line: serve, check-config, sample-upstream, simulate, import-log,
replay, demo."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from config.loader import ConfigError, load_settings
from config.settings import Settings


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "upstream", None):
        out.setdefault("upstream", {})["url"] = args.upstream
    for name in ("host", "port", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            out.setdefault("server", {})[name] = value
    if getattr(args, "mode", None):
        out["mode"] = args.mode
    return out


def _load(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        for line in exc.problems:
            print(f"behaviorgate: config: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        return
    uvloop.install()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings.server.workers > 1 and not args.worker:
        return _supervise(settings, args)
    from aiohttp import web

    from proxy.app import StartupError, create_app, server_options
    from proxy.logs import configure_logging

    configure_logging(settings.logging)
    _install_uvloop()
    app = create_app(settings)
    listening: list[bool] = []  # run_app calls `print` once the socket is bound
    try:
        web.run_app(
            app,
            host=settings.server.host,
            port=settings.server.port,
            shutdown_timeout=settings.server.shutdown_timeout,
            reuse_port=settings.server.workers > 1 or args.worker,
            access_log=None,
            print=_announce(settings, app, listening, quiet=args.worker),
            **server_options(settings),
        )
    except (StartupError, OSError) as exc:  # OSError: the port cannot be bound
        what = "stopped after an error" if listening else "cannot start"
        print(f"behaviorgate: {what}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def _announce(settings: Settings, app: Any, listening: list[bool], *, quiet: bool) -> Any:
    def say(*_: Any) -> None:
        from proxy.app import MODELS

        listening.append(True)
        if quiet:
            return

        # With no active model the gateway learns (allows and records) whatever mode is set.
        learning = app[MODELS].current is None
        mode = f"{settings.mode}, learning: no active model yet" if learning else settings.mode
        print(
            f"behaviorgate: listening on http://{settings.server.host}:{settings.server.port} "
            f"→ {settings.upstream.url} (mode={mode})",
            file=sys.stderr,
            flush=True,
        )

    return say


#: A worker that dies sooner than this after its start is failing to start: no restart.
_MIN_WORKER_UPTIME_S = 10.0
#: More restarts than this within a minute: the supervisor gives up and stops.
_MAX_RESTARTS_PER_MINUTE = 5


def _supervise(settings: Settings, args: argparse.Namespace) -> int:
    """Run N single-worker processes on one port (SO_REUSEPORT), relay signals to them, and
    replace a worker that dies while the others serve (say so; give up on a crash loop)."""
    argv = [sys.executable, "-m", "proxy.cli", *sys.argv[1:], "--worker"]

    def spawn(i: int) -> tuple[subprocess.Popen[bytes], float]:
        env = {**os.environ, "BEHAVIORGATE_WORKER_INDEX": str(i)}
        return subprocess.Popen(argv, env=env), time.monotonic()  # noqa: S603

    def say(text: str) -> None:
        print(f"behaviorgate: {text}", file=sys.stderr, flush=True)

    workers = [spawn(i) for i in range(settings.server.workers)]
    stopping: list[int] = []

    def relay(signum: int, _: Any) -> None:
        stopping.append(signum)
        for child, _started in workers:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, relay)
    signal.signal(signal.SIGINT, relay)
    url = f"http://{settings.server.host}:{settings.server.port}"
    say(f"starting {len(workers)} workers on {url}")
    restarts: list[float] = []
    failed = False
    while not stopping and not failed:
        time.sleep(0.2)
        for i, (child, started) in enumerate(workers):
            code = child.poll()
            if code is None or stopping:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60.0] + [now]
            if now - started < _MIN_WORKER_UPTIME_S or len(restarts) > _MAX_RESTARTS_PER_MINUTE:
                say(f"worker {i} (pid {child.pid}) exited with code {code}; stopping the others")
                failed = True
                break
            say(f"worker {i} (pid {child.pid}) exited with code {code}; starting a new one")
            workers[i] = spawn(i)
    if failed:
        relay(signal.SIGTERM, None)
    codes = [child.wait() for child, _started in workers]
    # A worker still importing when the signal came dies of it (code -signum): that is a clean
    # stop too. Any other code, or a kill by another signal, is not.
    clean = {0, *(-signum for signum in stopping)}
    return 0 if not failed and all(code in clean for code in codes) else 1


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args)
    print(f"behaviorgate: config OK (upstream {settings.upstream.url}, mode {settings.mode})")
    return 0


def cmd_sample_upstream(args: argparse.Namespace) -> int:
    from aiohttp import web

    from proxy.sample_upstream import DEFAULT_JWT_SECRET, JWT_SECRET_ENV, create_sample_upstream

    secret = args.jwt_secret or os.environ.get(JWT_SECRET_ENV) or DEFAULT_JWT_SECRET
    _install_uvloop()
    web.run_app(
        create_sample_upstream(jwt_secret=secret, latency_scale=args.latency_scale),
        host=args.host,
        port=args.port,
        access_log=None,
        print=lambda *_: print(
            f"sample upstream on http://{args.host}:{args.port}", file=sys.stderr, flush=True
        ),
    )
    return 0


def cmd_config_defaults(_: argparse.Namespace) -> int:
    from config.document import render_defaults

    sys.stdout.write(render_defaults())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="behaviorgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", "-c", help="YAML settings file (default: built-in defaults)")
    serve.add_argument("--upstream", help="base URL of the protected service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--mode", choices=("enforce", "shadow"))
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a settings file and exit")
    check.add_argument("--config", "-c")
    check.set_defaults(func=cmd_check_config)

    defaults = sub.add_parser(
        "config-defaults", help="print every setting with its default and meaning"
    )
    defaults.set_defaults(func=cmd_config_defaults)

    sample = sub.add_parser("sample-upstream", help="run the bundled ExpenseFlow-like sample API")
    sample.add_argument("--host", default="127.0.0.1")
    sample.add_argument("--port", type=int, default=8000)
    sample.add_argument(
        "--jwt-secret",
        help="token signing key (default: $BEHAVIORGATE_DEMO_JWT_SECRET, else the public demo key)",
    )
    sample.add_argument("--latency-scale", type=float, default=1.0)
    sample.set_defaults(func=cmd_sample_upstream)

    _add_offline_commands(sub)
    return parser


def _add_offline_commands(sub: Any) -> None:
    """The commands that train, simulate or score outside the serving process."""
    from proxy.demo import add_demo_parser
    from proxy.offline import add_offline_parsers
    from proxy.simulate import add_simulate_parser

    add_demo_parser(sub)
    add_simulate_parser(sub)
    add_offline_parsers(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
