"""Settings: YAML + environment + CLI precedence, frozen result, one line per problem."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from config.loader import ConfigError, env_overrides, load_settings


def test_defaults_need_no_file():
    s = load_settings(environ={})
    assert s.server.port == 8080 and s.mode == "enforce"


def test_settings_are_frozen():
    s = load_settings(environ={})
    with pytest.raises(ValidationError):
        s.server.port = 1  # type: ignore[misc]


def test_precedence_yaml_then_env_then_overrides(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("server:\n  port: 9001\n  host: 0.0.0.0\nmode: shadow\n")
    s = load_settings(f, environ={"BEHAVIORGATE_SERVER__PORT": "9002"})
    assert (s.server.port, s.server.host, s.mode) == (9002, "0.0.0.0", "shadow")
    s = load_settings(f, environ={"BEHAVIORGATE_SERVER__PORT": "9002"}, overrides={"server": {"port": 9003}})
    assert s.server.port == 9003


def test_env_aliases_and_nesting():
    out = env_overrides(
        {
            "REDIS_URL": "redis://h:1/0",
            "BEHAVIORGATE_UPSTREAM__READ_TIMEOUT": "2.5",
            "BEHAVIORGATE_MODE": "shadow",
            "BEHAVIORGATE_JWT_SECRET": "not-a-setting",
            "BEHAVIORGATE_CONFIG": "/x.yaml",
            "OTHER": "x",
        }
    )
    assert out == {"redis": {"url": "redis://h:1/0"}, "upstream": {"read_timeout": 2.5}, "mode": "shadow"}


def test_every_problem_is_one_line_with_its_key_path(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("server:\n  port: 70000\n  colour: blue\nupstream:\n  url: ftp://x/y\nmode: loud\n")
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    problems = info.value.problems
    assert len(problems) == 4
    joined = "\n".join(problems)
    for key in ("server.port", "server.colour: unknown key", "upstream.url", "mode"):
        assert key in joined


def test_yaml_syntax_error_names_line(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("server:\n  port: [1,\n")
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    assert len(info.value.problems) == 1 and "line" in info.value.problems[0]


def test_top_level_must_be_mapping(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError):
        load_settings(f, environ={})


def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("server:\n  port: nope\n")
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check-config", "--config", str(f)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "behaviorgate: config: server.port: Input should be a valid integer, unable to parse string as an integer (got 'nope')"
    ]


def test_cli_missing_file_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check-config", "--config", str(tmp_path / "none.yaml")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "cannot read" in proc.stderr
