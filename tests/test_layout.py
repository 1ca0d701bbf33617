"""The dependency direction proxy → storage → scoring → config, checked on the source itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "scoring", "storage", "proxy")
# What each package may import of ours.
ALLOWED = {
    "config": {"config"},
    "scoring": {"scoring", "config"},
    "storage": {"storage", "scoring", "config"},
    "proxy": {"proxy", "storage", "scoring", "config"},
}
FORBIDDEN_THIRD_PARTY = {
    "config": {"aiohttp", "redis", "asyncpg", "aiosqlite", "torch", "sklearn", "numpy"},
    "scoring": {"aiohttp", "redis", "asyncpg", "aiosqlite", "fakeredis"},
    "storage": {"aiohttp"},
}


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_dependency_direction(package):
    problems = []
    for path in modules(package):
        for name in imported(path):
            top = name.split(".")[0]
            if top in ALLOWED and top not in ALLOWED[package]:
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
            if top in FORBIDDEN_THIRD_PARTY.get(package, ()):
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
            if top in ("tests", "bench"):
                problems.append(f"{path.relative_to(ROOT)} imports a test/bench helper {name}")
            if name.startswith("aiohttp.web") and package != "proxy":
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
    assert problems == []


def test_every_module_imports_in_either_order():
    """Import all modules forwards and backwards, each in a fresh interpreter: an import cycle
    or an import-order accident fails in at least one of the two orders."""
    names = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for pkg in PACKAGES
        for p in modules(pkg)
    ]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    for order in (names, names[::-1]):
        proc = subprocess.run(
            [sys.executable, "-c", code, *order],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr.strip().splitlines()[-3:]


def test_serving_process_never_imports_training_libraries():
    """torch (~185 MiB) and scikit-learn/scipy (~90 MiB) belong to the trainer process only."""
    code = (
        "import sys, proxy.app, proxy.cli\n"
        "print(','.join(m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"the gateway imported {proc.stdout.strip()}"
