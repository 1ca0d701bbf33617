"""Render the default settings as commented YAML, straight from the schema.

config/defaults.yaml is this rendering; a test keeps the two equal, so the documented defaults
cannot drift from the ones the code uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from config.settings import Settings

HEADER = """\
# BehaviorGate — every setting with its default value and meaning.
# Generated from the settings schema (`behaviorgate config-defaults`); copy what you change into
# your own file and pass it with `--config`. Environment overrides: BEHAVIORGATE_<SECTION>__<KEY>
# (e.g. BEHAVIORGATE_SERVER__PORT=9000), plus REDIS_URL and DATABASE_URL.
"""


def _scalar(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "null" if not value.get_secret_value() else '"***"'
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _render(model: BaseModel, indent: int) -> list[str]:
    lines: list[str] = []
    pad = "  " * indent
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        doc = (info.description or "").replace("\n", " ")
        if isinstance(value, BaseModel) and not isinstance(value, SecretStr):
            if doc:
                lines.append(f"{pad}# {doc}")
            lines.append(f"{pad}{name}:")
            lines.extend(_render(value, indent + 1))
            continue
        text = f"{pad}{name}: {_scalar(value)}"
        lines.append(f"{text}  # {doc}" if doc else text)
    return lines


def render_defaults() -> str:
    return HEADER + "\n".join(_render(Settings(), 0)) + "\n"
