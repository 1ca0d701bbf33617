"""Build `Settings` from the default YAML, an optional user YAML, the environment and CLI overrides.

Precedence, lowest first: built-in defaults < YAML file < environment < command line. Every
problem is reported as one line naming the key path, so a bad config never shows a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.settings import Settings

ENV_PREFIX = "BEHAVIORGATE_"
TOP_LEVEL_SCALARS = frozenset({"mode", "data_dir"})
# Well-known variables that operators expect to work without our prefix.
ENV_ALIASES = {
    "REDIS_URL": ("redis", "url"),
    "DATABASE_URL": ("database", "url"),
}


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds one human line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}:{where}: {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    return data


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`BEHAVIORGATE_SERVER__PORT=9000` → {"server": {"port": 9000}} (values read as YAML)."""
    out: dict[str, Any] = {}
    for name, path in ENV_ALIASES.items():
        if environ.get(name):
            _set_path(out, path, environ[name])
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        # Section keys need "__"; other BEHAVIORGATE_* names (CONFIG, JWT_SECRET…)
        # are not settings.
        if "__" not in rest and rest.lower() not in TOP_LEVEL_SCALARS:
            continue
        path = tuple(p.lower() for p in rest.split("__") if p)
        if path:
            _set_path(out, path, _scalar(raw))
    return out


def _scalar(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return value if isinstance(value, (str, int, float, bool, list)) or value is None else raw


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = target
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def plain_message(err: Any) -> str:
    """A validation error's message without pydantic's "Value error, " style prefix."""
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def format_validation_error(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = plain_message(err)
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        got = err.get("input")
        shown = (
            ""
            if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict)
            else f" (got {got!r:.60})"
        )
        lines.append(f"{loc}: {msg}{shown}")
    return lines


def _place_files(data: dict[str, Any]) -> dict[str, Any]:
    """Files the gateway creates go under `data_dir` unless their own path is configured."""
    base = Path(str(data.get("data_dir", "data")))
    placed = {
        "database": {"sqlite_path": str(base / "behaviorgate.sqlite3")},
        "writer": {"spool_path": str(base / "predictions.spool")},
    }
    out = dict(data)
    for section, defaults in placed.items():
        current = out.get(section)
        if current is None:
            out[section] = defaults
        elif isinstance(current, dict):
            out[section] = {**defaults, **current}
    return out


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Validate the merged configuration once and return the frozen `Settings`."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get(ENV_PREFIX + "CONFIG"):
        path = environ[ENV_PREFIX + "CONFIG"]
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(Path(path))
    data = deep_merge(data, env_overrides(environ))
    if overrides:
        data = deep_merge(data, overrides)
    data = _place_files(data)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
