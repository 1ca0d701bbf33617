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
    s = load_settings(
        f, environ={"BEHAVIORGATE_SERVER__PORT": "9002"}, overrides={"server": {"port": 9003}}
    )
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
    assert out == {
        "redis": {"url": "redis://h:1/0"},
        "upstream": {"read_timeout": 2.5},
        "mode": "shadow",
    }


def test_every_problem_is_one_line_with_its_key_path(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(
        "server:\n  port: 70000\n  colour: blue\nupstream:\n  url: ftp://x/y\nmode: loud\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    problems = info.value.problems
    assert len(problems) == 4
    joined = "\n".join(problems)
    for key in ("server.port", "server.colour: unknown key", "upstream.url", "mode"):
        assert key in joined


@pytest.mark.parametrize("url", ["", "localhost:6379", "http://127.0.0.1:6379"])
def test_redis_url_must_name_a_redis_scheme(tmp_path, url):
    """An empty (e.g. templated) value is refused too: it must not mean a private embedded store."""
    f = tmp_path / "redis.yaml"
    f.write_text(f'redis:\n  url: "{url}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    assert info.value.problems == [
        "redis.url: must start with redis://, rediss:// or unix:// (leave it unset for the"
        f" embedded store) (got {url!r})"
    ]


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
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "behaviorgate: config: server.port: Input should be a valid integer,"
        " unable to parse string as an integer (got 'nope')"
    ]


def test_cli_missing_file_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "check-config",
            "--config",
            str(tmp_path / "none.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "cannot read" in proc.stderr


def test_defaults_file_is_the_schema_rendering_and_loads_to_defaults():
    from pathlib import Path

    from config.document import render_defaults
    from config.settings import Settings

    path = Path(__file__).resolve().parent.parent / "config" / "defaults.yaml"
    assert path.read_text() == render_defaults(), (
        "run `behaviorgate config-defaults > config/defaults.yaml`"
    )
    assert load_settings(path, environ={}) == load_settings(environ={})
    assert load_settings(environ={}).database.sqlite_path == "data/behaviorgate.sqlite3"
    assert Settings().server == load_settings(path, environ={}).server


def test_files_follow_data_dir_unless_set():
    s = load_settings(environ={}, overrides={"data_dir": "/var/lib/bg"})
    assert s.database.sqlite_path == "/var/lib/bg/behaviorgate.sqlite3"
    assert s.writer.spool_path == "/var/lib/bg/predictions.spool"
    s = load_settings(
        environ={}, overrides={"data_dir": "/var/lib/bg", "database": {"sqlite_path": "/x.db"}}
    )
    assert s.database.sqlite_path == "/x.db"


def test_shipped_examples_are_valid():
    from pathlib import Path

    examples = Path(__file__).resolve().parent.parent / "config" / "examples"
    files = sorted(examples.glob("*.yaml"))
    assert files
    for f in files:
        s = load_settings(f, environ={})
        assert s.policy.rules, f


def test_expenseflow_example_protects_admin_and_export_strictly():
    from pathlib import Path

    from proxy.paths import PathPolicy

    s = load_settings(
        Path(__file__).resolve().parent.parent / "config/examples/expenseflow.yaml", environ={}
    )
    policy = PathPolicy(s.policy)
    for spelling in (
        "/api/admin/users",
        "/api//admin/./users",
        "/API/admin/users/../users",
        "/api/%61dmin/users",
    ):
        m = policy.match("GET", spelling)
        if spelling.startswith("/API"):
            assert m.rule_name != "admin"  # case-sensitive by default, as the upstream is
        else:
            assert m.rule_name == "admin" and m.strict, spelling
    assert policy.match("GET", "/api/financial/export/q3.csv").strict
    assert policy.match("GET", "/health").exempt
    assert policy.match("POST", "/api/transactions/12").rule_name == "transactions-write"
    assert policy.match("GET", "/api/transactions/12").rule_name == "default"
